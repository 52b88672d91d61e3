"""LARS against a hand computation of the reference update; the paper's exclusions and lr rules."""

import math
from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fastclr.method.lars import LARS, build_optimizer, lars_param_groups, scaled_lr


def test_update_matches_reference_formula():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 3))
    b = nn.Parameter(torch.randn(4))
    w0, b0 = w.detach().clone(), b.detach().clone()
    gw, gb = torch.randn(4, 3), torch.randn(4)
    opt = LARS(
        [{"params": [w], "weight_decay": 0.1, "lars": True}, {"params": [b], "weight_decay": 0.0, "lars": False}],
        lr=0.5,
        momentum=0.9,
        trust_coefficient=0.001,
    )
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    g = gw + 0.1 * w0
    trust = 0.001 * w0.norm() / g.norm()
    assert torch.allclose(w.detach(), w0 - 0.5 * trust * g, atol=1e-7)
    assert torch.allclose(b.detach(), b0 - 0.5 * gb, atol=1e-7)  # 1-d: no decay, no adaptation
    # second step: momentum accumulates lr * trust * g (the learning rate lives in the buffer)
    w1 = w.detach().clone()
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    g2 = gw + 0.1 * w1
    v = 0.9 * (0.5 * trust * g) + 0.5 * (0.001 * w1.norm() / g2.norm()) * g2
    assert torch.allclose(w.detach(), w1 - v, atol=1e-6)


def test_one_dimensional_parameters_are_excluded():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2, bias=False))
    groups = lars_param_groups(model, weight_decay=1e-6)
    adapted = {id(p) for p in groups[0]["params"]}
    assert groups[0]["lars"] and groups[0]["weight_decay"] == 1e-6
    assert not groups[1]["lars"] and groups[1]["weight_decay"] == 0.0
    for name, p in model.named_parameters():
        assert (id(p) in adapted) == (p.ndim > 1), name


def test_excluded_parameter_takes_plain_sgd_even_with_large_weights():
    p = nn.Parameter(torch.full((5,), 100.0))
    opt = LARS([{"params": [p], "weight_decay": 0.0, "lars": False}], lr=0.1, momentum=0.0)
    p.grad = torch.ones(5)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((5,), 99.9))


def test_zero_gradient_or_weight_uses_unit_trust():
    p = nn.Parameter(torch.zeros(2, 2))
    opt = LARS([{"params": [p], "weight_decay": 0.0, "lars": True}], lr=1.0, momentum=0.0)
    p.grad = torch.ones(2, 2)
    opt.step()
    assert torch.allclose(p.detach(), -torch.ones(2, 2))


def test_state_survives_save_and_load():
    torch.manual_seed(1)
    model = nn.Linear(3, 3)
    opt = build_optimizer(model, "lars", 0.1, 1e-6)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    opt2 = build_optimizer(model, "lars", 0.1, 1e-6)
    opt2.load_state_dict(opt.state_dict())
    for p in model.parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[p]["momentum_buffer"])


def test_lr_rules():
    assert scaled_lr(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(0.075 * 64)
    assert scaled_lr(0.5, 100, "none") == 0.5
    assert math.isclose(scaled_lr(0.3, 256, "linear"), 0.3)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_other_optimizers_do_not_decay_one_dimensional(name):
    opt = build_optimizer(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), name, 0.1, 0.5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]


def reference_steps(params, grads, steps, lr, momentum, wd, eta):
    """The reference update one parameter at a time (lars: adapted and decayed, as the paper's 2-d weights)."""
    ws = [w.detach().clone() for w, _ in params]
    vs = [torch.zeros_like(w) for w in ws]
    for _ in range(steps):
        for i, ((_, lars), g) in enumerate(zip(params, grads)):
            g = g + wd * ws[i] if lars else g
            trust = 1.0
            if lars and ws[i].norm() > 0 and g.norm() > 0:
                trust = eta * ws[i].norm() / g.norm()
            vs[i] = momentum * vs[i] + lr * trust * g
            ws[i] = ws[i] - vs[i]
    return ws


def test_several_steps_match_the_per_parameter_reference():
    """Mixed shapes (a channels_last conv weight, a matrix, a zero matrix, 1-d parameters), both groups, with
    momentum: the foreach update equals the per-parameter formula (up to the rounding of a fused multiply-add)."""
    torch.manual_seed(2)
    shapes = [((8, 3, 3, 3), True), ((5, 7), True), ((4, 4), True), ((8,), False), ((5,), False)]
    params = [(nn.Parameter(torch.randn(*s)), lars) for s, lars in shapes]
    params[0][0].data = params[0][0].data.contiguous(memory_format=torch.channels_last)
    params[2][0].data.zero_()  # zero weight: unit trust
    grads = [torch.randn(*s) for s, _ in shapes]
    want = reference_steps(params, grads, 3, lr=0.7, momentum=0.9, wd=0.01, eta=0.02)
    opt = LARS(
        [
            {"params": [w for w, lars in params if lars], "weight_decay": 0.01, "lars": True},
            {"params": [w for w, lars in params if not lars], "weight_decay": 0.0, "lars": False},
        ],
        lr=0.7,
        momentum=0.9,
        trust_coefficient=0.02,
    )
    for _ in range(3):
        for (w, _), g in zip(params, grads):
            w.grad = g.clone()
        opt.step()
    for (w, _), ref in zip(params, want):
        torch.testing.assert_close(w.detach(), ref, rtol=1e-6, atol=1e-6)
    for (w, _), g in zip(params, grads):
        assert torch.equal(w.grad, g)  # the gradients are read, not changed


class CountOps(TorchDispatchMode):
    """Counts aten ops, and notes foreach ops whose tensor lists CUDA could not fuse into one kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()
        self.unfused: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
        for k, other in enumerate(lists[1:], 1):
            # CUDA's multi-tensor kernels need the i-th tensors of all lists to share a shape; the one
            # exception is addcmul's tensor1 as a list of 0-d tensors (fused where torch has that path)
            zero_d = name.startswith("_foreach_addcmul") and k == 1 and all(t.dim() == 0 for t in other)
            if not zero_d and any(a.shape != b.shape for a, b in zip(lists[0], other)):
                self.unfused.append(name)
        return func(*args, **(kwargs or {}))


def test_step_op_count_does_not_grow_with_the_parameter_count():
    """One foreach op per stage whatever the number of parameters, no host sync, and no foreach op
    with per-parameter 0-d factors that CUDA would run as one kernel per parameter (the former
    ``_foreach_mul(grads, trust.unbind())``)."""

    def ops(layers: int) -> CountOps:
        model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(layers)])
        opt = build_optimizer(model, "lars", 0.1, 1e-6)
        for _ in range(2):  # the second step: momentum buffers exist
            model(torch.randn(3, 4)).sum().backward()
            counter = CountOps()
            with counter:
                opt.step()
        return counter

    few, many = ops(2), ops(20)
    assert few.ops == many.ops, (few.ops, many.ops)
    assert sum(few.ops.values()) <= 25 and "_local_scalar_dense" not in few.ops, few.ops
    assert few.unfused == [], few.unfused
