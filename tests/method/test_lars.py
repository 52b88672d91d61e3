"""LARS against a hand computation of the reference update; the paper's exclusions and lr rules."""

import math

import pytest
import torch
from torch import nn

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
