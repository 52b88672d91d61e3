"""Graceful stops: SIGTERM / SIGINT (and a caller's request) end the run after the step in flight.

The loop asks :meth:`StopSignal.agreed` after every step; when it says stop, the loop writes a
checkpoint and returns, so ``fastclr pretrain --out OUT`` resumes exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import torch

from fastclr.train import dist


class StopSignal:
    """SIGTERM and SIGINT set a flag; the loop finishes its step, checkpoints and returns.

    A second signal of the same kind acts at once (the handler before ours is put back).
    :meth:`request` stops the run the same way from code (a callback pruning a trial).
    """

    def __init__(self) -> None:
        self.signum: int = 0
        self.requested = False
        self.reason = "a callback"  # who asked through :meth:`request`, for the log line
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # type: ignore[arg-type]

    def request(self, reason: str = "a callback") -> None:
        """Stop at the next agreed step, as a signal would (no exit code); ``reason`` names who asked."""
        self.requested, self.reason = True, reason

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignal]:
        if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread only
            yield self
            return
        for s in (signal.SIGTERM, signal.SIGINT):
            self._previous[s] = signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]

    def agreed(self, world: int, device: torch.device, sync_point: bool) -> bool:
        """Stop now? One process: whenever a signal (or request) came. k processes: all stop at the
        same step, agreed at ``sync_point`` steps (one all-reduce), so no rank waits on a collective alone."""
        local = bool(self.signum) or self.requested
        if world == 1:
            return local
        if not sync_point:
            return False
        flag = torch.tensor(1.0 if local else 0.0, device=device)
        if dist.mean(flag).item() > 0:
            if not self.requested:
                self.signum = self.signum or int(signal.SIGTERM)
            return True
        return False
