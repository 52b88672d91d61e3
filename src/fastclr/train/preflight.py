"""Checks before any work starts that need more than the config: the data, the processes, the disk.

:func:`fastclr.config.validate` checks each value against its range; :func:`settings` adds the checks
between values that need a layer above the config (the data spec against the encoder); the others compare
values with the world: the crop size against the data's images, the per-process batch against
the process count, the output folder against the file system. Each raises UserError with one
line naming the field, the value and the valid range.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from fastclr.config import Config, validate
from fastclr.data.specs import check_modality
from fastclr.errors import UserError

MAX_UPSCALE = 4  # views may be up to 4x the stored images' side (digits: 8 px -> up to 32 px)
MIN_CROP_PIXELS = 2  # the smallest random crop must still be 2 x 2 source pixels


def settings(cfg: Config) -> None:
    """Every check of the config alone: each value in its range (:func:`fastclr.config.validate`), and the
    data spec against the encoder (text data for text encoders, :func:`fastclr.data.specs.check_modality`)."""
    validate(cfg)
    check_modality(cfg)


def output_folder(out: Path) -> None:
    """``out`` (and its checkpoints/ folder) exists or can be created, and a file can be written in it."""
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(
            f"out={str(out)!r} cannot be written ({e.strerror or e}): must be a folder this user can create and write"
        ) from None


def per_process_batch(cfg: Config, world_size: int) -> None:
    """The global batch splits evenly into at least 2 images per process (BN and the negatives need 2)."""
    if cfg.batch_size % world_size:
        raise UserError(
            f"batch_size={cfg.batch_size} does not divide over {world_size} processes: must be a multiple of "
            f"{world_size}"
        )
    if cfg.batch_size // world_size < 2:
        raise UserError(
            f"batch_size={cfg.batch_size} gives {cfg.batch_size // world_size} image per process over {world_size} "
            f"processes: must be >= {2 * world_size}"
        )


def against_data(cfg: Config, count: int, side: int | None, name: str) -> None:
    """Batch and crop size against the pretraining images.

    Args:
        count: number of pretraining images.
        side: the stored images' shorter side in pixels, None when unknown (streamed files).
    """
    if count < cfg.batch_size:
        raise UserError(
            f"batch_size={cfg.batch_size} is larger than the {count} training images of {name}: must be 2 to {count}"
        )
    if side is None:
        return
    if cfg.image_size > MAX_UPSCALE * side:
        raise UserError(
            f"image_size={cfg.image_size} is too large for the {side}x{side} images of {name}: must be 8 to "
            f"{MAX_UPSCALE * side}"
        )
    smallest = math.sqrt(cfg.min_scale) * side
    if smallest < MIN_CROP_PIXELS:
        need = (MIN_CROP_PIXELS / side) ** 2
        raise UserError(
            f"min_scale={cfg.min_scale} crops {smallest:.1f} px from the {side}x{side} images of {name}: must be in "
            f"[{need:.3g}, 1]"
        )


def input_size(encoder: torch.nn.Module, size: int, arch: str) -> None:
    """The encoder accepts ``size`` x ``size`` images: a forward of two blank images (eval mode, no grad)
    before any training. Where it does not, the smallest side that it accepts (looked for by doubling,
    up to :data:`LARGEST_TRIED`) goes in the one-line error."""
    if _accepts(encoder, size):
        return
    bigger = size
    while bigger < LARGEST_TRIED:
        bigger *= 2
        if _accepts(encoder, bigger):
            hint = f"set image_size={bigger} or larger, or choose a backbone for small images (resnet_mini)"
            raise UserError(f"--arch {arch} cannot take {size}x{size} images (image_size={size}): {hint}")
    raise UserError(f"--arch {arch} cannot take {size}x{size} images (image_size={size}), nor any side up to "
                    f"{LARGEST_TRIED}: check arch_kwargs")  # fmt: skip


LARGEST_TRIED = 1024


def _accepts(encoder: torch.nn.Module, size: int) -> bool:
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            encoder(torch.zeros(2, 3, size, size))
        return True
    except (RuntimeError, AssertionError, ValueError):  # an output below 1 pixel, a fixed-size ViT, ...
        return False
    finally:
        encoder.train(was_training)


def checkpoint_bytes(model: torch.nn.Module, optimizer: str) -> int:
    """Estimated size of one checkpoint: weights and buffers, plus the optimizer's per-weight slots."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    slots = 2 if optimizer == "adamw" else 1  # AdamW: two moments; LARS and SGD: momentum
    return params * (1 + slots) + buffers + (1 << 20)  # + 1 MiB for config, RNG states, pickle


def free_disk(out: Path, need: int) -> None:
    """Room for one more checkpoint in ``out`` (the temporary file exists next to the previous ones)."""
    free = shutil.disk_usage(out).free
    if free < need:
        raise UserError(
            f"out={str(out)!r} has {_size(free)} free: a checkpoint needs {_size(need)}; free some space or choose "
            "another folder"
        )


def _size(count: int) -> str:
    n = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def world_size_from_env() -> int:
    """torchrun's WORLD_SIZE before the process group starts (1 without torchrun)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        raise UserError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} is not an integer: must be the process count torchrun sets"
        ) from None
