"""Tar shards: writing, reading, the exact-once rank x worker split, keyed views, resume, bad members."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from fastclr import config
from fastclr.data import datasets, evalset, specs
from fastclr.data.loaders.shards import ShardLoader, batch_positions
from fastclr.data.sources.shards import ShardSet
from fastclr.data.subsets import balanced_subset
from fastclr.data.write.shards import reencode, write_shards
from fastclr.train.step import augment_config
from makeimages import jpeg_bytes

pytest.importorskip("webdataset")

CPU = torch.device("cpu")


def load(spec, **kw):
    """``--data shards:SPEC`` as a run loads it."""
    return datasets.load(f"shards:{spec}", 8, **kw)


def make_folder(root, per_class=12, test_per_class=3, size=20):
    """train/{a,b,c} and test/{a,b,c} of small JPEGs with distinct pixels."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c in "abc":
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size + 6, 3), dtype=np.uint8)).save(d / f"{i}.jpg")
    return root


@pytest.fixture
def shards_dir(tmp_path):
    write_shards(str(make_folder(tmp_path / "src")), tmp_path / "sh", shard_size=5)
    return tmp_path / "sh"


def aug(size=8):
    return augment_config(config.Config(image_size=size))


def epoch_batches(data, *, batch, rank=0, world=1, workers=0, epoch=0, start=0, seed=3):
    loader = ShardLoader(data, batch, seed, CPU, views=2, cfg=aug(), workers=workers, rank=rank, world_size=world)
    return [(b.index.clone(), b.rows.clone()) for b in loader.epoch(epoch, start)]


@pytest.mark.parametrize("n,batch,ranks,streams,window", [(36, 12, 2, 2, 4), (37, 8, 2, 3, 1), (50, 6, 3, 2, 100)])
def test_layout_covers_each_position_once(n, batch, ranks, streams, window):
    steps, local = n // batch, batch // ranks
    seen = []
    for r in range(ranks):
        for t in range(steps):
            _, _, pos = batch_positions(
                t, steps=steps, local=local, rank=r, streams=streams, window=window, seed=1, epoch=2
            )
            seen.extend(pos.tolist())
    assert sorted(seen) == list(range(steps * batch))  # the N mod B stream tail is the only thing left out


def test_prepare_writes_index(shards_dir):
    index = json.loads((shards_dir / "index.json").read_text())
    train = index["splits"]["train"]
    assert [s["count"] for s in train["shards"]] == [5] * 7 + [1]
    assert train["classes"] == ["a", "b", "c"]
    labels = [lab for s in train["shards"] for lab in s["labels"]]
    assert sorted(labels) == sorted([0] * 12 + [1] * 12 + [2] * 12)
    assert labels[:12] != sorted(labels[:12])  # shuffled across shards: each shard mixes the classes
    data = load(str(shards_dir))
    assert len(data.pretrain) == 36 and len(data.test) == 9 and data.test.labels is not None


def test_two_ranks_two_workers_see_each_sample_once(shards_dir):
    data = load(str(shards_dir)).pretrain
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            seen += [i for idx, _ in epoch_batches(data, batch=12, rank=rank, world=2, workers=2, epoch=epoch)
                     for i in idx.tolist()]  # fmt: skip
        assert sorted(seen) == list(range(36))


def test_views_keyed_on_sample_whatever_ranks_and_workers(shards_dir):
    data = load(str(shards_dir)).pretrain

    def views_by_sample(world, workers):
        out = {}
        for rank in range(world):
            for idx, v in epoch_batches(data, batch=12, rank=rank, world=world, workers=workers):
                b = idx.shape[0]
                for k, i in enumerate(idx.tolist()):
                    out[i] = torch.stack([v[k], v[b + k]])  # views 0 and 1 (view-major rows)
        return out

    one, many = views_by_sample(1, 1), views_by_sample(2, 2)
    assert one.keys() == many.keys() == set(range(36))
    for i in one:
        torch.testing.assert_close(one[i], many[i])
    # a different order: with one worker the batches hold other samples, the views stay the same
    assert [i.tolist() for i, _ in epoch_batches(data, batch=12, workers=1)] != [
        i.tolist() for i, _ in epoch_batches(data, batch=12, workers=2)
    ]


def test_resume_mid_epoch_equals_uninterrupted(shards_dir):
    data = load(str(shards_dir)).pretrain
    full = epoch_batches(data, batch=6, workers=2, epoch=1)
    resumed = epoch_batches(data, batch=6, workers=2, epoch=1, start=4)
    assert len(full) == 6 and len(resumed) == 2
    for (i, v), (j, w) in zip(full[4:], resumed):
        assert torch.equal(i, j)
        torch.testing.assert_close(v, w)


def test_corrupt_member_is_skipped_and_reported(tmp_path):
    src = make_folder(tmp_path / "src", per_class=4, test_per_class=1)
    (src / "train" / "a" / "0.jpg").write_bytes(jpeg_bytes(1)[:-300])  # truncated: kept as bytes by prepare
    write_shards(str(src), tmp_path / "sh", shard_size=4)
    data = load(str(tmp_path / "sh"), out_dir=tmp_path / "run", max_bad_fraction=0.5).pretrain
    index = json.loads((tmp_path / "sh" / "index.json").read_text())
    keys = [(s["name"], k) for s in index["splits"]["train"]["shards"] for k in s["keys"]]
    bad_pos = next(p for p, (_, k) in enumerate(keys) if k == "00000000")  # the listing's first file: train/a/0.jpg
    seen = [i for idx, _ in epoch_batches(data, batch=12) for i in idx.tolist()]
    assert bad_pos not in seen and len(seen) == 12  # replaced by another sample of its batch
    assert list(data.bad.paths) == [data.files[bad_pos]]
    assert "cannot decode" in data.bad.paths[data.files[bad_pos]]
    assert data.files[bad_pos] in (tmp_path / "run" / "skipped.txt").read_text()


def test_eval_batches_in_set_order_whatever_workers(shards_dir):
    data = load(str(shards_dir)).test
    a = evalset.decoded(data, 16, workers=0, batch_size=4)
    b = evalset.decoded(data, 16, workers=2, batch_size=4)
    assert a.ids == b.ids == list(data.files) and torch.equal(a.images, b.images)
    assert torch.equal(a.labels, data.labels)


def test_subset_keeps_shard_order(shards_dir):
    data = load(str(shards_dir)).pretrain
    sub = balanced_subset(data, 9, seed=0)
    assert isinstance(sub, ShardSet) and len(sub) == 9 and sum(sub.counts) == 9
    full = evalset.decoded(data, 8)
    part = evalset.decoded(sub, 8)
    pos = [full.ids.index(i) for i in part.ids]
    assert pos == sorted(pos) and torch.equal(part.images, full.images[pos])
    assert torch.bincount(part.labels).tolist() == [3, 3, 3]


def test_specs_without_index(shards_dir, tmp_path):
    (shards_dir / "index.json").unlink()
    by_folder = load(str(shards_dir))
    assert len(by_folder.pretrain) == 36 and len(by_folder.test) == 9 and by_folder.pretrain.labels is not None
    brace = load(str(shards_dir / "train-{000000..000007}.tar"))
    assert brace.pretrain.files == by_folder.pretrain.files and len(brace.test) == 9  # test-* found beside
    glob = load(str(shards_dir / "train-*.tar"))
    assert glob.pretrain.files == by_folder.pretrain.files
    piped = load(f"pipe:cat {shards_dir}/train-{{000000..000007}}.tar")
    assert len(piped.pretrain) == 36 and piped.test is None
    assert torch.equal(evalset.decoded(piped.pretrain, 8).images, evalset.decoded(by_folder.pretrain, 8).images)


def test_bad_specs_are_one_line_errors(tmp_path):
    from fastclr.errors import UserError

    with pytest.raises(UserError, match="no .tar shards"):
        load(str(tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        load(str(tmp_path / "train-{0..3}.tar"))
    with pytest.raises(UserError, match="shards:SPEC needs"):
        specs.parse("shards:")


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "fastclr", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


@pytest.mark.slow
def test_prepare_pretrain_embed_round_trip(tmp_path):
    src = make_folder(tmp_path / "src")
    r = run("prepare", str(src), "--format", "shards", "--out", str(tmp_path / "sh"), "--shard-size", "7")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["splits"] == {"train": 36, "test": 9}
    out = tmp_path / "run"
    r = run("pretrain", "--data", f"shards:{tmp_path / 'sh'}", "--out", str(out), "--max-steps", "3",
            "--batch-size", "12", "--set", "image_size=8", "--set", "workers=2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["steps"] == 3 and "knn_top1" in result["eval"] and result["eval"]["test_images"] == 9
    r = run("embed", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--data", f"shards:{tmp_path / 'sh'}",
            "--out", str(tmp_path / "e.npy"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    ids = json.loads((tmp_path / "e.ids.json").read_text())
    assert np.load(tmp_path / "e.npy").shape[0] == 36
    assert ids == list(load(str(tmp_path / "sh")).pretrain.files)  # shards in index order, tar order


def test_byte_reading_workers_give_the_same_crops(shards_dir):
    """The GPU path's split (workers read bytes, the device decodes and crops), run here on the CPU
    decoder: the same samples and crop boxes as the PIL path, pixels within resampling rounding."""
    data = load(str(shards_dir)).pretrain

    def crops(decode, workers):
        loader = ShardLoader(data, 12, 3, CPU, views=2, cfg=aug(16), workers=workers, decode=decode)
        return [(b.index, b.rows) for b in loader.epoch(0)]

    pil, device = crops("cpu", 0), crops("gpu", 0)
    assert len(pil) == len(device) == len(data) // 12 == 3  # every batch of the epoch, on both paths
    for (i, v), (j, w) in zip(pil, device, strict=True):
        assert torch.equal(i, j) and i.shape == (12,) and v.dtype == w.dtype == torch.uint8
        assert v.shape == w.shape == (2, 12, 3, 16, 16)  # 2 views of 12 samples
        assert (v.float() - w.float()).abs().mean() < 2.0
    assert sorted(torch.cat([i for i, _ in pil]).tolist()) == list(range(len(data)))  # each sample once
    workers = [i.tolist() for i, _ in crops("gpu", 2)]
    assert len(workers) == 3 and workers == [i.tolist() for i, _ in epoch_batches(data, batch=12, workers=2)]


@pytest.mark.slow
def test_pretraining_on_shards_resumed_mid_epoch_equals_uninterrupted(shards_dir, tmp_path):
    """The loop's resume (epoch, step) through the shard loader with 2 workers: bit-identical weights."""
    from fastclr.train import checkpoint
    from fastclr.train import loop as train

    sets = [f"data=shards:{shards_dir}", "image_size=8", "batch_size=6", "epochs=2", "device=cpu", "precision=fp32",
            "channels_last=false", "eval=false", "workers=2", "checkpoint_every=100"]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for out, stops in ((tmp_path / "a", (9,)), (tmp_path / "b", (4, 9))):  # 6 steps per epoch
            for max_steps in stops:
                train.pretrain(config.build_config(None, {"out": str(out), "max_steps": max_steps}, sets))
    finally:
        torch.set_num_threads(threads)
    a, b = (checkpoint.load(tmp_path / x / "checkpoints" / "last.pt") for x in "ab")
    assert a["step"] == b["step"] == 9
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def smooth(h: int, w: int) -> np.ndarray:
    """A smooth RGB pattern uint8 [h, w, 3] (two gradients and half a wave across the image): JPEG and
    resizing keep it within a few grey levels, so a re-encoded image can be compared with an independent resize."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = u / max(w - 1, 1), v / max(h - 1, 1)
    return np.stack([255 * u, 255 * v, 127.5 + 100 * np.sin(np.pi * (u + v))], axis=-1).round().astype(np.uint8)


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and im.mode == "RGB"
    return im


def pil_jpeg(path, size: int | None = None) -> bytes:
    """The independent encode: PIL's RGB decode, a bicubic resize to ``size`` (w, h) if given, JPEG quality 95."""
    buf = io.BytesIO()
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        (rgb.resize(size, Image.Resampling.BICUBIC) if size else rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.mark.parametrize("w,h", [(90, 60), (50, 80), (16, 40)])
def test_reencode_resizes_the_short_side_to_size(tmp_path, w, h):
    """Short side to 16 (bicubic), aspect kept, JPEG quality 95: byte for byte PIL's own resize and encode."""
    src = tmp_path / "big.png"
    Image.fromarray(smooth(h, w)).save(src)
    out = reencode(src, 16)
    scale = 16 / min(w, h)
    size = (round(w * scale), round(h * scale))
    assert decoded(out).size == size and min(size) == 16
    assert out == pil_jpeg(src, size if size != (w, h) else None)


def test_reencode_decodes_a_large_jpeg_at_a_reduced_scale_first(tmp_path):
    """A JPEG source is decoded at a reduced DCT scale whose sides stay >= 16, then resized: the pixels of
    PIL's full decode and resize within a few grey levels (smooth content)."""
    src = tmp_path / "big.jpg"
    Image.fromarray(smooth(120, 200)).save(src, quality=95)
    out = decoded(reencode(src, 16))
    assert out.size == (27, 16)
    with Image.open(src) as im:
        want = np.asarray(im.convert("RGB").resize(out.size, Image.Resampling.BICUBIC), dtype=np.float64)
    assert np.abs(np.asarray(out, dtype=np.float64) - want).mean() < 4.0


def test_reencode_never_enlarges_and_applies_the_decode_policy(tmp_path):
    """A small image keeps its size; EXIF orientation is applied; transparency becomes white; grey becomes
    RGB; a file that is not an image raises BadImage."""
    from fastclr.data.images import BadImage

    small = tmp_path / "small.png"
    Image.fromarray(smooth(10, 12)).save(small)
    assert decoded(reencode(small, 16)).size == (12, 10) and reencode(small, 16) == pil_jpeg(small)
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide x 20 high, shown rotated by 90 degrees: upright 20 x 40
    Image.fromarray(smooth(20, 40)).save(sideways, exif=exif, quality=95)
    assert decoded(reencode(sideways, 16)).size == (16, 32)
    clear = np.zeros((20, 20, 4), dtype=np.uint8)  # fully transparent
    Image.fromarray(clear, "RGBA").save(tmp_path / "clear.png")
    assert np.asarray(decoded(reencode(tmp_path / "clear.png", 16))).min() >= 250  # white
    Image.fromarray(smooth(20, 20)[:, :, 0], "L").save(tmp_path / "grey.png")
    assert decoded(reencode(tmp_path / "grey.png", 16)).size == (16, 16)
    (tmp_path / "text.jpg").write_bytes(b"not an image\n" * 10)
    with pytest.raises(BadImage, match="not an image"):
        reencode(tmp_path / "text.jpg", 16)


def test_shards_written_with_a_size_hold_reencoded_jpegs(tmp_path):
    """write_shards(size=S): every member is the re-encoded JPEG of its file (short side S), under .jpg."""
    import tarfile

    src = make_folder(tmp_path / "src", per_class=2, test_per_class=1, size=20)  # 26 x 20 JPEGs
    write_shards(str(src), tmp_path / "sh", size=16, shard_size=10)
    index = json.loads((tmp_path / "sh" / "index.json").read_text())
    files = sorted(src.rglob("*.jpg"))
    members = {}
    for tar_path in sorted((tmp_path / "sh").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members.update({(tar_path.name, m.name): tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")})
    assert (
        len(members) == len(files) == 9
        and sum(len(s["keys"]) for sp in index["splits"].values() for s in sp["shards"]) == 9
    )
    got = sorted(members.values())
    assert got == sorted(reencode(f, 16) for f in files)  # byte for byte the function's output
    assert all(decoded(b).size == (21, 16) for b in got)
