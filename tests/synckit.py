"""Host synchronisations, seen by a dispatch mode on any machine (the CPU included).

A host synchronisation stalls the CPU until the accelerator has drained its queue. An operator is one
when it reads a tensor's data into Python (``aten::_local_scalar_dense``: item, int, float, bool),
sizes its output by the data (``nonzero``, boolean-mask indexing, ``masked_select``) or builds a
tensor from Python data (``torch.tensor(list)``: a blocking host-to-device copy). A
``TorchDispatchMode`` sees every operator a block runs, forward and backward.
"""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "lift_fresh", "lift_fresh_copy", "item"}
INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}


class HostSyncError(AssertionError):
    """An operator that would synchronise with the host ran inside a block that must not."""


def syncs(func, args) -> bool:  # noqa: ANN001 - an aten overload and its arguments
    """Whether the operator ``func`` called with ``args`` synchronises with the host."""
    name = func.overloadpacket.__name__
    if name in SYNCING:
        return True
    index = args[1] if len(args) > 1 and name in INDEXING else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index or ())


class HostSyncs(TorchDispatchMode):
    """Counts operators (``ops``) and host synchronisations by operator name (``syncs``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.syncs: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if syncs(func, args):
            self.met(func)
        self.ops += 1
        return func(*args, **(kwargs or {}))

    def met(self, func) -> None:  # noqa: ANN001
        self.syncs[func.overloadpacket.__name__] += 1


class NoHostSync(HostSyncs):
    """Fails on the first host synchronisation."""

    def met(self, func) -> None:  # noqa: ANN001
        raise HostSyncError(f"{func} synchronises with the host")
