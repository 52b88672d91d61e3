"""Runs survive faults: resumed runs equal uninterrupted ones exactly, signals checkpoint and exit,
SIGKILL at random moments never loses the run, a non-finite loss stops before bad weights are saved."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastclr import cli, config
from fastclr.errors import UserError
from fastclr.train import checkpoint
from fastclr.train import loop as train

STEPS = 40  # 5 epochs of 8 steps
SMALL = {
    "data": "digits",
    "image_size": 8,
    "batch_size": 8,
    "max_images": 64,
    "epochs": 5,
    "warmup_epochs": 1.0,
    "precision": "fp32",
    "device": "cpu",  # bit-exact comparisons: CPU kernels are deterministic, cuDNN's autotuned ones are not
    "channels_last": False,
    "eval": False,
    "log_every": 1,
    "checkpoint_every": 3,
    "keep_checkpoints": 2,
}
FLAGS = [f"{k}={v}" for k, v in SMALL.items()]


def cli_args(out: Path, max_steps: int = STEPS, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["pretrain", "--out", str(out), "--max-steps", str(max_steps)]
    for f in FLAGS:
        args += ["--set", f]
    return [*args, *extra]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def run(out: Path, max_steps: int, **kw) -> dict:
    """In process, with the config the CLI builds from the same flags (digits preset, then FLAGS)."""
    sets = FLAGS + [f"{k}={v}" for k, v in kw.items()]
    return train.pretrain(config.build_config(None, {"out": str(out), "max_steps": max_steps}, sets))


def final_state(out: Path) -> dict:
    return checkpoint.load(out / "checkpoints" / "last.pt")


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def assert_same_run(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of STEPS steps."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("uninterrupted")
    run(out, STEPS)
    return out


def test_resumed_twice_mid_epoch_equals_uninterrupted(tmp_path, reference):
    run(tmp_path, 5)  # stops mid-epoch 0
    run(tmp_path, 21)  # resumes mid-epoch, crosses two epoch ends, stops mid-epoch 2
    run(tmp_path, STEPS)
    assert_same_run(final_state(tmp_path), final_state(reference))
    assert losses(tmp_path) == losses(reference)  # metrics.jsonl reads like the uninterrupted run's


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_step_checkpoints_and_resumes_exactly(tmp_path, reference, monkeypatch, capsys, sig):
    calls = {"n": 0}
    step_fn = train.train_step

    def signalled_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # arrives in the middle of step 7
            os.kill(os.getpid(), sig)
        return step_fn(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", signalled_step)
    code = cli.main(cli_args(tmp_path))
    captured = capsys.readouterr()
    assert code == 128 + sig
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["interrupted"] is True and result["steps"] == 7 and result["signal"] == signal.Signals(sig).name
    assert f"resume with: fastclr pretrain --out {tmp_path}" in captured.err
    assert final_state(tmp_path)["step"] == 7
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers are put back

    monkeypatch.setattr(train, "train_step", step_fn)
    assert cli.main(["pretrain", "--out", str(tmp_path)]) == 0  # the printed command: the run's own config
    assert_same_run(final_state(tmp_path), final_state(reference))


def test_no_resume_says_so_and_starts_over(tmp_path, capsys):
    run(tmp_path, 5)
    assert cli.main(cli_args(tmp_path, 3, ("--no-resume",))) == 0
    err = capsys.readouterr().err
    assert "--no-resume: starting over at step 0" in err
    assert final_state(tmp_path)["step"] == 3
    assert [s for s, _ in losses(tmp_path)] == [1, 2, 3]
    assert not (tmp_path / "checkpoints" / "step-00000005.pt").exists()


@pytest.mark.parametrize("minutes,steps", [(0, [0, 8, 16, 20]), (60, [0, 20])])  # 0: the start
def test_epoch_ends_write_a_checkpoint_only_after_checkpoint_minutes(tmp_path, minutes, steps):
    """8 steps an epoch: with checkpoint_minutes=0 every epoch's end is saved; with an hour none is in a
    short run (a 100-epoch GPU run then writes a checkpoint every few minutes, not every epoch)."""
    run(tmp_path, 20, checkpoint_every=100, keep_checkpoints=10, checkpoint_minutes=minutes)
    assert [int(p.stem.split("-")[1]) for p in checkpoint.step_files(tmp_path / "checkpoints")][::-1] == steps


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(UserError) as e:
        run(tmp_path, 20, optimizer="sgd", lr=1e30, checkpoint_every=2, log_every=5)
    msg = str(e.value)
    assert "at step 4" in msg and "learning rate" in msg and "temperature" in msg and "precision" in msg
    state = final_state(tmp_path)
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


# Runs the CLI in a child process whose training steps announce themselves: at its ``mark``-th step it
# creates the marker file, and at its ``mark + 3``-th it blocks until killed. The kill then lands inside a
# window of steps (checkpoints and saves included) chosen by the test, whatever the machine's speed: a fast
# idle machine cannot finish the run before the kill, a loaded one only takes longer to reach the mark.
_PAUSED_CHILD = """
import sys, time
from pathlib import Path
from fastclr import cli
from fastclr.train import loop

marker, mark = Path(sys.argv[1]), int(sys.argv[2])
step_fn, calls = loop.train_step, [0]

def announced_step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == mark:
        marker.touch()
    if calls[0] == mark + 3:
        time.sleep(3600)
    return step_fn(*args, **kwargs)

loop.train_step = announced_step
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_run(tmp_path, reference):
    """SIGKILL four times at random moments of training (checkpoints every step, so many kills land
    inside a save); each time a loadable checkpoint remains, and the resumed run ends equal to the
    uninterrupted one. The moments are drawn in steps, not seconds (see ``_PAUSED_CHILD``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = cli_args(tmp_path, extra=("--set", "checkpoint_every=1"))
    rng = random.Random(6)
    killed_at = []
    for attempt in range(4):
        marker = tmp_path / f"mark-{attempt}"
        mark = rng.randint(2, 4)  # steps 1..mark-1 of this process are checkpointed before the marker appears
        cmd = [sys.executable, "-c", _PAUSED_CHILD, str(marker), str(mark), *args]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker.exists(), "the child never reached its marked step"
        time.sleep(rng.uniform(0.0, 0.2))  # somewhere in steps mark..mark+3, or blocked at the last one
        proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        found = checkpoint.load_latest(tmp_path / "checkpoints", set_aside=False)
        assert found is not None and 0 < found[0]["step"] < STEPS
        killed_at.append(found[0]["step"])
    assert killed_at == sorted(killed_at) and len(set(killed_at)) == 4, killed_at  # each run made progress
    done = subprocess.run(
        [sys.executable, "-m", "fastclr", *args], check=False, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == STEPS
    state = final_state(tmp_path)
    assert state["step"] == STEPS
    assert_same_run(state, final_state(reference))


@pytest.mark.cuda
def test_resume_on_cuda(tmp_path):
    """A run on the GPU resumes (its RNG state loads on the CPU, its weights on the GPU) and finishes."""
    run(tmp_path, 5, device="cuda")
    assert run(tmp_path, 12, device="cuda")["steps"] == 12
    state = final_state(tmp_path)
    assert state["step"] == 12 and state["config"]["device"] == "cuda"
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
