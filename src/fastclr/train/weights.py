"""Initialise an encoder from a weight file: a torchvision/timm state dict or a safetensors file.

Loading never executes code from the file: ``.pt``/``.pth`` files go through
``torch.load(weights_only=True)`` (tensors and primitives only) and ``.safetensors`` files hold
no code by design. Keys are checked exactly, as barlowtwins' evaluation does instead of
trusting ``strict=False``: every encoder tensor must be in the file, and the only keys the file
may hold beyond them are the classifier's (``fc.*``, ``classifier.*``, ``heads.*``, which the
encoder has replaced by Identity) and, in a fastclr checkpoint, the projection head ``head.*``.
A missing ``num_batches_tracked`` counter (files saved before BN had one) is tolerated.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from fastclr.errors import UserError

CLASSIFIER_PREFIXES = ("fc.", "classifier.", "heads.", "head.")
WRAPPER_PREFIXES = ("module.", "encoder.", "backbone.", "model.")


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pt``/``.pth`` file (a state dict, or one nested under
    ``state_dict`` / ``model``); UserError with one line for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--init {path}: no such file")
    if path.suffix == ".safetensors":
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(
                "--init: reading .safetensors needs the safetensors package: pip install 'fastclr[safetensors]'"
            ) from None
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"--init {path}: not a valid safetensors file ({str(e).splitlines()[0][:160]})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols; the refusal below says enough
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"--init {path}: refused, it holds pickled objects other than tensors (code would run if it were "
            "unpickled; nothing in it was run)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"--init {path}: unreadable ({(str(e).strip().splitlines() or [''])[0][:160]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(
            f"--init {path}: not a state dict of tensors (expected a torchvision/timm .pth or a .safetensors file)"
        )
    return state


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP/model wrapper prefixes; from a fastclr checkpoint keep ``encoder.*`` only."""
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def init_encoder(encoder: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy the file's weights into ``encoder``, checking keys and shapes exactly.

    Returns:
        {"ignored": the classifier keys the file held beyond the encoder}.
    Raises:
        UserError naming the missing / unexpected keys or the first shape mismatch.
    """
    state = strip_wrappers(read_state_file(path))
    own = encoder.state_dict()
    ignored = sorted(k for k in state if k not in own and k.startswith(CLASSIFIER_PREFIXES))
    unexpected = sorted(k for k in state if k not in own and k not in ignored)
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    if missing or unexpected:
        raise UserError(
            f"--init {path}: keys do not match the encoder: {len(missing)} missing {missing[:4]}, "
            f"{len(unexpected)} unexpected {unexpected[:4]}; is it the same --arch?"
        )
    for k, v in own.items():
        if k in state and state[k].shape != v.shape:
            hint = ""
            if k == "conv1.weight":
                hint = (
                    " (the first conv differs: a 7x7 ImageNet stem vs the 3x3 CIFAR stem; "
                    "set cifar_stem to match the file)"
                )
            raise UserError(
                f"--init {path}: {k} has shape {tuple(state[k].shape)} in the file but {tuple(v.shape)} in the "
                f"encoder{hint}"
            )
    with torch.no_grad():
        for k, v in own.items():
            if k in state:
                v.copy_(state[k].to(v.dtype))
    return {"ignored": ignored}
