"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded without pickle code.

A checkpoint holds ``format`` ("fastclr"), ``version``, ``config`` (a dict), ``model`` (state dict),
``optimizer`` (state dict), ``step``, ``epoch`` and ``step_in_epoch``. It loads with
``torch.load(path, weights_only=True)``, which refuses any pickled object other than tensors and
primitives, so a crafted file cannot run code.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from .errors import UserError

FORMAT = "fastclr"
VERSION = 1


def save(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically: temporary file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a fastclr checkpoint safely; raise UserError with one line if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise UserError(f"checkpoint {path}: refused, it holds pickled objects that are not plain tensors ({first[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path}: unreadable or truncated ({str(e).strip().splitlines()[0][:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"checkpoint {path}: not a fastclr checkpoint (no 'format: fastclr' entry)")
    return state
