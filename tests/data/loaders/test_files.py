"""The files tier (CPU crop + device pixel ops) draws the same views as the in-memory path."""

import pytest
import torch
from PIL import Image

from fastclr.data.loaders.base import CroppedViews, FinishedViews, ViewRecipe, finish_views
from fastclr.data.loaders.files import FileLoader, crop_views
from fastclr.data.sets import FileSet
from fastclr.method import augment
from fastclr.method.augment import AugmentConfig
from makeimages import pixels

CFG = AugmentConfig(size=32, min_scale=0.08, flip=True, color_strength=0.5)
RECIPE = ViewRecipe(seed=1, views=2, aug=CFG)


def smooth_images(n, h, w):
    """Smooth images (bilinear interpolation of both paths then agrees to rounding)."""
    small = torch.stack([torch.from_numpy(pixels(i, 4, 4)).permute(2, 0, 1) for i in range(n)]).float()
    return (
        torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        .round()
        .to(torch.uint8)
    )


def test_same_parameters_for_any_image_size():
    index = torch.arange(50) * 7
    h, w = torch.full((50,), 24.0), torch.full((50,), 20.0)
    a = augment.sample_params(index, h, w, seed=3, epoch=2, view=1, cfg=CFG)
    b = augment.sample_params(index, torch.ones(50), torch.ones(50), seed=3, epoch=2, view=1, cfg=CFG)
    for k in ("flip", "jitter", "brightness", "contrast", "saturation", "hue", "order", "gray", "blur", "sigma"):
        assert torch.equal(a[k], b[k]), k  # finish_views relies on this: pixel-op draws ignore the size


@pytest.mark.parametrize("h,w", [(24, 20), (96, 80)])  # crops upsampled; crops mostly downsampled (antialiased)
def test_stream_views_match_device_views(h, w):
    n = 24
    images = smooth_images(n, h, w)
    index = torch.arange(n) + 100
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    views = crop_views(pil, index, seed=5, epoch=1, views=2, cfg=CFG)  # [V, n, 3, 32, 32]
    assert views.shape == (2, n, 3, 32, 32) and views.dtype == torch.uint8
    for v in range(2):
        p = augment.sample_params(
            index, torch.full((n,), float(h)), torch.full((n,), float(w)), seed=5, epoch=1, view=v, cfg=CFG
        )
        ref = augment.crop_resize(augment.to_float(images), p, 32) * 255
        diff = (views[v].float() - ref).abs()
        assert diff.mean() < 0.6 and diff.max() <= 3, (
            v,
            diff.mean(),
            diff.max(),
        )  # same boxes and flips, rounding apart
    full = finish_views(views, index, seed=5, epoch=1, cfg=CFG)
    ref = torch.cat([augment.augment(images, index, seed=5, epoch=1, view=v, cfg=CFG) for v in range(2)])
    std = torch.tensor(augment.STD).view(1, 3, 1, 1)
    assert ((full - ref) * std).abs().mean() < 0.01  # in [0, 1] units, after the colour ops


def test_file_loader_independent_of_worker_count(tmp_path):
    files = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.png"
        Image.fromarray(pixels(i, 40 + i, 36)).save(p)
        files.append(p)
    data = FileSet(files, side=36)
    runs = []
    for workers in (0, 2):
        loader = FileLoader(data, 4, seed=1, device=torch.device("cpu"), views=2, cfg=CFG, workers=workers)
        batches = [(b, e) for e in (0, 1) for b in loader.epoch(e)]
        # workers on a CPU device finish the views themselves (pixel ops included); in this process, only crops
        assert all(type(b) is (FinishedViews if workers else CroppedViews) for b, _ in batches)
        runs.append([(b.index.clone(), b.rows.clone(), e) for b, e in batches])
    assert [len(r) for r in runs] == [6] * len(runs)  # 12 files, batch 4, 2 epochs: nothing dropped or truncated
    for (i0, v0, e), (i1, v1, _) in zip(*runs, strict=True):
        assert v0.dtype == torch.uint8 and v1.dtype == torch.float32  # the same views, finished where they were cut
        finished = finish_views(v0, i0, seed=1, epoch=e, cfg=CFG)
        assert torch.equal(i0, i1) and torch.allclose(finished, v1, atol=1e-5)
        assert torch.equal(CroppedViews(i0, v0).views(RECIPE, e), FinishedViews(i1, finished).views(RECIPE, e))
    # two processes of batch 2 each cover the single process's batch of 4, in order
    halves = [
        FileLoader(data, 4, seed=1, device=torch.device("cpu"), views=2, cfg=CFG, rank=r, world_size=2) for r in (0, 1)
    ]
    for (i, v, _), a, b in zip(runs[0][:3], halves[0].epoch(0), halves[1].epoch(0), strict=True):
        assert torch.equal(i, torch.cat([a.index, b.index])) and torch.equal(v, torch.cat([a.rows, b.rows], 1))


def test_resume_mid_epoch_gives_the_same_batches(tmp_path):
    files = []
    for i in range(8):
        Image.fromarray(pixels(i, 40, 40)).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    loader = FileLoader(FileSet(files, side=40), 2, seed=0, device=torch.device("cpu"), views=2, cfg=CFG)
    full = list(loader.epoch(3))
    resumed = list(loader.epoch(3, start=2))
    assert len(full) == 4 and len(resumed) == 2  # 8 files, batch 2: resumed at batch 2 of 4
    for a, b in zip(full[2:], resumed, strict=True):
        assert torch.equal(a.index, b.index) and torch.equal(a.rows, b.rows)


@pytest.mark.parametrize(
    "cores,local_world,asked,expected",
    [(16, None, 32, 16), (16, "8", 16, 2), (16, "8", 1, 1), (4, "8", 16, 1), (16, "2", 0, 0)],
)
def test_workers_capped_by_the_cores_each_process_shares(monkeypatch, cores, local_world, asked, expected):
    """torchrun's LOCAL_WORLD_SIZE processes of a node split its cores: 8 ranks x 16 workers on 16 cores -> 2 each."""
    from fastclr.data.loaders import tiers, workers

    monkeypatch.setattr(workers.os, "cpu_count", lambda: cores)
    if local_world is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    assert workers.worker_cap(asked) == expected
    assert f"by {expected} loader workers" in tiers.describe(tiers.FILES, 10, 96, 2**30, asked)  # the log says so


def test_large_jpegs_are_decoded_at_the_scale_their_crops_need(tmp_path, monkeypatch):
    """A 1600 x 1200 JPEG cut into 32-px views decodes at 1/8 scale (200 x 150: every crop still spans 32 px),
    and the views equal those of the full-size decode to resampling rounding."""
    from fastclr.data.loaders import files as files_tier

    full = Image.fromarray(smooth_images(1, 1200, 1600)[0].permute(1, 2, 0).numpy())
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.jpg")
        full.save(paths[-1], quality=95)
    sizes = []
    original = files_tier.open_rgb

    def spy(path, draft=0, data=None):
        image, hw = original(path, draft=draft, data=data)
        sizes.append((image.size, hw))
        return image, hw

    monkeypatch.setattr(files_tier, "open_rgb", spy)
    loader = FileLoader(FileSet(paths, side=1200), 4, seed=2, device=torch.device("cpu"), views=2, cfg=CFG)
    (batch,) = list(loader.epoch(0))
    assert augment.crop_source_side(CFG) == 131 and {s for s in sizes} == {((200, 150), (1200, 1600))}
    decoded = [Image.open(p).convert("RGB") for p in paths]  # full size
    want = crop_views(decoded, batch.index, seed=2, epoch=0, views=2, cfg=CFG)
    diff = (batch.rows.float() - want.float()).abs()
    assert 0 < diff.mean() < 2.0, diff.mean()  # not the same decode, the same views
