"""LARS: layer-wise adaptive rate scaling (You et al. 2017), as SimCLR uses it (paper section 2.2, Appendix B.1).

Follows the reference code (google-research/simclr tf2/lars_optimizer.py) exactly:
    g <- g + wd * w                                   (decayed parameters only)
    trust = eta * ||w|| / ||g||  if both norms > 0 else 1   (adapted parameters only)
    v <- m * v + lr * trust * g                       (the learning rate lives in the buffer)
    w <- w - v
Biases and normalisation parameters (every 1-d tensor) are excluded from both weight decay and
the adaptation: they take plain momentum SGD. All parameters update with foreach ops, with no
host synchronisation: the trust ratios stay on the device as 0-d tensors, and v <- m * v + lr * trust * g
is one foreach multiply-add (its kernels fuse it, so the last bit may differ from a multiply, then an add).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """LARS with momentum.

    Param groups may set ``lars`` (bool, adapt this group) and ``weight_decay``; use
    :func:`lars_param_groups` to exclude 1-d parameters the way the paper does.

    Args:
        params: parameters, or param groups (dicts) such as :func:`lars_param_groups` returns.
        lr: learning rate (the paper: 0.3 x B/256, or 0.075 x sqrt(B) for small batches).
        momentum: m; weight_decay: wd (1e-6 in v1); trust_coefficient: eta (0.001).
        lars: adapt the groups that do not say otherwise (False: momentum SGD).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coefficient: float = 0.001,
        lars: bool = True,
    ):
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, lars=lars
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter with a gradient; returns ``closure()`` when given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads: list[torch.Tensor] | tuple[torch.Tensor, ...] = [p.grad for p in params if p.grad is not None]
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            if group["lars"]:
                norms = torch.stack(torch._foreach_norm([*params, *grads]))  # one launch for both lists
                w_norm, g_norm = norms.split(len(params))
                trust = torch.where(
                    (w_norm > 0) & (g_norm > 0),
                    group["trust_coefficient"] * w_norm / g_norm.clamp_min(1e-30),
                    torch.ones_like(w_norm),
                )
                # v += (lr * trust) * g, the per-parameter factors as 0-d device tensors (no host sync) in
                # tensor1 of addcmul: torch's foreach addcmul takes that in one fused kernel where it has its
                # 0-d fast path, else one kernel per parameter, as the multiply it replaces did
                torch._foreach_addcmul_(bufs, list((trust * group["lr"]).unbind()), grads)
            else:
                torch._foreach_add_(bufs, grads, alpha=group["lr"])
            torch._foreach_sub_(params, bufs)
        return loss


def is_excluded(name: str, param: torch.Tensor) -> bool:
    """Biases and normalisation parameters (all 1-d tensors) get no decay and no adaptation."""
    return param.ndim <= 1


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight matrices (decayed, adapted) and 1-d parameters (neither)."""
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if is_excluded(name, p) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars": True},
        {"params": plain, "weight_decay": 0.0, "lars": False},
    ]


def scaled_lr(base_lr: float, batch_size: int, rule: str) -> float:
    """The paper's learning-rate rules: linear lr * B / 256, sqrt lr * sqrt(B), or none."""
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * batch_size**0.5
    if rule == "none":
        return base_lr
    raise ValueError(f"lr_rule must be linear, sqrt or none, got {rule!r}")


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9, trust_coefficient: float = 0.001
) -> torch.optim.Optimizer:
    """LARS (paper), SGD with momentum, or AdamW; 1-d parameters are never decayed."""
    groups = lars_param_groups(model, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient)
    for g in groups:
        g.pop("lars")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, foreach=True)
    raise ValueError(f"optimizer must be lars, sgd or adamw, got {name!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
