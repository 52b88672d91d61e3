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


def _constant(name: str, values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``values`` as a [1, len, 1, 1] tensor on ``device``, copied there the first time only."""
    key = (name, torch.device(device), dtype)
    t = _CONSTANTS.get(key)
    if t is None:
        t = _CONSTANTS[key] = torch.tensor(values, dtype=dtype).view(1, -1, 1, 1).to(device)
    return t


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
    view numbers after the full-size ones, so each view keeps its own keyed draws."""
    return torch.cat([augment(images, index, seed=seed, epoch=epoch, view=first + v, cfg=cfg) for v in range(count)])


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
    u = keyed_uniform(seed, epoch, index, view, _DRAWS)  # [N, DRAWS]
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
    fallback when none fits: a centre crop of the whole image with the aspect ratio clamped.
    """
    area = h_img * w_img
    tries = u.view(-1, _CROP_TRIES, 4)
    target = area[:, None] * (cfg.min_scale + (cfg.max_scale - cfg.min_scale) * tries[..., 0])
    log_lo, log_hi = math.log(cfg.min_ratio), math.log(cfg.max_ratio)
    ratio = torch.exp(log_lo + (log_hi - log_lo) * tries[..., 1])
    cw = torch.round(torch.sqrt(target * ratio))
    ch = torch.round(torch.sqrt(target / ratio))
    ok = (cw > 0) & (cw <= w_img[:, None]) & (ch > 0) & (ch <= h_img[:, None])  # [N, T]
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full_like(ok[:, 0], -1, dtype=torch.long))
    pick = first.clamp_min(0)[:, None]
    crop_w = cw.gather(1, pick)[:, 0]
    crop_h = ch.gather(1, pick)[:, 0]
    # top/left uniform over valid integer offsets, as randint(0, H - h + 1)
    top = torch.floor(tries[..., 2].gather(1, pick)[:, 0] * (h_img - crop_h + 1))
    left = torch.floor(tries[..., 3].gather(1, pick)[:, 0] * (w_img - crop_w + 1))
    in_ratio = w_img / h_img
    fb_w = torch.where(
        in_ratio < cfg.min_ratio,
        w_img,
        torch.where(in_ratio > cfg.max_ratio, torch.round(h_img * cfg.max_ratio), w_img),
    )
    fb_h = torch.where(in_ratio < cfg.min_ratio, torch.round(w_img / cfg.min_ratio), h_img)
    fb_h = torch.where(in_ratio > cfg.max_ratio, h_img, fb_h)
    failed = first < 0
    crop_w = torch.where(failed, fb_w, crop_w)
    crop_h = torch.where(failed, fb_h, crop_h)
    top = torch.where(failed, torch.floor((h_img - crop_h) / 2), top)
    left = torch.where(failed, torch.floor((w_img - crop_w) / 2), left)
    return top, left, crop_h, crop_w


def _colour_params(j: torch.Tensor, cfg: AugmentConfig) -> dict[str, torch.Tensor]:
    """Colour jitter draws from ``j`` [N, 9] uniforms: whether it applies, the four factors, their order.

    Strength s scales brightness, contrast and saturation to [max(0, 1 - 0.8 s), 1 + 0.8 s] and hue to
    [-0.2 s, 0.2 s] (the paper's appendix A, ``color_distortion(s)``).
    """
    s = cfg.color_strength
    lo = max(0.0, 1 - 0.8 * s)
    return {
        "jitter": (j[:, 0] < cfg.color_p) if s > 0 else torch.zeros_like(j[:, 0], dtype=torch.bool),
        "brightness": lo + (1 + 0.8 * s - lo) * j[:, 1],
        "contrast": lo + (1 + 0.8 * s - lo) * j[:, 2],
        "saturation": lo + (1 + 0.8 * s - lo) * j[:, 3],
        "hue": 0.2 * s * (2 * j[:, 4] - 1),
        "order": j[:, 5:9].argsort(dim=1),  # a uniform random permutation of the 4 ops
    }


def _resample_weights(
    start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Per-sample 1-d resampling matrices [N, out_size, in_size] for a crop [start, start + length).

    The triangle (bilinear) filter with half-pixel centres, widened by the downscale factor so
    that shrinking low-pass filters (antialiasing), truncated to the crop and renormalised: the
    filter of PIL and of torchvision's ``resize(..., antialias=True)``. For upscaling it is plain
    bilinear interpolation clamped to the crop.
    """
    scale = (length / out_size).to(dtype)  # [N] input pixels per output pixel
    support = scale.clamp_min(1.0)
    o = torch.arange(out_size, device=start.device, dtype=dtype) + 0.5
    centre = start.to(dtype)[:, None] + o[None, :] * scale[:, None]  # [N, out]
    i = torch.arange(in_size, device=start.device, dtype=dtype) + 0.5  # input pixel centres
    w = (1 - ((i[None, None, :] - centre[:, :, None]) / support[:, None, None]).abs()).clamp_min(0)  # [N, out, in]
    inside = (i[None, :] > start.to(dtype)[:, None]) & (i[None, :] < (start + length).to(dtype)[:, None])  # [N, in]
    w = w * inside[:, None, :]
    return w / w.sum(2, keepdim=True).clamp_min(1e-12)


def crop_resize(images: torch.Tensor, p: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Crop each image to its box, resize to size x size and flip where asked, as two batched matmuls.

    out = Wy @ image @ Wx^T (each channel) with per-sample resampling matrices (:func:`_resample_weights`); the
    flip reverses Wx's rows. Equals torchvision's ``resized_crop(..., antialias=True)`` (then
    ``hflip``) up to float rounding, for upscaling and downscaling alike.

    Args:
        images: float [N, C, H, W]. Returns: float [N, C, size, size].
    """
    _, _, h, w = images.shape
    wy = _resample_weights(p["top"], p["crop_h"], h, size, images.dtype)  # [N, S, H]
    wx = _resample_weights(p["left"], p["crop_w"], w, size, images.dtype)  # [N, S, W]
    wx = torch.where(p["flip"].view(-1, 1, 1), wx.flip(1), wx)
    n, c, _, _ = images.shape
    rows = torch.bmm(images.reshape(n, c * h, w), wx.transpose(1, 2))  # [N, C*H, S]: columns resampled
    rows = rows.view(n, c, h, size).transpose(1, 2).reshape(n, h, c * size)  # [N, H, C*S]
    out = torch.bmm(wy, rows)  # [N, S, C*S]: rows resampled (two batched products, channels folded in)
    return out.view(n, size, c, size).transpose(1, 2).contiguous()


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images, [N, 3, H, W] -> [N, 1, H, W] (torchvision's weights)."""
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * a + (1 - f) * b).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (fraction of a turn, [N]) in HSV space; value and saturation kept.

    Same function as torchvision's adjust_hue (RGB -> HSV, shift, HSV -> RGB), written with the
    closed form HSV -> RGB: c_n = V - (V - min) * clamp(min(k, 4 - k), 0, 1), k = (n + 6H) mod 6,
    n = 5, 3, 1 for R, G, B, which needs a handful of full-tensor ops instead of a six-way select.
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)  # elementwise: much faster than a reduction with indices
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    d = delta.clamp_min(1e-12)
    h6 = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h6 = h6 + 6.0 * shift.view(-1, 1, 1)  # grey pixels (delta = 0) stay grey whatever their hue
    n = _constant("hue", _HUE_N, x.device, x.dtype)  # [1, 3, 1, 1]
    k = torch.remainder(n + h6.unsqueeze(1), 6.0)  # [N, 3, H, W]
    return maxc.unsqueeze(1) - delta.unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor.view(-1, 1, 1, 1)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), factor)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
_JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")


def gathers(device: torch.device) -> bool:
    """Whether the colour ops compute only the samples that drew them (True on the CPU).

    Gathering needs ``nonzero``, a host synchronisation: free on the CPU, a stall on an accelerator,
    where every sample is computed and the result selected instead.
    """
    return device.type == "cpu"


def _apply_to(x: torch.Tensor, rows: torch.Tensor, op, factor: torch.Tensor, gather: bool) -> torch.Tensor:
    """x with ``op`` applied to the samples where ``rows`` (bool [N]) is set.

    ``gather`` computes only those samples (see :func:`gathers`); otherwise every sample is computed
    and the result selected, so the step never waits on the host. Both give the same values.
    """
    if gather:
        idx = rows.nonzero().flatten()
        if idx.numel():
            x.index_copy_(0, idx, op(x.index_select(0, idx), factor.index_select(0, idx)))
        return x
    return torch.where(rows.view(-1, 1, 1, 1), op(x, factor), x)


def color_distort(
    x: torch.Tensor, p: dict[str, torch.Tensor], gather: bool | None = None, *, jitter: bool = True, gray: bool = True
) -> torch.Tensor:
    """Colour jitter in a per-sample random order (where p["jitter"]), then random grayscale.

    At each of the four positions every jittered sample runs the one op its permutation puts there.
    ``gather`` (default: :func:`gathers`) computes each op on just the samples that drew it.
    ``jitter`` / ``gray`` False skip an op that no sample can draw (colour strength or p of 0): the
    supervised protocols' crop-and-flip views run no colour op at all.
    """
    gather = gathers(x.device) if gather is None else gather
    x = x.clone()
    for pos in range(4 if jitter else 0):
        op_here = p["order"][:, pos]
        for k, (op, key) in enumerate(zip(_JITTER_OPS, _JITTER_KEYS)):
            x = _apply_to(x, p["jitter"] & (op_here == k), op, p[key], gather)
    return _apply_to(x, p["gray"], _to_gray, p["gray"], gather) if gray else x


def _to_gray(x: torch.Tensor, _unused: torch.Tensor) -> torch.Tensor:
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
    n, _, h, w = images.shape
    heights = torch.full((n,), float(h), device=images.device)  # [N]
    widths = torch.full((n,), float(w), device=images.device)
    p = sample_params(index.to(images.device), heights, widths, seed=seed, epoch=epoch, view=view, cfg=cfg)
    x = crop_resize(to_float(images), p, cfg.size)
    return normalize(apply_pixel_ops(x, p, cfg))


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
