"""Embeddings come out in dataset order with their ids: one process, the gather with indices, and torchrun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from _spawn import run_ranks
from evalkit import cli, digit_folder, last_json, make_checkpoint
from fastclr.data import datasets
from fastclr.eval import embed
from fastclr.eval.features import extract
from fastclr.train import dist


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    folder = digit_folder(root / "data", 5, 2)
    ckpt, model = make_checkpoint(root / "last.pt", str(folder))
    data = datasets.load(str(folder), 8)
    model.eval()
    return ckpt, model, data


def _reference(model, images, projection=False):
    fn = (lambda x: model.project(model.encode(x))) if projection else model.encode
    return extract(fn, images, 8, torch.device("cpu"), batch_size=7)


def test_npy_rows_and_ids_in_dataset_order(setup, tmp_path):
    ckpt, model, data = setup
    res = last_json(cli("embed", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e.npy"), "--batch-size", "16"))
    assert res["count"] == len(data.pretrain) == 50 and res["dim"] == model.feature_dim
    array, ids = embed.read(tmp_path / "e.npy")
    assert ids == data.pretrain.ids and ids[0].endswith("0/000.png")  # file paths, sorted listing
    np.testing.assert_allclose(array, _reference(model, data.pretrain.images).numpy(), atol=1e-5)


def test_parquet_projection_and_test_split(setup, tmp_path):
    ckpt, model, data = setup
    res = last_json(
        cli("embed", "--checkpoint", str(ckpt), "--out", str(tmp_path / "z.parquet"), "--projection", "--split", "test")
    )
    assert res["count"] == 20 and res["dim"] == 128
    array, ids = embed.read(tmp_path / "z.parquet")
    assert ids == data.test.ids
    np.testing.assert_allclose(array, _reference(model, data.test.images, projection=True).numpy(), atol=1e-5)


def test_shards_cover_every_row_once():
    for n, world in ((10, 3), (7, 2), (2, 4)):
        shards = [embed.shard(n, r, world) for r in range(world)]
        assert torch.equal(torch.cat(shards).sort().values, torch.arange(n))


def _gather_worker(n: int, path: str) -> None:
    """Each rank embeds its shard as rows f(i) = [i, -2i]; rank 0 saves the gathered table."""
    mine = embed.shard(n, dist.rank(), dist.world_size())
    rows = torch.stack([mine.float(), -2 * mine.float()], 1) if len(mine) else torch.zeros(0, 0)  # as embed_rows
    full = embed.gather_in_order(rows, mine, n, torch.device("cpu"), width=2)
    if dist.is_main():
        torch.save(full, path)


# uneven shards pad with index -1; even shards do not; with 1 image rank 1 has no rows (and gathers the model's width)
@pytest.mark.parametrize("n", [7, 8, 1])
def test_two_processes_gather_every_row_at_its_index(tmp_path, n):
    run_ranks(2, _gather_worker, n, str(tmp_path / "full.pt"))
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    i = torch.arange(n, dtype=torch.float32)
    assert torch.equal(full, torch.stack([i, -2 * i], 1))  # computed independently of the shards


def test_torchrun_two_processes_same_file(setup, tmp_path):
    ckpt, model, data = setup
    out = tmp_path / "two.npy"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "fastclr",
        "embed",
        "--checkpoint",
        str(ckpt),
        "--out",
        str(out),
        "--batch-size",
        "8",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    array, ids = embed.read(out)
    assert ids == data.pretrain.ids
    np.testing.assert_allclose(array, _reference(model, data.pretrain.images).numpy(), atol=1e-5)


def _torchrun_embed(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd = [*run, "-m", "fastclr", "embed"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=240, check=False)


def test_torchrun_file_set_each_rank_decodes_its_own_rows(tmp_path):
    """Photos larger than the model's size are a file set: under torchrun each rank decodes only its
    shard (a spy counts the decodes per rank), an unreadable file is left out, and the rows equal one
    process's, in file order."""
    from PIL import Image

    from makeimages import pixels

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(9):
        Image.fromarray(pixels(i, 40, 36)).save(folder / f"img{i:02d}.png")
    (folder / "img04.png").write_bytes(b"not an image")
    ckpt, _ = make_checkpoint(tmp_path / "last.pt", str(folder), max_bad_fraction=0.5)
    one = last_json(cli("embed", "--checkpoint", str(ckpt), "--out", str(tmp_path / "one.npy")))
    spy = tmp_path / "spy"
    spy.mkdir()
    sitecustomize = tmp_path / "site" / "sitecustomize.py"  # every process counts its own decodes
    sitecustomize.parent.mkdir()
    sitecustomize.write_text(
        "import os\n"
        "from fastclr.data import evalset\n"
        "_decode = evalset.decode\n"
        "def counted(path, *a, **k):\n"
        f"    with open(os.path.join({str(spy)!r}, os.environ.get('RANK', 'x')), 'a') as f:\n"
        "        f.write(str(path) + '\\n')\n"
        "    return _decode(path, *a, **k)\n"
        "evalset.decode = counted\n"
    )
    os.environ["PYTHONPATH"] = f"{sitecustomize.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    try:
        r = _torchrun_embed("--checkpoint", str(ckpt), "--out", str(tmp_path / "two.npy"), "--batch-size", "4")
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
    assert r.returncode == 0, r.stderr[-3000:]
    assert one["count"] == 8 and json.loads(r.stdout.splitlines()[-1])["count"] == 8
    a, ids_a = embed.read(tmp_path / "one.npy")
    b, ids_b = embed.read(tmp_path / "two.npy")
    assert ids_a == ids_b and not any(i.endswith("img04.png") for i in ids_b)
    np.testing.assert_allclose(a, b, atol=1e-5)
    decoded = {rank: (spy / rank).read_text().split() for rank in ("0", "1")}
    assert sorted(decoded["0"] + decoded["1"]) == sorted(str(p) for p in folder.iterdir())  # each file once
    assert not set(decoded["0"]) & set(decoded["1"])


def test_embed_joins_the_process_group_before_touching_the_device(tmp_path, monkeypatch):
    """Under torchrun each rank must pick its GPU (dist.setup) before the model moves or the precision
    is resolved (both would open a CUDA context on GPU 0 in every rank)."""
    from fastclr.method.model import SimCLR
    from fastclr.train import restore

    ckpt, _ = make_checkpoint(tmp_path / "c.pt", "digits")
    events: list[str] = []
    setup, resolve, move = restore.dist.setup, restore.resolve, SimCLR.to
    monkeypatch.setattr(restore.dist, "setup", lambda d: events.append("setup") or setup(d))
    monkeypatch.setattr(restore, "resolve", lambda p, d: events.append("precision") or resolve(p, d))
    monkeypatch.setattr(
        SimCLR, "to", lambda self, *a, **k: events.append(f"to {a[0] if a else ''}") or move(self, *a, **k)
    )
    restored, dev, precision = restore.open_for_command(str(ckpt), "cpu", join=True)
    assert events == ["to cpu", "setup", "precision", "to cpu"]  # built on the CPU, then the group, then the device
    assert dev == torch.device("cpu") and precision == "fp32"
