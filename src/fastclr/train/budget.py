"""A schedule from a compute budget: ``--set budget_minutes=M`` picks the number of epochs.

The warm-up + cosine schedule needs its length before the first step, so a budgeted run times a few real
steps of its own model, optimiser and data first (one untimed step for the first-call costs, then
:data:`TIMED_STEPS`), puts every state back (weights, BN statistics, optimiser, generators), and sets
``epochs`` to what fits: ``floor(M * 60 / (seconds per step * steps per epoch))``, at least 1 and at
most the configured ``epochs`` (the data-chosen CPU settings: 100), never past ``MAX_EPOCHS``. The
chosen value is written to ``OUT/config.yaml`` with the budget cleared, so a resumed run continues the
same schedule and never times again. The budget covers the training steps; checkpoints, monitors and the
end-of-run evaluation come on top.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
from torch import nn

TIMED_STEPS = 3  # steps timed after the untimed first one: enough for a stable figure, a few seconds on a CPU
MAX_EPOCHS = 1000  # the paper's longest schedule (Figure 9)


def epochs_for(budget_s: float, step_s: float, steps_per_epoch: int, max_epochs: int = MAX_EPOCHS) -> int:
    """Whole epochs of ``steps_per_epoch`` steps of ``step_s`` s that fit in ``budget_s`` s (1 to ``max_epochs``)."""
    if step_s <= 0 or not math.isfinite(step_s):
        return max_epochs
    fit = math.floor(budget_s / (step_s * steps_per_epoch))
    return max(1, min(max_epochs, fit))


def seconds_per_step(
    step: Callable[[], torch.Tensor], model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> float:
    """Mean wall time of ``step()`` over :data:`TIMED_STEPS` calls after one untimed call.

    ``step`` runs real optimisation steps; afterwards the model's weights and buffers, the optimiser's
    state and the torch generators are exactly as before, so the run that follows is the one it would
    have been without the timing.
    """
    weights = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    try:
        _wait(step(), device)
        start = time.perf_counter()
        for _ in range(TIMED_STEPS):
            value = step()
        _wait(value, device)
        return (time.perf_counter() - start) / TIMED_STEPS
    finally:
        model.load_state_dict(weights)
        optimizer.load_state_dict(opt_state)
        optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _wait(value: torch.Tensor, device: torch.device) -> None:
    """Let the queued kernels finish before the clock is read (the step itself never syncs)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    else:
        value.item()
