"""Counter-based random numbers keyed on (seed, epoch, sample index, view, draw).

Every random decision of the augmentation is a pure function of these keys, so a sample's
views do not depend on batch composition, worker count or process count (docs/distributed.md,
"One random stream per sample"). The hash works on int64 tensors on
any device with no host synchronisation and no generator state to save or restore.
"""

from __future__ import annotations

from typing import overload

import torch

_MASK = 0xFFFFFFFF
# Multipliers below 2**31 keep every product of a 32-bit value under 2**63 (no int64 overflow).
_M1 = 0x7FEB352D
_M2 = 0x2C1B3C6D
_GOLDEN = 0x1E3779B9


@overload
def _mix(x: int) -> int: ...
@overload
def _mix(x: torch.Tensor) -> torch.Tensor: ...
def _mix(x):
    """Avalanche 32-bit values held in int64 tensors or Python ints (a lowbias32-style integer hash)."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = (x * _M1) & _MASK
    x = x ^ (x >> 15)
    x = (x * _M2) & _MASK
    x = x ^ (x >> 16)
    return x


def keyed_uniform(seed: int, epoch: int, index: torch.Tensor, view: int, draws: int) -> torch.Tensor:
    """Uniform numbers in [0, 1) for each sample: a [N, draws] float32 tensor.

    Args:
        seed, epoch, view: integers that select the stream.
        index: int64 [N], the samples' global indices in the data set.
        draws: how many numbers per sample.
    """
    index = index.to(torch.int64)
    stream = _mix((seed * 2654435761 + epoch * 97 + view * 7919 + _GOLDEN) & _MASK)  # on the host: no kernels
    base = _mix(_mix(index & _MASK) ^ _mix((index >> 32) + 0x9E37) ^ stream)
    bits = _mix(base[:, None] ^ _draw_offsets(draws, index.device)[None, :])  # [N, draws]
    return (bits >> 8).to(torch.float32) * (1.0 / (1 << 24))


_OFFSETS: dict[tuple[int, torch.device], torch.Tensor] = {}


def _draw_offsets(draws: int, device: torch.device) -> torch.Tensor:
    """int64 [draws]: the per-draw counter hash mix(c) + c, c = k * golden; made once per device (a constant)."""
    key = (draws, torch.device(device))
    if key not in _OFFSETS:
        counters = torch.arange(draws, device=device, dtype=torch.int64) * _GOLDEN
        _OFFSETS[key] = _mix(counters) + counters
    return _OFFSETS[key]


def keyed_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded from (seed, *keys), for host-side draws such as shuffling.

    The hash runs on Python ints (the same values as on tensors): no tensor is made for it.
    """
    value = seed & _MASK
    for k in keys:
        value = _mix(value ^ _mix(k + _GOLDEN))
    g = torch.Generator()
    g.manual_seed(value)
    return g
