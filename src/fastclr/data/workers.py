"""What the loader-worker tiers share: the epoch sampler, the workers' signals, and a worker's death.

A worker killed by the OOM killer or a signal makes torch's DataLoader raise
``RuntimeError: DataLoader worker (pid ...) is killed by signal: Killed``; ``guarded`` turns it into
one line (a UserError, exit 2) that names the cause and the command that resumes the run from its
last checkpoint. Workers ignore SIGINT, so Ctrl-C reaches only the main process, which finishes
its step and checkpoints (``train/loop.py``) while the workers keep serving it.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

from fastclr.errors import UserError

T = TypeVar("T")


class EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, batch) keys for the epoch and start step set before each pass."""

    def __init__(self, steps: int):
        self.steps, self.epoch, self.start = steps, 0, 0

    def __iter__(self):
        return iter([(self.epoch, b) for b in range(self.start, self.steps)])

    def __len__(self) -> int:
        return self.steps - self.start


def ignore_interrupt(_worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: Ctrl-C is the main process's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def death_cause(message: str) -> str | None:
    """What killed a loader worker, from torch's error message; None if it is not a worker's death."""
    if "DataLoader worker" not in message:
        return None
    found = re.search(r"killed by signal: ([A-Za-z ]+)", message)
    if found:
        name = found.group(1).strip()
        if name.lower().startswith("kill"):
            return "killed by SIGKILL, most likely the out-of-memory killer (lower --set workers=N or the batch size)"
        return f"killed by signal {name}"
    code = re.search(r"exit code (-?\d+)", message)
    if code:
        return f"exited unexpectedly (exit code {code.group(1)})"
    return (
        "exited unexpectedly (killed, most often by the out-of-memory killer: lower --set workers=N or the batch size)"
    )


def guarded(batches: Iterable[T], resume: str) -> Iterator[T]:
    """``batches``, with a loader worker's death turned into one UserError line."""
    try:
        yield from batches
    except RuntimeError as e:
        cause = death_cause(str(e))
        if cause is None:
            raise
        again = f"; resume with: {resume}" if resume else ""
        raise UserError(f"a data loader worker {cause}{again}") from None
