"""Checkpoints: plain dicts of tensors and primitives, written atomically, loaded without pickle code.

A checkpoint holds ``format`` ("fastclr"), ``version``, ``config`` (a dict), ``model`` (state dict),
``optimizer`` (state dict), ``step``, ``epoch``, ``step_in_epoch``, ``rng`` (every random
generator's state, see :func:`rng_state`) and ``digest``: a SHA-256 of everything else, so a file
damaged after it was written (a flipped byte inside a tensor loads fine otherwise) is detected.

A pretraining run's checkpoint is assembled by :func:`assemble` and written by :func:`write`; on
resume, :func:`resume_state` finds it and checks that it fits the run's config, and
:func:`restore_training` puts the weights, optimiser and generators back.

Loading uses ``torch.load(path, weights_only=True)``, which refuses any pickled object other than
tensors and primitives, so a crafted file cannot run code. A refused file is told apart from a
damaged one by reading its pickle opcodes (never executing them): a well-formed pickle that
imports anything outside torch is "unsafe"; anything else that fails is "corrupt".

A run folder keeps the newest ``keep`` checkpoints as ``checkpoints/step-00000120.pt`` and
``checkpoints/last.pt``, a hard link to (or copy of) the newest. Every file appears by an atomic
rename after an fsync, and old files are deleted only after the new one is in place, so a
SIGKILL at any moment leaves at least one complete checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import random
import re
import shutil
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fastclr import config, log
from fastclr.errors import UserError

FORMAT = "fastclr"
VERSION = 2  # 2: adds ``digest`` and ``rng``
LAST = "last.pt"
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


class CorruptCheckpoint(UserError):
    """The file is truncated, damaged or not a checkpoint at all."""


class UnsafeCheckpoint(UserError):
    """The file is a pickle that would import or call code: refused, never executed."""


def digest(state: dict) -> str:
    """SHA-256 over a checkpoint's contents (every key but ``digest``), tensors by dtype, shape and bytes."""
    h = hashlib.sha256()

    def feed(value: object) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(value.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            keys = sorted((k for k in value if k != "digest"), key=str)
            h.update(b"D%d" % len(keys))
            for k in keys:
                h.update(repr(k).encode())
                feed(value[k])
        elif isinstance(value, (list, tuple)):
            h.update(b"L%d" % len(value))
            for v in value:
                feed(v)
        else:
            h.update(repr(value).encode())

    feed(state)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:  # make a rename itself durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save(state: dict, path: Path) -> None:
    """Write ``state`` (with its ``digest`` added) to ``path`` atomically: temporary file in the same
    folder, flush, fsync, rename, fsync of the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, "digest": digest(state)}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _pickle_imports(path: Path) -> list[str] | None:
    """Names a pickle file would import (``module.name``), read from its opcodes without running them.

    Returns None when the file is not a well-formed pickle (nor a torch zip holding one).
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                if not names:
                    return None
                data = z.read(names[0])
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return None
    imports: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in (
                "SHORT_BINUNICODE",
                "BINUNICODE",
                "UNICODE",
                "BINUNICODE8",
                "SHORT_BINSTRING",
                "BINSTRING",
                "STRING",
            ):
                strings.append(str(arg))
            elif op.name in ("GLOBAL", "INST"):
                imports.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                imports.append(".".join(strings[-2:]) if len(strings) >= 2 else "?")
    except (ValueError, EOFError, struct.error):  # a malformed byte: not a pickle
        return None
    return imports


def _is_torch_name(name: str) -> bool:
    return name.startswith(("torch.", "collections.OrderedDict"))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a fastclr checkpoint safely (``weights_only=True``).

    Raises:
        UnsafeCheckpoint: the file would import code when unpickled (it never runs).
        CorruptCheckpoint: missing, truncated, damaged (digest mismatch) or not a fastclr checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CorruptCheckpoint(f"checkpoint {path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols; the error below is enough
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        imports = _pickle_imports(path)
        code = [n for n in imports or [] if not _is_torch_name(n)]
        if imports is not None and (code or not imports):
            what = (
                f"it would import {code[0]} when unpickled"
                if code
                else "it holds pickled objects that are not tensors or plain values"
            )
            raise UnsafeCheckpoint(
                f"checkpoint {path}: refused, {what}; fastclr loads only tensors and plain values (nothing in it was "
                "run)"
            ) from None
        raise CorruptCheckpoint(f"checkpoint {path}: corrupt (not a readable checkpoint file)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or ["empty file"])[0]
        raise CorruptCheckpoint(f"checkpoint {path}: truncated or corrupt ({first[:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CorruptCheckpoint(f"checkpoint {path}: not a fastclr checkpoint (no 'format: fastclr' entry)")
    if "digest" in state and state["digest"] != digest(state):
        raise CorruptCheckpoint(f"checkpoint {path}: corrupt (its contents do not match the digest written with it)")
    return state


# --- the rotating set of a run folder -------------------------------------------------------


def step_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:08d}.pt"


def step_files(folder: Path) -> list[Path]:
    """``step-*.pt`` files of ``folder``, newest (highest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := _STEP_FILE.match(name))]
    return [p for _, p in sorted(found, reverse=True)]


def existing(folder: Path) -> list[Path]:
    """Every checkpoint file of a run folder: ``last.pt`` first, then the step files, newest first."""
    last = Path(folder) / LAST
    return ([last] if last.is_file() else []) + step_files(folder)


def remove_temporaries(folder: Path) -> None:
    """Delete temporary files left by a save that was killed before its rename."""
    folder = Path(folder)
    if folder.is_dir():
        for name in os.listdir(folder):
            if name.startswith(".") and ".tmp" in name:
                (folder / name).unlink(missing_ok=True)


def _link_last(source: Path, last: Path) -> None:
    """Point ``last`` at ``source`` atomically: a hard link under a temporary name, then a rename."""
    tmp = last.with_name(f".{last.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links: a copy, fsynced
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, last)
    _fsync_dir(last.parent)


def save_rotating(state: dict, folder: Path, step: int, keep: int) -> Path:
    """Save ``state`` as ``step-N.pt``, make ``last.pt`` the same file, then delete all but the newest ``keep``."""
    folder = Path(folder)
    path = step_path(folder, step)
    save(state, path)
    _link_last(path, folder / LAST)
    for old in step_files(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_latest(
    folder: Path,
    map_location: str | torch.device = "cpu",
    warn: Callable[[str], None] | None = None,
    set_aside: bool = True,
) -> tuple[dict, Path] | None:
    """The newest loadable checkpoint of a run folder, or None when it has none.

    ``last.pt`` is tried first, then the step files, newest first. A corrupt file is skipped with a
    warning naming it and the file used instead, and (``set_aside``) renamed to ``NAME.corrupt`` so
    the next save cannot be shadowed by it. An unsafe file stops everything (UnsafeCheckpoint).
    Raises CorruptCheckpoint when files exist but none loads.
    """
    folder = Path(folder)
    candidates = existing(folder)
    bad: list[tuple[Path, str]] = []
    for path in candidates:
        twin = next((why for p, why in bad if _same_file(path, p)), None)
        if twin is not None:  # a hard link of a file already found damaged
            bad.append((path, f"checkpoint {path}: the same damaged file"))
            continue
        try:
            state = load(path, map_location)
        except CorruptCheckpoint as e:
            bad.append((path, str(e)))
            continue
        if warn and bad:
            warn(
                f"{bad[0][1]}; using {path} (step {state.get('step')}) instead"
                + (f" (also damaged: {', '.join(str(p) for p, _ in bad[1:])})" if len(bad) > 1 else "")
            )
        if set_aside:
            for p, _ in bad:
                _set_aside(p)
        return state, path
    if len(bad) == 1:
        raise CorruptCheckpoint(f"{bad[0][1]}; no other checkpoint in {folder}: start over with --no-resume")
    if bad:
        names = ", ".join(str(p) for p, _ in bad)
        raise CorruptCheckpoint(
            f"{folder}: no loadable checkpoint, every file is truncated or corrupt ({names}); start over with "
            "--no-resume"
        )
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _set_aside(path: Path) -> None:
    try:
        os.replace(path, path.with_name(path.name + ".corrupt"))
    except OSError:
        pass


# --- random generator states ------------------------------------------------------------------


def rng_state() -> dict:
    """Every generator a run may draw from: torch (CPU and CUDA), numpy and Python's ``random``,
    as tensors and primitives only (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured, from tensors on any device (they are read on the CPU)."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))


# --- a pretraining run's checkpoint: assembly and resume ------------------------------------------

# Config fields a checkpoint's weights must match, and fields whose change does not alter the run
# (each field's ``resume`` in config.py).
SHAPE_KEYS = config.resume_keys("shape")
FREE_KEYS = set(config.resume_keys("free"))


def assemble(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: config.Config,
    step: int,
    steps_per_epoch: int,
    monitor: dict | None = None,
) -> dict:
    """The checkpoint dict of a pretraining run after ``step`` steps (the format of this module's docstring)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "epoch": step // steps_per_epoch,
        "step_in_epoch": step % steps_per_epoch,
        "rng": rng_state(),
        "monitor": monitor or {},  # the callbacks' state: the online probe's classifier and optimiser
    }


def write(folder: Path, state: dict, keep: int, main: bool = True) -> Path:
    """Write ``state`` into the rotating set of ``folder`` (rank 0 only: ``main``); returns ``folder/last.pt``."""
    if main:  # every rank holds the same weights; rank 0 writes them
        save_rotating(state, folder, int(state["step"]), keep)
    return Path(folder) / LAST


def clear(folder: Path, main: bool = True) -> None:
    """Delete a run's checkpoints (``--no-resume``), saying so."""
    old = existing(folder)
    if old:
        log.info(f"--no-resume: starting over at step 0; deleting {len(old)} checkpoint file(s) in {folder}")
        if main:
            for path in old:
                path.unlink(missing_ok=True)


def resume_state(
    folder: Path, cfg: config.Config, main: bool = True, found: tuple[dict, Path] | None = None
) -> dict | None:
    """The newest checkpoint of ``folder`` to continue from (None: start at step 0), every tensor on the CPU;
    ``found``: that checkpoint and its path when the caller has loaded it already (:func:`load_latest`).

    The generators' states must be read there; the weights and the optimiser state reach the run's
    device when :func:`restore_training` loads them into the model and optimiser that live there.
    UserError when it was written with other weight shapes (``SHAPE_KEYS``); a warning when other
    settings that change the run differ (everything but ``FREE_KEYS``).
    """
    found = found or load_latest(folder, map_location="cpu", warn=log.warn, set_aside=main)
    if found is None:
        return None
    state, path = found
    saved = state.get("config", {})
    for key in SHAPE_KEYS:
        if key in saved and saved[key] != getattr(cfg, key):
            raise UserError(
                f"{key}={getattr(cfg, key)!r} differs from {saved[key]!r} in checkpoint {path}: resume with the same "
                "value, or start over with --no-resume (or another --out)"
            )
    changed = [
        f"{k} {saved[k]!r} -> {getattr(cfg, k)!r}"
        for k in config.FIELDS
        if k in saved and k not in FREE_KEYS and saved[k] != getattr(cfg, k)
    ]
    if changed:
        log.warn(
            f"resuming with changed settings ({', '.join(changed)}): the result will differ from an uninterrupted run"
        )
    log.info(f"resuming from {path} at step {state['step']}")
    return state


def restore_training(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> int:
    """Put a checkpoint's weights, optimiser state and generators back; returns its step."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(
            f"checkpoint {Path(folder) / LAST} does not fit this model ({str(e).splitlines()[0][:120]}); "
            "start over with --no-resume"
        ) from None
    if "rng" in state:
        set_rng_state(state["rng"])
    return int(state["step"])
