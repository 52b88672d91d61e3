"""Batched augmentation: same ops as torchvision, specified distributions, keyed determinism."""

import itertools
import math
from collections import Counter

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import RandomResizedCrop

from fastclr.method import augment as A

N = 20000  # draws for the statistical checks; tolerances are ~5 standard errors


def params(cfg=A.AugmentConfig(), n=N, h=32, w=32, epoch=0, view=0, seed=0):
    idx = torch.arange(n)
    return A.sample_params(idx, torch.full((n,), h), torch.full((n,), w), seed=seed, epoch=epoch, view=view, cfg=cfg)


def binomial_ok(hits, n, p):
    return abs(hits / n - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_crop_distribution_matches_torchvision():
    h = w = 224
    p = params(h=h, w=w)
    ours_area = p["crop_h"] * p["crop_w"] / (h * w)
    ours_ratio = (p["crop_w"] / p["crop_h"]).log()
    torch.manual_seed(0)
    ref = torch.tensor(
        [RandomResizedCrop.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(N)],
        dtype=torch.float32,
    )
    ref_area = ref[:, 2] * ref[:, 3] / (h * w)
    ref_ratio = (ref[:, 3] / ref[:, 2]).log()
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(ours_area.quantile(q) - ref_area.quantile(q)) < 0.02, q
        assert abs(ours_ratio.quantile(q) - ref_ratio.quantile(q)) < 0.02, q
    assert ours_area.min() >= 0.08 - 0.01 and ours_area.max() <= 1.0
    assert ours_ratio.min() >= math.log(3 / 4) - 0.02 and ours_ratio.max() <= math.log(4 / 3) + 0.02
    # boxes lie inside the image
    assert (p["top"] >= 0).all() and (p["left"] >= 0).all()
    assert (p["top"] + p["crop_h"] <= h).all() and (p["left"] + p["crop_w"] <= w).all()


def test_event_rates():
    cfg = A.AugmentConfig(blur=True)
    p = params(cfg)
    assert binomial_ok(int(p["flip"].sum()), N, 0.5)
    assert binomial_ok(int(p["jitter"].sum()), N, 0.8)
    assert binomial_ok(int(p["gray"].sum()), N, 0.2)
    assert binomial_ok(int(p["blur"].sum()), N, 0.5)
    assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    assert abs(p["sigma"].mean() - 1.05) < 0.02


def test_jitter_factor_ranges_follow_strength():
    for s in (0.5, 1.0):
        p = params(A.AugmentConfig(color_strength=s))
        for k in ("brightness", "contrast", "saturation"):
            assert p[k].min() >= max(0, 1 - 0.8 * s) - 1e-6 and p[k].max() <= 1 + 0.8 * s + 1e-6
            assert abs(p[k].mean() - (max(0, 1 - 0.8 * s) + 1 + 0.8 * s) / 2) < 0.02
        assert p["hue"].abs().max() <= 0.2 * s + 1e-6 and abs(p["hue"].mean()) < 0.01


def test_order_is_a_uniform_permutation():
    p = params()
    order = p["order"]
    assert (order.sort(1).values == torch.arange(4)).all()
    counts = torch.unique(order, dim=0, return_counts=True)[1]
    assert len(counts) == 24 and all(binomial_ok(int(c), N, 1 / 24) for c in counts)


def test_switches_turn_ops_off():
    p = params(A.AugmentConfig(flip=False, color_strength=0.0, blur=False))
    assert not p["flip"].any() and not p["jitter"].any() and not p["blur"].any()


@pytest.mark.parametrize("size", [24, 64, 10])
def test_crop_resize_equals_torchvision_resized_crop(size):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(8, 3, 40, 30, generator=g)
    p = params(n=8, h=40, w=30)
    out = A.crop_resize(img, p, size)
    for i in range(8):
        t, l, ch, cw = (int(p[k][i]) for k in ("top", "left", "crop_h", "crop_w"))
        ref = TF.resized_crop(img[i], t, l, ch, cw, [size, size], antialias=True)
        if p["flip"][i]:
            ref = TF.horizontal_flip(ref)
        assert torch.allclose(out[i], ref, atol=1e-5), i


def test_colour_ops_equal_torchvision():
    """Each public colour op, with a per-row factor, against torchvision's function on that row."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 8, 8, generator=g)
    f = torch.tensor([0.6, 0.9, 1.2, 1.4])
    brightness, contrast, saturation = A.adjust_brightness(x, f), A.adjust_contrast(x, f), A.adjust_saturation(x, f)
    for i in range(4):
        assert torch.allclose(brightness[i], TF.adjust_brightness(x[i], float(f[i])), atol=1e-5)
        assert torch.allclose(contrast[i], TF.adjust_contrast(x[i], float(f[i])), atol=1e-5)
        assert torch.allclose(saturation[i], TF.adjust_saturation(x[i], float(f[i])), atol=1e-5)
    hue = torch.tensor([-0.2, -0.05, 0.1, 0.2])
    ours = A.adjust_hue(x, hue)
    for i in range(4):
        assert torch.allclose(ours[i], TF.adjust_hue(x[i], float(hue[i])), atol=1e-4)


def test_jitter_applies_ops_in_the_drawn_order():
    x = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    p = {
        "jitter": torch.tensor([True]),
        "brightness": torch.tensor([1.3]),
        "contrast": torch.tensor([0.7]),
        "saturation": torch.tensor([0.5]),
        "hue": torch.tensor([0.1]),
        "gray": torch.tensor([False]),
    }
    ops = [
        lambda y: TF.adjust_brightness(y, 1.3),
        lambda y: TF.adjust_contrast(y, 0.7),
        lambda y: TF.adjust_saturation(y, 0.5),
        lambda y: TF.adjust_hue(y, 0.1),
    ]
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        ref = x[0]
        for k in order:
            ref = ops[k](ref)
        out = A.color_distort(x, {**p, "order": torch.tensor([order])})
        assert torch.allclose(out[0], ref, atol=1e-4), order


def test_blur_equals_torchvision_gaussian_blur():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    p = {"blur": torch.tensor([True, False]), "sigma": torch.tensor([1.3, 1.0])}
    out = A.gaussian_blur(x, p)
    assert torch.allclose(out[0], TF.gaussian_blur(x[0], [7, 7], [1.3, 1.3]), atol=1e-5)  # 64 // 10 = 6 -> 7 taps
    assert torch.allclose(out[1], x[1], atol=1e-6)


def test_views_depend_only_on_seed_epoch_index_view():
    imgs = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    idx = torch.tensor([10, 11, 12, 13, 14])
    cfg = A.AugmentConfig(size=16)
    full = A.augment(imgs, idx, seed=1, epoch=2, view=0, cfg=cfg)
    part = A.augment(imgs[[3, 0]], idx[[3, 0]], seed=1, epoch=2, view=0, cfg=cfg)
    assert torch.equal(full[[3, 0]], part)  # batch composition does not matter
    assert not torch.equal(full, A.augment(imgs, idx, seed=1, epoch=2, view=1, cfg=cfg))
    assert not torch.equal(full, A.augment(imgs, idx, seed=1, epoch=3, view=0, cfg=cfg))
    assert not torch.equal(full, A.augment(imgs, idx, seed=2, epoch=2, view=0, cfg=cfg))


def test_augment_output_shape_and_grey_input():
    imgs = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    out = A.augment(imgs, torch.arange(3), seed=0, epoch=0, view=0, cfg=A.AugmentConfig(size=12, blur=True))
    assert out.shape == (3, 3, 12, 12) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_eval_view_is_deterministic_centre_crop():
    imgs = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    a, b = A.eval_view(imgs, 32), A.eval_view(imgs, 32)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)


def test_accelerator_select_path_equals_cpu_gather_path():
    """The accelerator path (compute all, select) gives the CPU path's values (only the CPU one runs here otherwise)."""
    imgs = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    p = params(A.AugmentConfig(size=16), n=64, h=16, w=16)
    x = A.crop_resize(A.to_float(imgs), p, 16)
    assert torch.allclose(A.color_distort(x, p, gather=False), A.color_distort(x, p, gather=True), atol=1e-6)


def test_without_colour_no_colour_op_runs(monkeypatch):
    """Crop and flip only (the supervised protocols' views, colour strength 0 and grayscale p 0): no colour op runs."""
    ran = []
    apply_to = A._apply_to
    monkeypatch.setattr(A, "_apply_to", lambda *a: ran.append(a[2]) or apply_to(*a))
    imgs = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    cfg = A.AugmentConfig(size=16, color_strength=0.0, gray_p=0.0)
    out = A.augment(imgs, torch.arange(8), seed=0, epoch=0, view=0, cfg=cfg)
    p = params(cfg, n=8, h=16, w=16)
    assert ran == [] and torch.allclose(out, A.normalize(A.crop_resize(A.to_float(imgs), p, 16)))
    A.augment(imgs, torch.arange(8), seed=0, epoch=0, view=0, cfg=A.AugmentConfig(size=16))
    assert len(ran) == 17  # with colour: 4 positions x 4 ops, then grayscale


@pytest.mark.cuda
@pytest.mark.parametrize("blur", [False, True])
def test_gpu_views_equal_cpu_views(blur):
    """The same keyed views on the GPU as on the CPU: identical draws, pixels equal up to float rounding."""
    torch.backends.cuda.matmul.allow_tf32 = False  # the crop's batched products in full float32
    imgs = torch.randint(0, 256, (256, 3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    index = torch.arange(1000, 1256)
    cfg = A.AugmentConfig(size=32, blur=blur)
    for view in range(2):
        cpu = A.augment(imgs, index, seed=7, epoch=2, view=view, cfg=cfg)
        gpu = A.augment(imgs.cuda(), index.cuda(), seed=7, epoch=2, view=view, cfg=cfg).cpu()
        diff = (cpu - gpu).abs().flatten()
        assert diff.quantile(0.999) < 1e-4 and diff.max() < 0.05, (diff.quantile(0.999), diff.max())
    hw = torch.full((256,), 40.0)
    pc = A.sample_params(index, hw, hw + 8, seed=7, epoch=2, view=0, cfg=cfg)
    pg = A.sample_params(index.cuda(), hw.cuda(), hw.cuda() + 8, seed=7, epoch=2, view=0, cfg=cfg)
    for key in ("flip", "jitter", "gray", "order", "blur"):
        assert torch.equal(pc[key], pg[key].cpu()), key


@pytest.mark.parametrize("h,w", [(4, 400), (400, 4)])
def test_crop_falls_back_to_torchvision_centre_crop_when_no_box_fits(h, w):
    """An image far outside the ratio range: no sampled box fits, so the crop is torchvision's fallback
    (the whole image, ratio clamped to [3/4, 4/3], centred), for every sample and every view."""
    cfg = A.AugmentConfig(size=8)
    n = 16
    p = A.sample_params(torch.arange(n), torch.full((n,), h), torch.full((n,), w), seed=0, epoch=0, view=0, cfg=cfg)
    top, left, ch, cw = RandomResizedCrop.get_params(
        torch.zeros(3, h, w), scale=(cfg.min_scale, cfg.max_scale), ratio=(cfg.min_ratio, cfg.max_ratio)
    )
    assert p["top"].tolist() == [top] * n and p["left"].tolist() == [left] * n
    assert p["crop_h"].tolist() == [ch] * n and p["crop_w"].tolist() == [cw] * n
    assert (ch, cw) == ((4, 5) if h == 4 else (5, 4))  # the short side kept, the long side at ratio 4/3


# --- the accelerator's colour path: fewer ops, same values ---------------------------------------


def _old_gray(x):
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _old_blend(a, b, f):
    f = f.view(-1, 1, 1, 1)
    return (f * a + (1 - f) * b).clamp(0, 1)


def _old_hue(x, shift):
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    d = delta.clamp_min(1e-12)
    h6 = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h6 = h6 + 6.0 * shift.view(-1, 1, 1)
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1) + h6[:, None], 6.0)
    return maxc[:, None] - delta[:, None] * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


_OLD_OPS = {
    "brightness": lambda x, f: (x * f.view(-1, 1, 1, 1)).clamp(0, 1),
    "contrast": lambda x, f: _old_blend(x, _old_gray(x).mean((1, 2, 3), keepdim=True), f),
    "saturation": lambda x, f: _old_blend(x, _old_gray(x), f),
    "hue": _old_hue,
}


def old_color_distort(x, p):
    """The former accelerator path, kept as the reference: at each of the 4 positions, all 4 ops on the
    whole batch, each selected where the sample drew it there (16 op evaluations), then grayscale."""
    for pos in range(4):
        for k, key in enumerate(_OLD_OPS):
            rows = (p["jitter"] & (p["order"][:, pos] == k)).view(-1, 1, 1, 1)
            x = torch.where(rows, _OLD_OPS[key](x, p[key]), x)
    return torch.where(p["gray"].view(-1, 1, 1, 1), _old_gray(x).expand_as(x), x)


def random_colour_case(n, seed):
    """Images with grey, black, white and saturated pixels, and params with every one of the 24 orders."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 6, 6, generator=g)
    x[:, :, 0, :] = x[:, :1, 0, :]  # a grey row (hue undefined: stays grey)
    x[:, :, 1, 0], x[:, :, 1, 1] = 0.0, 1.0
    x[:, 0, 2, :] = 1.0  # saturated red channel
    perms = torch.tensor(list(itertools.permutations(range(4))))
    p = {
        "order": perms[torch.arange(n) % 24][torch.randperm(n, generator=g)],
        "jitter": torch.rand(n, generator=g) < 0.8,
        "gray": torch.rand(n, generator=g) < 0.2,
        "brightness": 0.2 + 1.6 * torch.rand(n, generator=g),
        "contrast": 0.2 + 1.6 * torch.rand(n, generator=g),
        "saturation": 0.2 + 1.6 * torch.rand(n, generator=g),
        "hue": 0.4 * torch.rand(n, generator=g) - 0.2,
    }
    return x, p


@pytest.mark.parametrize("gather", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_colour_path_equals_the_sixteen_op_form(gather, seed):
    """Both colour paths give the old 16-evaluation form's values, for every per-sample order."""
    x, p = random_colour_case(240, seed)
    want = old_color_distort(x.clone(), p)
    got = A.color_distort(x, p, gather=gather)
    torch.testing.assert_close(got, want, rtol=0, atol=5e-6)
    assert torch.equal(x, random_colour_case(240, seed)[0])  # the input is left as it was


def test_jitter_slots_keep_each_samples_order():
    """The seven slots hold each sample's four ops in its drawn order, hue in slot 3; nothing without jitter."""
    perms = torch.tensor(list(itertools.permutations(range(4))))
    jitter = torch.arange(24) % 5 != 0
    slots = A._jitter_slots({"order": perms, "jitter": jitter})
    for order, row, j in zip(perms.tolist(), slots.tolist(), jitter.tolist()):
        if not j:
            assert row == [A._NOTHING] * A._SLOTS
            continue
        assert row[A._HUE] == A._HUE and [op for op in row if op != A._NOTHING] == order


class CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def test_accelerator_colour_path_op_count(monkeypatch):
    """The aten ops (kernel launches, on a GPU) of the sync-free colour path and of two views, counted
    by a dispatch mode: 95 and 373 on torch 2.14 (the former 16-evaluation colour path: 329, and two
    views: 1201). The bounds leave room for other torch versions' decompositions, not for a return
    to one op per (position, op) or per view."""
    monkeypatch.setattr(A, "gathers", lambda device: False)  # the accelerator's choice
    imgs = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    cfg = A.AugmentConfig()
    p = params(cfg, n=16)
    x = A.crop_resize(A.to_float(imgs), p, 32)
    A.views(imgs, torch.arange(16), seed=0, epoch=0, first=0, count=2, cfg=cfg)  # constants made once
    colour, both = CountOps(), CountOps()
    with colour:
        A.color_distort(x, p)
    with both:
        A.views(imgs, torch.arange(16), seed=0, epoch=0, first=0, count=2, cfg=cfg)
    assert sum(colour.ops.values()) <= 110, colour.ops
    assert sum(both.ops.values()) <= 420, both.ops
    assert not {"nonzero", "_local_scalar_dense", "index_select"} & set(both.ops)  # no gathering, no host sync


@pytest.mark.parametrize("gather", [True, False])
def test_views_in_one_batch_equal_each_view_alone(gather, monkeypatch):
    """views() runs all views through each op together; each row is bit for bit augment() of its view."""
    monkeypatch.setattr(A, "gathers", lambda device: gather)
    imgs = torch.randint(0, 256, (5, 3, 20, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    idx = torch.tensor([3, 1, 4, 15, 9])
    cfg = A.AugmentConfig(size=16, blur=True)
    both = A.views(imgs, idx, seed=2, epoch=1, first=1, count=3, cfg=cfg)
    for v in range(3):
        assert torch.equal(both[5 * v : 5 * (v + 1)], A.augment(imgs, idx, seed=2, epoch=1, view=1 + v, cfg=cfg))


@pytest.mark.parametrize("size,min_scale,aspect", [(96, 0.08, 1.0), (32, 0.2, 2.5), (224, 0.08, 4 / 3)])
def test_every_crop_of_an_image_at_the_source_side_spans_the_view(size, min_scale, aspect):
    """The reduced JPEG scale the files tier decodes at: at ``crop_source_side`` pixels a side, 20,000 keyed crops
    (the smallest areas, the most extreme ratios among them) are all at least the view's size across."""
    cfg = A.AugmentConfig(size=size, min_scale=min_scale)
    side = A.crop_source_side(cfg)
    assert side == math.ceil(size / math.sqrt(min_scale * 3 / 4))
    h, w = side, round(side * aspect)  # the short side at the source side, the long one as the photo has it
    n = 20000
    p = A.sample_params(torch.arange(n), torch.full((n,), float(h)), torch.full((n,), float(w)), seed=1, epoch=0,
                        view=0, cfg=cfg)  # fmt: skip
    assert torch.minimum(p["crop_h"], p["crop_w"]).min() >= size - 1  # a pixel of rounding
    below = A.sample_params(torch.arange(n), torch.full((n,), h / 2), torch.full((n,), w / 2), seed=1, epoch=0,
                            view=0, cfg=cfg)  # fmt: skip
    assert torch.minimum(below["crop_h"], below["crop_w"]).min() < size  # half the side is not enough
