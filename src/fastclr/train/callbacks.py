"""What the pretraining loop offers the code around it: a small, typed callback interface.

The loop knows nothing of evaluation: monitors (the kNN monitor and online probe of
:mod:`fastclr.eval.monitor`), experiment trackers and a hyper-parameter search's pruner plug in
here. The loop calls, in this order, for every step:

1. ``on_batch(index)`` before the step; a returned function receives the step's detached
   representations h [V*b, d] (the online probe trains on them);
2. ``on_log(record)`` for every record written to ``metrics.jsonl`` (the loop's and the callbacks');
3. ``on_step_end(state)``, then ``on_epoch_end(state)`` when the step ends an epoch;
4. ``should_stop()``: True from any callback ends the run after this step, with a checkpoint,
   exactly as SIGTERM does (``interrupted: True`` in the result, ``stopped_by: "callback"``).

``state_dict()`` of every callback is merged into the checkpoint's ``monitor`` entry and handed
back with ``load_state_dict`` on resume, so a resumed run continues the callbacks' state too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

OnRepresentations = Callable[[torch.Tensor], None]


@dataclass
class LoopState:
    """What a callback sees after a step.

    Attributes:
        model: the bare network (not the DDP / compiled wrapper); switch modes and back if you use it.
        step: optimisation steps done (1 after the first step).
        epoch: epochs done, ``step / steps_per_epoch`` (a whole number at an epoch's end).
        steps_per_epoch: steps of one pass over the pretraining images.
        log: writes a metrics record (it must hold ``step``) to metrics.jsonl and every ``on_log``.
    """

    model: nn.Module
    step: int
    epoch: float
    steps_per_epoch: int
    log: Callable[[dict[str, Any]], None]


class Callback:
    """Hooks into the pretraining loop; every method is optional (the defaults do nothing)."""

    def on_batch(self, index: torch.Tensor) -> OnRepresentations | None:
        """Called before a step with the batch's dataset indices int64 [b]."""
        return None

    def on_log(self, record: dict[str, Any]) -> None:
        """Every metrics record, as written to metrics.jsonl."""

    def on_step_end(self, state: LoopState) -> None:
        """After every optimisation step."""

    def on_epoch_end(self, state: LoopState) -> None:
        """After the step that ends an epoch (after ``on_step_end``)."""

    def should_stop(self) -> bool:
        """True ends the run after this step (a checkpoint is written; it can be resumed)."""
        return False

    def stop_reason(self) -> str:
        """What the log says stopped the run when :meth:`should_stop` was True."""
        return "a callback"

    def state_dict(self) -> dict[str, Any]:
        """State saved in the checkpoint's ``monitor`` entry (keys shared by all callbacks: pick unique ones)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The merged ``monitor`` entry of the checkpoint resumed from."""


def batch_hook(callbacks: Sequence[Callback], index: torch.Tensor) -> OnRepresentations | None:
    """The step's ``on_h``: every callback's function for this batch, called in turn (None if none)."""
    hooks = [h for h in (cb.on_batch(index) for cb in callbacks) if h is not None]
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def call_all(h: torch.Tensor) -> None:
        for hook in hooks:
            hook(h)

    return call_all


def merged_state(callbacks: Sequence[Callback]) -> dict[str, Any]:
    """Every callback's state in one dict (the checkpoint's ``monitor`` entry)."""
    state: dict[str, Any] = {}
    for cb in callbacks:
        state.update(cb.state_dict())
    return state
