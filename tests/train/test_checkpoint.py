"""Checkpoints: atomic writes, rotation, damage detection with fallback, and refusal of pickled code."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from fastclr.train import checkpoint
from fastclr.train.checkpoint import CorruptCheckpoint, UnsafeCheckpoint


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {
        "format": checkpoint.FORMAT,
        "version": checkpoint.VERSION,
        "step": step,
        "model": {"w": torch.randn(64, 64, generator=g), "n": torch.tensor(step)},
    }


class _CreatesFile:
    """Unpickling this object would create ``path``: the payload of a malicious checkpoint."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_save_load_roundtrip_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.pt"
    checkpoint.save(_state(3), path)
    state = checkpoint.load(path)
    assert state["step"] == 3 and torch.equal(state["model"]["w"], _state(3)["model"]["w"])
    assert state["digest"] == checkpoint.digest(state)
    assert os.listdir(tmp_path) == ["a.pt"]


@pytest.mark.parametrize("form", ["torch_zip", "plain_pickle", "pickle_protocol_2"])
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, form):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    payload = {"format": "fastclr", "step": 1, "model": {}, "x": _CreatesFile(marker)}
    if form == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4 if form == "plain_pickle" else 2))
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpoint) as e:
        checkpoint.load(path)
    msg = str(e.value)
    assert "refused" in msg and "\n" not in msg and str(path) in msg
    assert not marker.exists()
    # load_latest does not fall back past an unsafe file: it stops
    folder = tmp_path / "run"
    folder.mkdir()
    checkpoint.save_rotating(_state(1), folder, 1, keep=2)
    os.replace(path, folder / checkpoint.LAST)
    with pytest.raises(UnsafeCheckpoint):
        checkpoint.load_latest(folder)
    assert not marker.exists()


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    elif how == "flipped_byte":  # inside the tensor data: torch itself loads this without complaint
        i = data.index(checkpoint.load(path)["model"]["w"][0, :4].numpy().tobytes())
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "flipped_byte"])
def test_damaged_checkpoint_is_detected(tmp_path, how):
    path = tmp_path / "c.pt"
    checkpoint.save(_state(1), path)
    _damage(path, how)
    with pytest.raises(CorruptCheckpoint) as e:
        checkpoint.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_not_a_fastclr_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CorruptCheckpoint, match="not a fastclr checkpoint"):
        checkpoint.load(path)


def test_rotation_keeps_last_k_and_last_is_the_newest(tmp_path):
    for step in range(1, 6):
        checkpoint.save_rotating(_state(step), tmp_path, step, keep=2)
    assert [p.name for p in checkpoint.step_files(tmp_path)] == ["step-00000005.pt", "step-00000004.pt"]
    assert checkpoint.load(tmp_path / "last.pt")["step"] == 5
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "step-00000004.pt", "step-00000005.pt"]


def test_corrupt_last_falls_back_to_previous_with_a_warning(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save_rotating(_state(step), tmp_path, step, keep=3)
    (tmp_path / "last.pt").unlink()  # break the hard link, then damage last.pt alone
    checkpoint.save(_state(3), tmp_path / "last.pt")
    _damage(tmp_path / "last.pt", "truncated")
    warnings: list[str] = []
    state, path = checkpoint.load_latest(tmp_path, warn=warnings.append)
    assert state["step"] == 3 and path.name == "step-00000003.pt"
    assert len(warnings) == 1 and "last.pt" in warnings[0] and "step-00000003.pt" in warnings[0]
    assert (tmp_path / "last.pt.corrupt").exists()  # set aside, so the next save is not shadowed


def test_damaged_newest_file_falls_back_past_its_hard_link(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save_rotating(_state(step), tmp_path, step, keep=3)
    _damage(tmp_path / "step-00000003.pt", "flipped_byte")  # last.pt is the same file
    warnings: list[str] = []
    state, path = checkpoint.load_latest(tmp_path, warn=warnings.append)
    assert state["step"] == 2 and path.name == "step-00000002.pt"
    assert "last.pt" in warnings[0] and "step-00000002.pt" in warnings[0] and "step-00000003.pt" in warnings[0]


def test_every_file_damaged_is_an_error(tmp_path):
    checkpoint.save_rotating(_state(1), tmp_path, 1, keep=2)
    _damage(tmp_path / "step-00000001.pt", "truncated")
    with pytest.raises(CorruptCheckpoint, match="no loadable checkpoint"):
        checkpoint.load_latest(tmp_path)


def test_killed_save_leaves_the_previous_checkpoint_and_a_removable_temporary(tmp_path):
    checkpoint.save_rotating(_state(1), tmp_path, 1, keep=2)
    (tmp_path / ".step-00000002.pt.tmp999").write_bytes(b"partial")  # a save killed before its rename
    assert checkpoint.load_latest(tmp_path)[0]["step"] == 1
    checkpoint.remove_temporaries(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "step-00000001.pt"]


def test_rng_states_roundtrip_through_a_safe_load(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    checkpoint.save({"format": "fastclr", "rng": checkpoint.rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_resume_reads_every_tensor_on_the_cpu(tmp_path, monkeypatch):
    """A GPU run's resume once loaded the checkpoint onto the GPU, where numpy cannot read the RNG keys.
    Meta tensors stand in for the GPU: torch.load maps there whatever is not asked for on the CPU."""
    from fastclr import config

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()  # a momentum buffer in the optimiser state
    np.random.seed(5)
    cfg = config.Config()
    checkpoint.save_rotating(checkpoint.assemble(model, optimizer, cfg, 3, 4), tmp_path, 3, keep=2)
    expected = np.random.rand(3)

    real_load = torch.load

    def load_elsewhere(f, map_location=None, **kw):
        return real_load(f, map_location="cpu" if str(map_location) == "cpu" else "meta", **kw)

    monkeypatch.setattr(torch, "load", load_elsewhere)
    state = checkpoint.resume_state(tmp_path, cfg)
    tensors = [t for part in ("model", "optimizer", "rng") for t in _tensors(state[part])]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    assert checkpoint.restore_training(state, model, optimizer, tmp_path) == 3
    assert np.array_equal(np.random.rand(3), expected)


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []
