"""The one logger: ``fastclr: ...`` lines on stderr, written by rank 0 only.

stdout is reserved for each command's result line (one JSON object). The rank comes from
torchrun's ``RANK`` variable, so this module imports nothing and every layer may use it.
"""

from __future__ import annotations

import os
import sys


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def info(msg: str) -> None:
    """One progress line on stderr (rank 0 only)."""
    if is_main_process():
        print(f"fastclr: {msg}", file=sys.stderr, flush=True)


def warn(msg: str, every_rank: bool = False) -> None:
    """One warning line on stderr: something the user may want to change. Rank 0 only, unless it is about
    this process's own share of the work (``every_rank``: what the other ranks met, they say themselves)."""
    if every_rank or is_main_process():
        print(f"fastclr: warning: {msg}", file=sys.stderr, flush=True)
