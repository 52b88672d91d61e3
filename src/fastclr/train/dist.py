"""Data-parallel training under torchrun: process group, gathers with gradients, global BN.

Every helper works when torch.distributed is not started (one process: rank 0 of 1), so the
training code calls them unconditionally. Processes are configured only through torchrun's
environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): NCCL on CUDA,
gloo on CPU. docs/distributed.md lists what must hold; tests/train/test_dist.py checks it.
"""

from __future__ import annotations

import inspect
import os

import torch
import torch.distributed as tdist
from torch import nn

from fastclr.errors import UserError


def _started() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    """This process's rank; after the group is destroyed, torchrun's RANK (0 without torchrun)."""
    return tdist.get_rank() if _started() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of processes in the group (1 when torch.distributed is not started)."""
    return tdist.get_world_size() if _started() else 1


def is_main() -> bool:
    """Rank 0: the only process that writes logs, checkpoints and results."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (no-op for one process); returns this rank's device.

    On CUDA each process takes GPU LOCAL_RANK and NCCL; on CPU, gloo. Rendezvous (single or
    multi-node) is torchrun's: MASTER_ADDR and MASTER_PORT name rank 0's store.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _started():
        return device
    r, k = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        tdist.init_process_group("nccl", store=_store(r, k), rank=r, world_size=k, device_id=device)
    else:
        tdist.init_process_group("gloo", store=_store(r, k), rank=r, world_size=k)
    return device


def _store(r: int, k: int) -> tdist.Store:
    """torchrun's key-value store, with keys private to this restart of the worker group.

    After ``--max-restarts`` restarts the group, the agent's store still holds the previous
    workers' addresses under the same keys (env:// adds no prefix), and a new worker may dial a
    dead one. The restart count in the prefix keeps every generation apart.
    """
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's agent serves the store
    store = tdist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), k, is_master=r == 0 and not agent, multi_tenant=True
    )
    return tdist.PrefixStore(f"fastclr/restart{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def cleanup() -> None:
    """Leave the process group (no-op when none was started)."""
    if _started():
        tdist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        tdist.barrier()


def check_same(values: dict, what: str = "config", hint: str = "give every node the same flags and files") -> None:
    """Raise UserError on every rank unless all ranks hold the same ``values`` (a plain dict)."""
    if world_size() == 1:
        return
    every: list[dict | None] = [None] * world_size()
    tdist.all_gather_object(every, values)
    first = every[0] or {}
    for r, other in enumerate(every):
        diff = sorted(k for k in set(values) | set(other or {}) if (other or {}).get(k) != first.get(k))
        if diff:
            raise UserError(f"rank {r} has a different {what} than rank 0 ({', '.join(diff)}); {hint}")


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over ranks (no gradient); the value itself on one process."""
    if world_size() == 1:
        return value
    value = value.detach().clone()
    tdist.all_reduce(value)
    return value / world_size()


def largest(value: float, device: torch.device) -> float:
    """The largest of a number over ranks (every rank gets it); the number itself on one process."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return float(t.item())


def gather_all(x: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``x`` (same shape on every rank), in rank order, on every rank; no gradient."""
    out = [torch.empty_like(x) for _ in range(world_size())]
    tdist.all_gather(out, x)
    return out


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradient over ranks and keeps this rank's slice.

    Rank r's loss depends on every rank's rows through the gathered candidates, so the gradient
    of the summed per-rank losses with respect to rank r's rows is the sum over ranks of each
    rank's gradient for slice r. With DDP's gradient averaging (divide by k) this is exactly the
    single-process gradient of the mean over all anchors.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(tdist.get_world_size())]
        tdist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        tdist.all_reduce(grad)  # SUM
        lo = tdist.get_rank() * ctx.rows
        return grad[lo : lo + ctx.rows]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` [n, ...] -> [k*n, ...] (rank-major), with gradients flowing back."""
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


class _AllReduceWithGrad(torch.autograd.Function):
    """all_reduce (SUM) whose backward is the all_reduce (SUM) of the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        tdist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        tdist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the whole global batch (CPU / gloo path).

    torch's SyncBatchNorm runs on accelerators only; this is the same computation with two
    differentiable all_reduces (the sums, then the centred squares, for float32 accuracy). The
    parameters and buffers keep BatchNorm's names, so checkpoints do not depend on the process
    count. Statistics are computed in float32.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        local = torch.tensor([float(x.numel() // x.shape[1])], device=x.device)
        total = _AllReduceWithGrad.apply(torch.cat([xf.sum(dims), local]))
        n = total[-1].detach()
        mu = total[:-1] / n  # [C]
        centred = xf - mu.view(shape)
        var = _AllReduceWithGrad.apply((centred * centred).sum(dims)) / n  # biased, for normalising
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            assert self.num_batches_tracked is not None and self.running_mean is not None
            assert self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mu.detach().to(self.running_mean), m)
                self.running_var.lerp_((var.detach() * n / (n - 1)).to(self.running_var), m)  # unbiased, as BatchNorm
        return y.to(x.dtype)


def _to_global_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new.to(module.running_mean.device if module.running_mean is not None else "cpu")
    for name, child in module.named_children():
        module.add_module(name, _to_global_bn(child))
    return module


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Global BN (paper section 2.2): every BatchNorm of ``model`` normalises over all ranks.

    CUDA uses torch's SyncBatchNorm; CPU uses :class:`GlobalBatchNorm`. State dict keys stay the same.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_bn(model)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when k > 1 (gradients averaged over ranks); else ``model``.

    Buffers are not broadcast: global BN keeps them identical on every rank already.
    """
    if world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # newer torch renamed the flag (the old name warns); buffers start equal on every rank anyway
    flag = (
        "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
    )
    return ddp(model, device_ids=ids, **{flag: False})  # type: ignore[arg-type]
