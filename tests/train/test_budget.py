"""A schedule from a compute budget: the epoch count that fits, timing that leaves no trace on the run,
and a resumed run that keeps the epochs its first process chose."""

from __future__ import annotations

import pytest
import torch
import yaml

from fastclr import config
from fastclr.train import budget, checkpoint
from fastclr.train import loop as train

SMALL = {
    "data": "digits",
    "image_size": 8,
    "batch_size": 16,
    "max_images": 64,
    "warmup_epochs": 1.0,
    "precision": "fp32",
    "device": "cpu",
    "channels_last": False,
    "eval": False,
    "log_every": 1,
}


def cfg_for(out, **kw) -> config.Config:
    values = {**SMALL, **kw}
    return config.build_config(None, {"out": str(out)}, [f"{k}={v}" for k, v in values.items()])


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize(
    ("budget_s", "step_s", "per_epoch", "expected"),
    [(60.0, 0.5, 10, 12), (60.0, 0.5, 13, 9), (1.0, 0.5, 10, 1), (1e9, 1e-3, 10, 1000), (60, 0.0, 10, 1000)],
)
def test_epochs_for_is_the_whole_epochs_that_fit(budget_s, step_s, per_epoch, expected):
    assert budget.epochs_for(budget_s, step_s, per_epoch) == expected


def test_timing_steps_leaves_weights_optimiser_and_generators_as_they_were():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    calls = []

    def step() -> torch.Tensor:
        calls.append(1)
        opt.zero_grad()
        loss = model(torch.randn(16, 4)).square().mean()  # draws from the global generator too
        loss.backward()
        opt.step()
        return loss.detach()

    seconds = budget.seconds_per_step(step, model, opt, torch.device("cpu"))
    assert seconds > 0 and len(calls) == 1 + budget.TIMED_STEPS
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert opt.state_dict()["state"] == {} and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_budgeted_run_equals_the_run_given_its_chosen_epochs(tmp_path):
    budgeted = train.pretrain(cfg_for(tmp_path / "b", budget_minutes=0.02, max_steps=6))
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert saved["budget_minutes"] == 0.0 and saved["epochs"] >= 1  # the choice, recorded for resume
    plain = train.pretrain(cfg_for(tmp_path / "p", epochs=saved["epochs"], max_steps=6))
    assert budgeted["steps"] == plain["steps"] == 6
    a = checkpoint.load(tmp_path / "b" / "checkpoints" / "last.pt")
    b = checkpoint.load(tmp_path / "p" / "checkpoints" / "last.pt")
    assert a["config"]["epochs"] == saved["epochs"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_the_budget_never_runs_past_the_configured_epochs(tmp_path, monkeypatch):
    """A budget that fits 1,000 epochs of a tiny set runs the configured 3 (the CPU defaults' bound is 100)."""
    monkeypatch.setattr(budget, "seconds_per_step", lambda *a, **k: 1e-6)
    train.pretrain(cfg_for(tmp_path, budget_minutes=5, epochs=3, max_steps=1))
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["epochs"] == 3


def test_resuming_a_budgeted_run_keeps_its_epochs_and_does_not_time_again(tmp_path, monkeypatch):
    train.pretrain(cfg_for(tmp_path, budget_minutes=0.02, max_steps=3))
    chosen = yaml.safe_load((tmp_path / "config.yaml").read_text())["epochs"]

    def no_timing(*_args, **_kwargs):
        raise AssertionError("a resumed run must not time its steps again")

    monkeypatch.setattr(budget, "seconds_per_step", no_timing)
    assert train.pretrain(cfg_for(tmp_path, budget_minutes=0.02, max_steps=5))["steps"] == 5
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["epochs"] == chosen
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["config"]["epochs"] == chosen


def test_budget_minutes_must_not_be_negative(tmp_path):
    from fastclr.errors import UserError

    with pytest.raises(UserError, match="budget_minutes"):
        config.validate(cfg_for(tmp_path, budget_minutes=-1))
