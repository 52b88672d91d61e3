"""SimCLR's augmentation on batched tensors (Chen et al. 2020, Appendix A).

Each view is drawn independently: random resized crop and horizontal flip, colour jitter
(brightness, contrast, saturation, hue in random order) with p = 0.8, grayscale with p = 0.2,
optional Gaussian blur with p = 0.5. Every random number comes from :mod:`fastclr.rng`, keyed
on (seed, epoch, sample index, view), so one sample gets the same views on any device, batch
composition or process count. The ops follow torchvision's definitions (same factor ranges,
same grayscale weights, clamping after each op) but run on a whole batch [N, C, H, W] at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .rng import keyed_uniform

# ImageNet channel statistics: one fixed normalisation for every data set, so exported
# encoders expect the inputs torchvision models expect.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_CROP_TRIES = 10  # torchvision RandomResizedCrop.get_params attempts


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
    h_img = heights.to(u)
    w_img = widths.to(u)
    area = h_img * w_img

    # Random resized crop: torchvision's rejection sampling, all tries at once, first valid wins.
    tries = u[:, _S_CROP:_S_FLIP].view(-1, _CROP_TRIES, 4)
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
    # Fallback when no try fits: centre crop of the whole image, ratio clamped (torchvision's rule).
    in_ratio = w_img / h_img
    fb_w = torch.where(in_ratio < cfg.min_ratio, w_img, torch.where(in_ratio > cfg.max_ratio, torch.round(h_img * cfg.max_ratio), w_img))
    fb_h = torch.where(in_ratio < cfg.min_ratio, torch.round(w_img / cfg.min_ratio), h_img)
    fb_h = torch.where(in_ratio > cfg.max_ratio, h_img, fb_h)
    failed = first < 0
    crop_w = torch.where(failed, fb_w, crop_w)
    crop_h = torch.where(failed, fb_h, crop_h)
    top = torch.where(failed, torch.floor((h_img - crop_h) / 2), top)
    left = torch.where(failed, torch.floor((w_img - crop_w) / 2), left)

    s = cfg.color_strength
    lo = max(0.0, 1 - 0.8 * s)
    j = u[:, _S_JITTER:_S_GRAY]
    params = {
        "top": top,
        "left": left,
        "crop_h": crop_h,
        "crop_w": crop_w,
        "flip": (u[:, _S_FLIP] < 0.5) if cfg.flip else torch.zeros_like(top, dtype=torch.bool),
        "jitter": (j[:, 0] < cfg.color_p) if s > 0 else torch.zeros_like(top, dtype=torch.bool),
        "brightness": lo + (1 + 0.8 * s - lo) * j[:, 1],
        "contrast": lo + (1 + 0.8 * s - lo) * j[:, 2],
        "saturation": lo + (1 + 0.8 * s - lo) * j[:, 3],
        "hue": 0.2 * s * (2 * j[:, 4] - 1),
        "order": j[:, 5:9].argsort(dim=1),  # a uniform random permutation of the 4 ops
        "gray": u[:, _S_GRAY] < cfg.gray_p,
        "blur": (u[:, _S_BLUR] < cfg.blur_p) if cfg.blur else torch.zeros_like(top, dtype=torch.bool),
        "sigma": cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * u[:, _S_BLUR + 1],
    }
    return params


def crop_resize(images: torch.Tensor, p: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Crop each image to its box, resize to size x size (bilinear) and flip where asked.

    One grid_sample for the whole batch. Sampling positions are those of a crop followed by a
    bilinear resize with half-pixel centres, clamped to the box, so the result equals torchvision's
    ``resized_crop(..., antialias=False)`` (then ``hflip``). Bilinear sampling does not low-pass
    filter: crops larger than twice the output alias slightly, unlike antialiased resizing; large
    images are cropped on the CPU workers instead (see the folder loader).

    Args:
        images: float [N, C, H, W]. Returns: float [N, C, size, size].
    """
    n, _, h, w = images.shape
    out = torch.arange(size, device=images.device, dtype=images.dtype) + 0.5  # output pixel centres
    ys = p["top"].to(images.dtype)[:, None] + out[None, :] * (p["crop_h"] / size).to(images.dtype)[:, None] - 0.5  # [N, S]
    xs = p["left"].to(images.dtype)[:, None] + out[None, :] * (p["crop_w"] / size).to(images.dtype)[:, None] - 0.5
    ys = torch.minimum(torch.maximum(ys, p["top"][:, None]), (p["top"] + p["crop_h"] - 1)[:, None])
    xs = torch.minimum(torch.maximum(xs, p["left"][:, None]), (p["left"] + p["crop_w"] - 1)[:, None])
    xs = torch.where(p["flip"][:, None], xs.flip(1), xs)
    gy = (2 * ys + 1) / h - 1  # pixel -> [-1, 1] for align_corners=False
    gx = (2 * xs + 1) / w - 1
    grid = torch.stack((gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)), dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images, [N, 3, H, W] -> [N, 1, H, W] (torchvision's weights)."""
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * a + (1 - f) * b).clamp(0, 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = torch.stack((v, q, p, p, t, v), 1).gather(1, i.unsqueeze(1))
    g = torch.stack((t, v, v, q, p, p), 1).gather(1, i.unsqueeze(1))
    b = torch.stack((p, p, t, v, v, q), 1).gather(1, i.unsqueeze(1))
    return torch.cat((r, g, b), 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by shift (fraction of a turn, [N]) in HSV space."""
    hsv = _rgb_to_hsv(x)
    h = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), 1))


def color_distort(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Colour jitter in a per-sample random order (where p["jitter"]), then random grayscale.

    At each of the four positions every sample runs exactly one op; the other three get their
    identity factor (exact: 1 * x + 0 * m = x), so no per-sample Python branching is needed.
    """
    one = torch.ones_like(p["brightness"])
    on = p["jitter"]
    for pos in range(4):
        op = p["order"][:, pos]
        b = torch.where(on & (op == 0), p["brightness"], one)
        c = torch.where(on & (op == 1), p["contrast"], one)
        s = torch.where(on & (op == 2), p["saturation"], one)
        x = (x * b.view(-1, 1, 1, 1)).clamp(0, 1)
        x = _blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), c)
        x = _blend(x, grayscale(x), s)
        hue_on = (on & (op == 3)).view(-1, 1, 1, 1)
        if x.device.type != "cpu" or bool(hue_on.any()):  # skip unused work on CPU; never sync a GPU
            x = torch.where(hue_on, adjust_hue(x, p["hue"]), x)
    return torch.where(p["gray"].view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)


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
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


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
    """One random view of each image: uint8 [N, C, H, W] -> normalised float32 [N, 3, S, S]."""
    n, _, h, w = images.shape
    hw = torch.tensor([h, w], device=images.device, dtype=torch.float32)
    p = sample_params(index.to(images.device), hw[0].expand(n), hw[1].expand(n), seed=seed, epoch=epoch, view=view, cfg=cfg)
    x = crop_resize(to_float(images), p, cfg.size)
    return normalize(apply_pixel_ops(x, p, cfg))


def apply_pixel_ops(x: torch.Tensor, p: dict[str, torch.Tensor], cfg: AugmentConfig) -> torch.Tensor:
    """Everything after the crop: colour distortion, grayscale, blur. float [N, 3, S, S] in [0, 1]."""
    x = color_distort(x, p)
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
