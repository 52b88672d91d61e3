"""The loop's callback interface: every logged record reaches callbacks, a callback can stop a run
(resumable, like a signal), and the logged learning rate is the schedule's, with and without max_steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fastclr import config
from fastclr.method.lars import scaled_lr
from fastclr.method.schedule import lr_at
from fastclr.train import checkpoint, loop
from fastclr.train.callbacks import Callback, LoopState

SMALL = [
    "image_size=8",
    "batch_size=8",
    "max_images=64",  # 8 steps per epoch
    "epochs=3",
    "warmup_epochs=1.0",
    "precision=fp32",
    "channels_last=false",
    "eval=false",
    "log_every=1",
    "checkpoint_every=100",
]
STEPS_PER_EPOCH = 8


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def build(out: Path, *sets: str, max_steps: int = 0) -> config.Config:
    return config.build_config(None, {"out": str(out), "max_steps": max_steps}, [*SMALL, *sets])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


class Recorder(Callback):
    """Keeps what the loop hands it; asks to stop once ``stop_at`` steps are done."""

    def __init__(self, stop_at: int = 0):
        self.stop_at, self.logged, self.steps, self.epochs, self.batches = stop_at, [], [], [], 0

    def on_batch(self, index):
        self.batches += 1
        return None

    def on_log(self, record):
        self.logged.append(dict(record))

    def on_step_end(self, state: LoopState):
        self.steps.append(state.step)

    def on_epoch_end(self, state: LoopState):
        self.epochs.append(state.epoch)
        state.log({"step": state.step, "epoch": state.epoch, "custom": 1.0})

    def should_stop(self):
        return bool(self.stop_at) and self.steps[-1] >= self.stop_at

    def stop_reason(self):
        return "the recorder"

    def state_dict(self):
        return {"recorder_steps": len(self.steps)}


def test_callbacks_see_every_record_and_step_and_can_stop_the_run(tmp_path, capsys):
    rec = Recorder(stop_at=11)
    result = loop.pretrain(build(tmp_path), callbacks=[rec])
    assert result["interrupted"] is True and result["stopped_by"] == "callback" and "exit_code" not in result
    err = capsys.readouterr().err
    assert "the recorder: stopped after step 11" in err and "resume with" not in err  # its reason, no advice
    assert result["steps"] == 11 and rec.steps == list(range(1, 12)) and rec.batches == 11
    assert rec.epochs == [1.0]
    assert rec.logged == records(tmp_path)  # every metrics.jsonl line, the callback's own included
    assert [r["step"] for r in rec.logged if "custom" in r] == [STEPS_PER_EPOCH]
    state = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 11 and state["monitor"] == {"recorder_steps": 11}

    again = Recorder()
    done = loop.pretrain(build(tmp_path), callbacks=[again])  # resumes at step 11, runs to the end
    assert done["steps"] == 3 * STEPS_PER_EPOCH and again.steps[0] == 12 and again.epochs == [2.0, 3.0]


@pytest.mark.parametrize("max_steps", [0, 10])
def test_logged_lr_is_the_schedule_of_every_step(tmp_path, max_steps):
    """lr of step s (1-based in metrics.jsonl) is lr_at(s - 1) of the full schedule: max_steps only stops early."""
    loop.pretrain(build(tmp_path, "lr=0.4", "lr_rule=linear", "warmup_epochs=0.5", max_steps=max_steps))
    logged = [(r["step"], r["lr"]) for r in records(tmp_path) if "lr" in r]
    total = 3 * STEPS_PER_EPOCH
    assert [s for s, _ in logged] == list(range(1, (max_steps or total) + 1))
    peak = scaled_lr(0.4, 8, "linear")
    for step, lr in logged:
        assert lr == pytest.approx(lr_at(step - 1, peak, STEPS_PER_EPOCH // 2, total), rel=1e-12, abs=1e-15)
    assert logged[0][1] == 0.0 and max(lr for _, lr in logged) == pytest.approx(peak)
    if not max_steps:  # the cosine reaches (almost) zero at the end of the full schedule
        assert logged[-1][1] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 19 / 20)))
