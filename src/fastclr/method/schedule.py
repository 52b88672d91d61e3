"""Learning-rate schedule: linear warm-up, then cosine decay to zero, per step (paper Appendix B.1)."""

from __future__ import annotations

import math


def lr_at(step: int, peak: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at ``step`` (0-based).

    Warm-up rises linearly from 0 at step 0 to ``peak`` at ``warmup_steps`` (reference code:
    step / warmup * lr); cosine decay then falls to exactly 0 at ``total_steps``, without restarts.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak * step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
