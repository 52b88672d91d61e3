"""What the loader-worker tiers share: the epoch sampler, the workers' signals, and a worker's death.

A worker killed by the OOM killer or a signal makes torch's DataLoader raise
``RuntimeError: DataLoader worker (pid ...) is killed by signal: Killed``; ``guarded`` turns it into
one line (a UserError, exit 2) that names the cause and the command that resumes the run from its
last checkpoint. Workers ignore SIGINT, so Ctrl-C reaches only the main process, which finishes
its step and checkpoints (``train/loop.py``) while the workers keep serving it.
"""

from __future__ import annotations

import os
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


def _quiet_sigchld() -> None:
    """After a worker's death is reported: stop torch's SIGCHLD handler from raising it again later
    (at any later point, interpreter exit included, as a traceback)."""
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def guarded(batches: Iterable[T], resume: str) -> Iterator[T]:
    """``batches``, with a loader worker's death turned into one UserError line."""
    again = f"; resume with: {resume}" if resume else ""
    try:
        yield from batches
    except RuntimeError as e:
        cause = death_cause(str(e))
        if cause is None:
            raise
        _quiet_sigchld()
        raise UserError(f"a data loader worker {cause}{again}") from None
    except (ConnectionResetError, BrokenPipeError, EOFError):  # killed while handing over a batch
        _quiet_sigchld()
        raise UserError(
            "a data loader worker exited while sending a batch (killed, most often by the out-of-memory killer: "
            f"lower --set workers=N or the batch size){again}"
        ) from None


def epoch_loader(
    batches: torch.utils.data.Dataset, sampler: EpochSampler, workers: int, pin_memory: bool, ignore_sigint: bool = True
) -> torch.utils.data.DataLoader:
    """Whole batches ``batches[(epoch, b)]`` in ``sampler``'s order, read by ``workers`` processes (0: this one) that
    last across epochs, two batches each in flight; with ``ignore_sigint`` the workers leave Ctrl-C to the main
    process (:func:`ignore_interrupt`)."""
    return torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=ignore_interrupt if workers > 0 and ignore_sigint else None,
    )


def in_order(chunks: torch.utils.data.Dataset, workers: int) -> Iterator:
    """``chunks[0], chunks[1], ...`` read by ``workers`` processes (0: this one) and yielded in that order; a
    worker's death is one UserError line (:func:`guarded`)."""
    loader = torch.utils.data.DataLoader(
        chunks,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=ignore_interrupt if workers else None,
        prefetch_factor=2 if workers else None,
    )
    yield from guarded(loader, "")


def worker_cap(workers: int) -> int:
    """Loader workers for this process: at most its share of the node's cores.

    torchrun starts LOCAL_WORLD_SIZE processes per node, and they share its cores: 8 ranks with 16
    workers each on 16 cores would run 128 decoding processes, which only adds contention.
    """
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(workers, max(1, (os.cpu_count() or 1) // per_node)))
