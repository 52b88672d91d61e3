"""The sample order every loader shares: an epoch's keyed permutation and each process's slice of a batch.

Each epoch shuffles the whole data set with a generator keyed on (seed, epoch), so the order is the
same whatever the number of processes or workers; global batch b of an epoch is positions
[b*B, (b+1)*B) of that permutation, and process r of k takes its r-th slice of B/k.
"""

from __future__ import annotations

import torch

from fastclr.method.rng import keyed_generator


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's permutation of sample indices 0..n-1 (int64 [n], on the CPU)."""
    return torch.randperm(n, generator=keyed_generator(seed, epoch, 0x5EED))


def batch_index(perm: torch.Tensor, b: int, batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    """This process's slice of global batch ``b`` of an epoch's permutation: int64 [batch_size / world_size]."""
    local = batch_size // world_size
    lo = b * batch_size + rank * local
    return perm[lo : lo + local]
