"""SimCLR's augmentation on batched tensors (Chen et al. 2020, Appendix A).

Each view is drawn independently: random resized crop and horizontal flip, colour jitter
(brightness, contrast, saturation, hue in random order) with p = 0.8, grayscale with p = 0.2,
optional Gaussian blur with p = 0.5. Multi-crop (Caron et al. 2020, SwAV section 3.2) adds small
low-resolution views drawn the same way from a smaller crop-area range (:func:`small_view_config`).
Every random number comes from :mod:`fastclr.method.rng`, keyed
on (seed, epoch, sample index, view), so one sample gets the same views on any device, batch
composition or process count. The ops follow torchvision's definitions (same factor ranges,
same grayscale weights, clamping after each op) but run on a whole batch [N, C, H, W] at once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastclr.method.rng import keyed_uniform

# ImageNet channel statistics: one fixed normalisation for every data set, so exported
# encoders expect the inputs torchvision models expect.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_HUE_N = (5.0, 3.0, 1.0)  # the closed-form HSV -> RGB offsets of R, G, B (adjust_hue)
_CROP_TRIES = 10  # torchvision RandomResizedCrop.get_params attempts

# Constant tensors, made once per (device, dtype): ``torch.tensor(python_list, device=cuda)`` is a
# blocking host-to-device copy, and one inside the step would stall the queue of GPU work.
_CONSTANTS: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}


def _cached(name: str, device: torch.device, dtype: torch.dtype, make) -> torch.Tensor:
    """The constant tensor ``make()`` (on ``device``) under ``name``: made the first time only."""
    key = (name, torch.device(device), dtype)
    t = _CONSTANTS.get(key)
    if t is None:
        t = _CONSTANTS[key] = make()
    return t


def _constant(name: str, values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``values`` as a [1, len, 1, 1] tensor on ``device``, copied there the first time only."""
    return _cached(name, device, dtype, lambda: torch.tensor(values, dtype=dtype).view(1, -1, 1, 1).to(device))


@dataclass(frozen=True)
class AugmentConfig:
    """What a view may look like. The presets in configs/ set these per data set."""

    size: int = 32  # output side in pixels
    min_scale: float = 0.08  # smallest crop area fraction (paper: 0.08)
    max_scale: float = 1.0
    min_ratio: float = 3 / 4  # aspect ratio range, sampled log-uniformly
    max_ratio: float = 4 / 3
    flip: bool = True  # horizontal flip with p = 0.5 (off for digits and text)
    color_strength: float = 0.5  # s: 1.0 ImageNet, 0.5 CIFAR
    color_p: float = 0.8
    gray_p: float = 0.2
    blur: bool = False  # ImageNet-size images only
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)


def crop_source_side(cfg: AugmentConfig) -> int:
    """The smallest image side at which every random resized crop of ``cfg`` still spans ``cfg.size`` pixels.

    A crop of area fraction s and aspect ratio r of an image whose short side is L has sides of at least
    L * sqrt(s * min(r, 1/r)); at the smallest s and the most extreme r that is ``cfg.size`` when L is this
    side (392 px for 96-px views, min_scale 0.08, r in [3/4, 4/3]). A large photo decoded at a reduced scale
    with sides at least this long (a JPEG's DCT scaling) gives every crop all the pixels it is resized to.
    """
    extreme = min(cfg.min_ratio, 1 / cfg.min_ratio, cfg.max_ratio, 1 / cfg.max_ratio)
    return math.ceil(cfg.size / math.sqrt(max(cfg.min_scale, 1e-6) * extreme))


def small_view_size(image_size: int, setting: int = 0) -> int:
    """The side of multi-crop's small views: ``setting``, or 0 for 3/7 of ``image_size`` (SwAV's 96 of
    224, Caron et al. 2020 section 3.2), at least 8 pixels."""
    return setting or max(8, round(image_size * 3 / 7))


def small_view_config(cfg: AugmentConfig, size: int, min_scale: float, max_scale: float) -> AugmentConfig:
    """Multi-crop's small views (SwAV section 3.2): the full-size views' settings (aspect ratios, flip,
    colour, blur) with a ``size`` x ``size`` output and a crop area fraction uniform in [min_scale, max_scale]."""
    return dataclasses.replace(cfg, size=size, min_scale=min_scale, max_scale=max_scale)


def views(
    images: torch.Tensor, index: torch.Tensor, *, seed: int, epoch: int, first: int, count: int, cfg: AugmentConfig
) -> torch.Tensor:
    """Views ``first`` .. ``first + count - 1`` of each image, view-major: uint8 [b, C, H, W] -> float32
    [count*b, 3, S, S] (row v*b + i is view first + v of sample i). Multi-crop's small views take the
    view numbers after the full-size ones, so each view keeps its own keyed draws.

    On an accelerator all ``count`` views go through each op together, as one batch of count*b rows
    (each op's kernels launch once, not once per view); on the CPU (:func:`gathers`) one view at a
    time, whose smaller tensors stay in cache. Every op works row by row, so either way row v*b + i is
    exactly :func:`augment` of view first + v.
    """
    if count > 1 and gathers(images.device):
        return torch.cat([_views(images, index, seed, epoch, first + v, 1, cfg) for v in range(count)])
    return _views(images, index, seed, epoch, first, count, cfg)


def _views(
    images: torch.Tensor, index: torch.Tensor, seed: int, epoch: int, first: int, count: int, cfg: AugmentConfig
) -> torch.Tensor:
    """:func:`views` as one batch of count*b rows."""
    n, _, h, w = images.shape
    index = index.to(images.device)
    u = torch.cat([keyed_uniform(seed, epoch, index, first + v, _DRAWS) for v in range(count)])  # [count*n, DRAWS]
    heights = torch.full((n * count,), float(h), device=images.device)  # on the device: no host sync
    widths = heights if w == h else torch.full_like(heights, float(w))
    p = _params_from_uniforms(u, heights, widths, cfg)
    x = _crop_resize(to_float(images), p, cfg.size, count)
    return normalize(apply_pixel_ops(x, p, cfg))


# Slots of the keyed draws for one view; fixed so that adding an op never shifts another's numbers.
_S_CROP = 0  # 4 numbers per try: area, log-ratio, top, left
_S_FLIP = _S_CROP + 4 * _CROP_TRIES
_S_JITTER = _S_FLIP + 1  # apply, 4 factors, 4 order keys
_S_GRAY = _S_JITTER + 9
_S_BLUR = _S_GRAY + 1  # apply, sigma
_DRAWS = _S_BLUR + 2


def sample_params(
    index: torch.Tensor,
    heights: torch.Tensor,
    widths: torch.Tensor,
    *,
    seed: int,
    epoch: int,
    view: int,
    cfg: AugmentConfig,
) -> dict[str, torch.Tensor]:
    """Per-sample random parameters of one view.

    Args:
        index: int64 [N] global sample indices.
        heights, widths: [N] source image sizes in pixels (crop boxes are in these units).
    Returns:
        dict of [N] tensors: top, left, crop_h, crop_w (pixels, float), flip (bool), jitter (bool),
        brightness, contrast, saturation, hue, order ([N, 4] int64 permutation), gray (bool),
        blur (bool), sigma.
    """
    return _params_from_uniforms(keyed_uniform(seed, epoch, index, view, _DRAWS), heights, widths, cfg)


def _params_from_uniforms(
    u: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor, cfg: AugmentConfig
) -> dict[str, torch.Tensor]:
    """:func:`sample_params` from the keyed draws ``u`` [N, DRAWS] (rows of any views, stacked)."""
    top, left, crop_h, crop_w = _crop_boxes(u[:, _S_CROP:_S_FLIP], heights.to(u), widths.to(u), cfg)
    no = torch.zeros_like(top, dtype=torch.bool)
    return {
        "top": top,
        "left": left,
        "crop_h": crop_h,
        "crop_w": crop_w,
        "flip": (u[:, _S_FLIP] < 0.5) if cfg.flip else no,
        **_colour_params(u[:, _S_JITTER:_S_GRAY], cfg),
        "gray": u[:, _S_GRAY] < cfg.gray_p,
        "blur": (u[:, _S_BLUR] < cfg.blur_p) if cfg.blur else no,
        "sigma": cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * u[:, _S_BLUR + 1],
    }


def _crop_boxes(
    u: torch.Tensor, h_img: torch.Tensor, w_img: torch.Tensor, cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random resized crop boxes (top, left, crop_h, crop_w) from ``u`` [N, 4 * tries] uniforms.

    torchvision's rejection sampling with all tries at once (the first valid one wins), then its
    fallback when none fits: a centre crop of the whole image with the aspect ratio clamped. The
    fallback box is appended as a last try that always fits, so one argmax and one gather pick the box.
    """
    tries = u.view(-1, _CROP_TRIES, 4)
    hw = torch.stack((h_img, w_img), 1).view(-1, 1, 2)  # [N, 1, 2]: (height, width) pairs
    h, w = hw.unbind(2)  # [N, 1]
    target = (h * w) * (cfg.min_scale + (cfg.max_scale - cfg.min_scale) * tries[..., 0])
    log_lo, log_hi = math.log(cfg.min_ratio), math.log(cfg.max_ratio)
    ratio = torch.exp(log_lo + (log_hi - log_lo) * tries[..., 1])
    size = torch.stack((torch.sqrt(target / ratio), torch.sqrt(target * ratio)), 2).round()  # [N, T, 2]: ch, cw
    ok = ((size > 0) & (size <= hw)).all(2)  # [N, T]
    # top/left uniform over valid integer offsets, as randint(0, H - h + 1)
    corner = torch.floor(tries[..., 2:] * (hw - size + 1))  # [N, T, 2]: top, left
    # the fallback: the whole image with its aspect ratio clamped to [min_ratio, max_ratio], centred
    # (the short side kept: min(h, w / min_ratio) equals torchvision's test of w / h < min_ratio, as h is whole)
    fb_size = torch.minimum(hw, torch.stack((w / cfg.min_ratio, h * cfg.max_ratio), 2).round())  # [N, 1, 2]
    fallback = torch.cat((torch.div(hw - fb_size, 2, rounding_mode="floor"), fb_size), 2)  # [N, 1, 4]
    boxes = torch.cat((torch.cat((corner, size), 2), fallback), 1)  # [N, T + 1, 4]: top, left, crop_h, crop_w
    first = F.pad(ok.float(), (0, 1), value=1.0).argmax(1)  # the first valid try; T (the fallback) if none
    top, left, crop_h, crop_w = boxes.gather(1, first.view(-1, 1, 1).expand(-1, 1, 4)).view(-1, 4).unbind(1)
    return top, left, crop_h, crop_w


def _colour_params(j: torch.Tensor, cfg: AugmentConfig) -> dict[str, torch.Tensor]:
    """Colour jitter draws from ``j`` [N, 9] uniforms: whether it applies, the four factors, their order.

    Strength s scales brightness, contrast and saturation to [max(0, 1 - 0.8 s), 1 + 0.8 s] and hue to
    [-0.2 s, 0.2 s] (the paper's appendix A, ``color_distortion(s)``).
    """
    s = cfg.color_strength
    lo = max(0.0, 1 - 0.8 * s)
    brightness, contrast, saturation = (lo + (1 + 0.8 * s - lo) * j[:, 1:4]).unbind(1)
    return {
        "jitter": (j[:, 0] < cfg.color_p) if s > 0 else torch.zeros_like(j[:, 0], dtype=torch.bool),
        "brightness": brightness,
        "contrast": contrast,
        "saturation": saturation,
        "hue": 0.2 * s * (2 * j[:, 4] - 1),
        "order": j[:, 5:9].argsort(dim=1),  # a uniform random permutation of the 4 ops
    }


def _grid(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel centres 0.5 .. n - 0.5 as a [n] tensor on ``device`` (made once: a constant of the step)."""
    return _cached(f"grid{n}", device, dtype, lambda: torch.arange(n, device=device, dtype=dtype) + 0.5)


def _resample_weights(
    start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Per-sample 1-d resampling matrices [N, out_size, in_size] for a crop [start, start + length).

    The triangle (bilinear) filter with half-pixel centres, widened by the downscale factor so
    that shrinking low-pass filters (antialiasing), truncated to the crop and renormalised: the
    filter of PIL and of torchvision's ``resize(..., antialias=True)``. For upscaling it is plain
    bilinear interpolation clamped to the crop.
    """
    start = start.to(dtype).view(-1, 1, 1)
    length = length.to(dtype).view(-1, 1, 1)
    scale = length / out_size  # [N, 1, 1] input pixels per output pixel
    support = scale.clamp_min(1.0)
    centre = start + _grid(out_size, start.device, dtype).view(1, -1, 1) * scale  # [N, out, 1]
    i = _grid(in_size, start.device, dtype).view(1, 1, -1)  # [1, 1, in] input pixel centres
    w = (1 - ((i - centre) / support).abs()).clamp_min(0)  # [N, out, in]
    inside = (i > start) & (i < start + length)  # [N, 1, in]
    w = w * inside
    return w / w.sum(2, keepdim=True).clamp_min(1e-12)


def crop_resize(images: torch.Tensor, p: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Crop each image to its box, resize to size x size and flip where asked, as two batched matmuls.

    out = Wy @ image @ Wx^T (each channel) with per-sample resampling matrices (:func:`_resample_weights`); the
    flip reverses Wx's rows. Equals torchvision's ``resized_crop(..., antialias=True)`` (then
    ``hflip``) up to float rounding, for upscaling and downscaling alike.

    Args:
        images: float [N, C, H, W]. Returns: float [N, C, size, size].
    """
    return _crop_resize(images, p, size, 1)


def _crop_resize(images: torch.Tensor, p: dict[str, torch.Tensor], size: int, count: int) -> torch.Tensor:
    """:func:`crop_resize` of ``count`` views of each image: p holds count*N rows, view-major."""
    n, c, h, w = images.shape
    rows = n * count
    # both axes' matrices in one pass: rows [0, rows) are Wy, [rows, 2 rows) Wx; zero past each side
    both = _resample_weights(
        torch.cat((p["top"], p["left"])), torch.cat((p["crop_h"], p["crop_w"])), max(h, w), size, images.dtype
    )
    wy, wx = both.split(rows)
    if h < w:
        wy = wy[..., :h]  # [rows, S, H]
    if w < h:
        wx = wx[..., :w]  # [rows, S, W]
    wx = torch.where(p["flip"].view(-1, 1, 1), wx.flip(1), wx)
    src = images.expand(count, n, c, h, w) if count > 1 else images  # each view reads the same pixels
    x = torch.bmm(src.reshape(rows, c * h, w), wx.transpose(1, 2))  # [rows, C*H, S]: columns resampled
    x = x.view(rows, c, h, size).transpose(1, 2).reshape(rows, h, c * size)  # [rows, H, C*S]
    out = torch.bmm(wy, x)  # [rows, S, C*S]: rows resampled (two batched products, channels folded in)
    return out.view(rows, size, c, size).transpose(1, 2).contiguous()


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images, [N, 3, H, W] -> [N, 1, H, W] (torchvision's weights)."""
    return (x * _constant("gray", _GRAY, x.device, x.dtype)).sum(1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """clamp(f a + (1 - f) b) per sample, f = factor [N]."""
    return torch.lerp(b, a, factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (fraction of a turn, [N]) in HSV space; value and saturation kept.

    Same function as torchvision's adjust_hue (RGB -> HSV, shift, HSV -> RGB), written with the
    closed form HSV -> RGB: c_n = V - (V - min) * clamp(min(k, 4 - k), 0, 1), k = (n + 6H) mod 6,
    n = 5, 3, 1 for R, G, B, which needs a handful of full-tensor ops instead of a six-way select.
    """
    r, g, b = x.split(1, 1)  # [N, 1, H, W] each
    maxc = x.amax(1, keepdim=True)  # no indices: faster than max(1) or a chain of maximum
    minc = x.amin(1, keepdim=True)
    delta = maxc - minc
    d = delta.clamp_min(1e-12)
    h6 = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h6 = h6 + 6.0 * shift.view(-1, 1, 1, 1)  # grey pixels (delta = 0) stay grey whatever their hue
    n = _constant("hue", _HUE_N, x.device, x.dtype)  # [1, 3, 1, 1]
    k = torch.remainder(n + h6, 6.0)  # [N, 3, H, W]
    return maxc - delta * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), factor)


def _blend_toward(x: torch.Tensor, f: torch.Tensor, luma: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation in one op: clamp(f x + (1 - f) t), per sample.

    The target t = luma * L + mean * mean(L), L the luma of x, arguments [N, 1, 1, 1]: t = 0
    (luma = mean = 0) is brightness, the mean luma (mean = 1) contrast, the luma (luma = 1) saturation.
    """
    lum = grayscale(x)
    target = torch.addcmul(mean * lum.mean((2, 3), keepdim=True), luma, lum)  # [N, 1, H, W]
    return torch.lerp(target, x, f).clamp_(0, 1)


_HUE = 3  # op numbers in p["order"]: 0 brightness, 1 contrast, 2 saturation, 3 hue
_NOTHING = 4  # a slot where the sample runs no op
_SLOTS = 7  # blend, blend, blend, hue, blend, blend, blend


def _jitter_slots(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The op each sample runs in each of seven slots, int64 [N, 7] (0-2 the blends, 3 hue, 4 nothing).

    A sample's four ops in its drawn order, shifted so that its hue falls in slot 3: the ops before its
    hue fill slots 0-2 from the right, those after it slots 4-6 from the left, the other slots run
    nothing (all seven for a sample without jitter). With k the position of hue, slot s holds position
    s + k - 3. Every sample keeps its order, and the hue, the costly op, runs once per batch.
    """
    order = p["order"]
    hue_at = (order == _HUE).to(torch.uint8).argmax(1, keepdim=True)  # [N, 1]: k
    pad = torch.full_like(order[:, :3], _NOTHING)
    arange = _cached("slots", order.device, torch.int64, lambda: torch.arange(_SLOTS, device=order.device))
    slots = torch.cat((pad, order, pad), 1).gather(1, hue_at + arange)  # padded index s + k: position s + k - 3
    return torch.where(p["jitter"][:, None], slots, _NOTHING)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
_JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")


def gathers(device: torch.device) -> bool:
    """Whether the colour ops compute only the samples that drew them (True on the CPU).

    Gathering needs ``nonzero``, a host synchronisation: free on the CPU, a stall on an accelerator,
    where every sample is computed and the result selected instead. The CPU also augments one view
    at a time (:func:`views`): there small tensors that stay in cache beat fewer, larger ops, while
    an accelerator gains from launching each op once for all views.
    """
    return device.type == "cpu"


def _apply_to(x: torch.Tensor, rows: torch.Tensor, op, params: tuple[torch.Tensor, ...], gather: bool) -> torch.Tensor:
    """x with ``op(x, *params)`` applied to the samples where ``rows`` (bool [N]) is set.

    ``gather`` computes only those samples (see :func:`gathers`); otherwise every sample is computed
    and the result selected, so the step never waits on the host. Both give the same values.
    """
    if gather:
        idx = rows.nonzero().flatten()
        if idx.numel():
            x.index_copy_(0, idx, op(x.index_select(0, idx), *(t.index_select(0, idx) for t in params)))
        return x
    return torch.where(rows.view(-1, 1, 1, 1), op(x, *params), x)


def color_distort(
    x: torch.Tensor, p: dict[str, torch.Tensor], gather: bool | None = None, *, jitter: bool = True, gray: bool = True
) -> torch.Tensor:
    """Colour jitter in a per-sample random order (where p["jitter"]), then random grayscale.

    Every jittered sample runs brightness, contrast, saturation and hue in the order p["order"] draws
    for it (torchvision's ColorJitter). ``gather`` (default: :func:`gathers`) computes each op, at each
    of the four positions, on just the samples that drew it there: 16 small ops, each on about a
    fifth of the batch (cheapest on a CPU). Without it (an accelerator: no host sync) seven slots run on
    the whole batch, one hue and six blends that each sample's order fills (:func:`_jitter_in_slots`),
    instead of every op at every position. ``jitter`` / ``gray`` False skip an op that no sample can
    draw (colour strength or p of 0): the supervised protocols' crop-and-flip views run no colour op.
    """
    gather = gathers(x.device) if gather is None else gather
    if gather:
        x = x.clone()  # written in place
        for pos in range(4 if jitter else 0):
            op_here = p["order"][:, pos]
            for k, (op, key) in enumerate(zip(_JITTER_OPS, _JITTER_KEYS)):
                x = _apply_to(x, p["jitter"] & (op_here == k), op, (p[key],), gather)
    elif jitter:
        x = _jitter_in_slots(x, p)
    return _apply_to(x, p["gray"], _to_gray, (), gather) if gray else x


def _jitter_in_slots(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Colour jitter of the whole batch in the seven slots of :func:`_jitter_slots`, no gathering.

    A blend slot is one :func:`_blend_toward` with each sample's factor and target (f = 1 towards 0
    where the sample has no blend there: unchanged but for the clamp to [0, 1], so no select); the
    hue slot one :func:`adjust_hue`, selected where p["jitter"].
    """
    slots = _jitter_slots(p)  # [N, 7]
    n = slots.shape[0]
    one = torch.ones_like(p["brightness"])
    factor = torch.stack((p["brightness"], p["contrast"], p["saturation"], one, one), 1).gather(1, slots)
    # slot s: entries 3s .. 3s + 2 are the factor and the weights of the luma (saturation's target)
    # and of the mean luma (contrast's), [N, 1, 1, 1] each
    coef = torch.stack((factor, slots == 2, slots == 1), 2).to(x.dtype).view(n, 3 * _SLOTS, 1, 1, 1).unbind(1)
    for s in range(_SLOTS):
        if s == _HUE:
            x = _apply_to(x, p["jitter"], adjust_hue, (p["hue"],), False)
        else:
            x = _blend_toward(x, *coef[3 * s : 3 * s + 3])
    return x


def _to_gray(x: torch.Tensor) -> torch.Tensor:
    return grayscale(x).expand_as(x)


def gaussian_blur(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample Gaussian blur where p["blur"]; kernel side 10% of the image (odd), reflect padding."""
    n, c, h, _ = x.shape
    radius = max(h // 10 // 2, 1)  # reference code: kernel = (H // 10) rounded up to odd
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    sigma = p["sigma"].to(x.dtype).view(-1, 1)
    k = torch.exp(-(taps[None, :] ** 2) / (2 * sigma**2))
    k = k / k.sum(1, keepdim=True)
    delta = (taps == 0).to(x.dtype).expand_as(k)
    k = torch.where(p["blur"].view(-1, 1), k, delta)  # [N, K]; identity kernel where not blurred
    k = k.repeat_interleave(c, 0)  # one kernel per (sample, channel)
    y = F.pad(x.reshape(1, n * c, h, -1), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view_as(x)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Subtract the channel mean and divide by the std (float [N, 3, H, W] in [0, 1])."""
    return (x - _constant("mean", MEAN, x.device, x.dtype)) / _constant("std", STD, x.device, x.dtype)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 in [0, 1], grey images broadcast to 3 channels."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def augment(
    images: torch.Tensor,
    index: torch.Tensor,
    *,
    seed: int,
    epoch: int,
    view: int,
    cfg: AugmentConfig,
) -> torch.Tensor:
    """One random view of each image: uint8 [N, C, H, W] -> normalised float32 [N, 3, S, S].

    No host synchronisation: the image sizes are filled in on the device, not copied from a list.
    """
    return _views(images, index, seed, epoch, view, 1, cfg)


def apply_pixel_ops(x: torch.Tensor, p: dict[str, torch.Tensor], cfg: AugmentConfig) -> torch.Tensor:
    """Everything after the crop: colour distortion, grayscale, blur. float [N, 3, S, S] in [0, 1]."""
    x = color_distort(x, p, jitter=cfg.color_strength > 0 and cfg.color_p > 0, gray=cfg.gray_p > 0)
    if cfg.blur:
        x = gaussian_blur(x, p)
    return x


def eval_view(images: torch.Tensor, size: int) -> torch.Tensor:
    """The deterministic evaluation view: resize the short side to size, centre crop, normalise."""
    x = to_float(images)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top : top + size, left : left + size]
    return normalize(x)
