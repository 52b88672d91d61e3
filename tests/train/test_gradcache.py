"""The gradient cache (--chunk-size) computes the gradients of the one-pass step."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from _spawn import run_ranks
from fastclr.config import Config, build_config, validate
from fastclr.errors import UserError
from fastclr.method.model import SimCLR
from fastclr.train import dist
from fastclr.train.step import forward_backward

B = 8
VIEWS = 2


class NoBN(nn.Module):
    """A small encoder + head without BatchNorm: each view's z depends on that view only.

    float64, so that only the loss (float32 by design) rounds: the order in which chunks add up
    their parameter gradients would otherwise show as float32 noise of ~1e-4 relative.
    """

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
        self.double()

    def forward(self, x):
        h = self.encoder(x)
        return h, self.head(h)


def cfg_with(**kw) -> Config:
    return dataclasses.replace(Config(), precision="fp32", views=VIEWS, **kw)


def inputs() -> torch.Tensor:
    return torch.randn(VIEWS * B, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def grads_of(model: nn.Module, x: torch.Tensor, cfg: Config) -> tuple[float, dict]:
    net = dist.wrap(model, torch.device("cpu"))
    value = forward_backward(net, x, cfg, step=0, device=torch.device("cpu"), precision="fp32")
    return value.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def max_rel(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() / a[k].abs().max().item() for k in a)


@pytest.mark.parametrize("chunk", [2, 5, 16])
@pytest.mark.parametrize("loss", ["nt_xent", "nt_logistic"])
def test_chunked_equals_one_pass(chunk, loss):
    ref_loss, ref = grads_of(NoBN(), inputs(), cfg_with(loss=loss))
    got_loss, got = grads_of(NoBN(), inputs(), cfg_with(loss=loss, chunk_size=chunk))
    rel = max_rel(ref, got)
    assert got_loss == pytest.approx(ref_loss, rel=1e-6)
    print(f"{loss} chunk {chunk}: max relative gradient difference {rel:.2e}")
    assert rel < 1e-6, f"chunk {chunk}: max relative gradient difference {rel:.2e}"


def _chunked_worker(path: str) -> None:
    rank, world = dist.rank(), dist.world_size()
    b = B // world
    x = inputs()
    local = torch.cat([x[v * B + rank * b : v * B + (rank + 1) * b] for v in range(VIEWS)])
    value, grads = grads_of(NoBN(), local, cfg_with(chunk_size=3))
    if dist.is_main():
        torch.save({"loss": value, "grads": grads}, path)


def test_two_processes_chunked_equal_one_process_one_pass(tmp_path):
    """DDP + gather + gradient cache (no_sync until the last chunk) on 2 ranks = plain step on 1."""
    run_ranks(2, _chunked_worker, str(tmp_path / "r.pt"))
    got = torch.load(tmp_path / "r.pt", weights_only=True)
    ref_loss, ref = grads_of(NoBN(), inputs(), cfg_with())
    rel = max_rel(ref, got["grads"])
    assert got["loss"] == pytest.approx(ref_loss, rel=1e-6)
    print(f"2 processes chunked vs 1 one-pass: max relative gradient difference {rel:.2e}")
    assert rel < 1e-5, (
        f"max relative gradient difference {rel:.2e}"
    )  # the float32 loss gradient sums over ranks in another order


def test_bn_statistics_are_per_chunk_and_updated_once():
    """With BN, chunking changes the statistics (documented); running stats move once per chunk."""
    torch.manual_seed(0)
    model = SimCLR("resnet_mini", cifar_stem=True, proj_dim=8)
    forward_backward(
        model, inputs().float(), cfg_with(chunk_size=4), step=0, device=torch.device("cpu"), precision="fp32"
    )
    assert int(model.encoder.bn1.num_batches_tracked) == VIEWS * B // 4
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_chunk_size_flag_and_range():
    assert build_config(None, {"chunk_size": 64}, []).chunk_size == 64
    with pytest.raises(UserError, match="chunk_size"):
        validate(build_config(None, {"chunk_size": 1}, []))
