"""Which regions of image A make it similar to image B: a saliency map of the cosine similarity of h(A) and h(B).

Two methods, both on A's evaluation view (the encoder's own input) with B fixed:

- ``occlusion`` (the default): a square of the data set's mean colour (zero after normalisation), 1/8 of
  the side, slides over A with a stride of half its side; a pixel's saliency is the mean drop of
  cos(h(A occluded), h(B)) over the squares that cover it (only drops count: hiding a region that made A
  *less* like B scores 0). It answers "what would remove the resemblance", and needs nothing but forward
  passes (about 225 at any image size, in batches); the map is then blurred (sigma: a quarter of the square).
- ``smoothgrad``: the gradient of cos(h(A), h(B)) with respect to A's pixels, averaged over 16 copies of A
  with Gaussian noise (sigma 15% of the input's range; Smilkov et al. 2017, SmoothGrad), its magnitude over
  the colour channels, then a Gaussian blur (sigma 1/32 of the side).

Either map is scaled to [0, 1]. The tests check both on constructed images where the answer is known: a
distinctive patch shared by two otherwise different images carries the saliency (tests/eval/test_explain.py);
benchmarks/README.md gives the same figure on real photos with a pretrained encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fastclr.data.images import BadImage, decode
from fastclr.errors import UserError, require_positive
from fastclr.method.augment import eval_view
from fastclr.train import restore

METHODS = ("occlusion", "smoothgrad")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of maps [N, 1, H, W] (reflected borders); sigma in pixels (<= 0: unchanged)."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:
        kernel, radius = kernel[radius - pad : radius + pad + 1], pad
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def _scaled(heat: torch.Tensor) -> np.ndarray:
    heat = heat.clamp(min=0)
    top = float(heat.max())
    return (heat / top if top > 0 else heat).cpu().numpy().astype(np.float32)


def similarity_map(
    fn: Callable[[torch.Tensor], torch.Tensor],
    a: torch.Tensor,
    b: torch.Tensor,
    method: str = "occlusion",
    *,
    samples: int = 16,
    noise: float = 0.15,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """The saliency map of A for its similarity to B (module docstring), and cos(h(A), h(B)).

    Args:
        fn: the encoder, float [N, 3, S, S] (normalised evaluation views) -> h [N, d]; in eval mode.
        a, b: the two images as uint8 [3, S, S] at the encoder's side S (``images.decode``).
        method: ``occlusion`` or ``smoothgrad``.
        samples, noise: SmoothGrad's noisy copies and their sigma, a fraction of the input's range.
        batch_size: occluded or noisy copies per forward pass.
    Returns:
        (float32 [S, S] in [0, 1], the cosine similarity).
    """
    if method not in METHODS:
        raise UserError(f"--method {method}: use one of {', '.join(METHODS)}")
    require_positive(samples=samples, batch_size=batch_size)
    device = next((p.device for p in getattr(fn, "parameters", lambda: iter(()))()), torch.device("cpu"))
    size = a.shape[-1]
    xa, xb = eval_view(a[None].to(device), size), eval_view(b[None].to(device), size)
    with torch.no_grad():
        hb = fn(xb).float()
        base = float(F.cosine_similarity(fn(xa).float(), hb).item())
    if method == "smoothgrad":
        return _smoothgrad(fn, xa, hb, samples, noise, batch_size, seed), base
    return _occlusion(fn, xa, hb, base, batch_size), base


def _smoothgrad(
    fn: Callable[[torch.Tensor], torch.Tensor], xa: torch.Tensor, hb: torch.Tensor, samples: int, noise: float,
    batch_size: int, seed: int,
) -> np.ndarray:  # fmt: skip
    """Mean gradient of cos(h(A + noise), h(B)) over the noisy copies, its magnitude over channels, blurred."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    sigma = noise * float(xa.max() - xa.min())
    grad = torch.zeros_like(xa[0])
    for lo in range(0, samples, batch_size):
        n = min(batch_size, samples - lo)
        eps = torch.randn((n, *xa.shape[1:]), generator=gen).to(xa.device) * sigma
        x = (xa + eps).requires_grad_(True)
        with torch.enable_grad():
            F.cosine_similarity(fn(x).float(), hb).sum().backward()
        grad += x.grad.sum(0) if x.grad is not None else 0
    magnitude = (grad / samples).norm(dim=0)[None, None]
    return _scaled(gaussian_blur(magnitude, xa.shape[-1] / 32)[0, 0])


def _occlusion(
    fn: Callable[[torch.Tensor], torch.Tensor], xa: torch.Tensor, hb: torch.Tensor, base: float, batch_size: int
) -> np.ndarray:
    """Mean drop of cos(h(A occluded), h(B)) over the mean-colour squares covering each pixel, blurred."""
    size = xa.shape[-1]
    window = max(2, size // 8)
    stride = max(1, window // 2)
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    boxes = [(y, x) for y in starts for x in starts]
    drop = torch.zeros(size, size, device=xa.device)
    cover = torch.zeros(size, size, device=xa.device)
    with torch.no_grad():
        for lo in range(0, len(boxes), batch_size):
            chunk = boxes[lo : lo + batch_size]
            x = xa.repeat(len(chunk), 1, 1, 1)
            for k, (y0, x0) in enumerate(chunk):
                x[k, :, y0 : y0 + window, x0 : x0 + window] = 0  # the mean colour after normalisation
            sims = F.cosine_similarity(fn(x).float(), hb)
            for k, (y0, x0) in enumerate(chunk):
                drop[y0 : y0 + window, x0 : x0 + window] += base - float(sims[k])
                cover[y0 : y0 + window, x0 : x0 + window] += 1
    heat = (drop / cover.clamp(min=1))[None, None]
    return _scaled(gaussian_blur(heat, stride / 2)[0, 0])  # the squares' edges smoothed


def colour(heat: np.ndarray) -> np.ndarray:
    """A [0, 1] map as RGB uint8 [H, W, 3]: dark blue (0) through cyan, yellow, to red (1)."""
    stops = np.array([[0, 0, 96], [0, 160, 255], [255, 230, 0], [230, 0, 0]], dtype=np.float32)
    pos = np.clip(heat, 0, 1) * (len(stops) - 1)
    lo = np.minimum(pos.astype(np.int64), len(stops) - 2)
    t = (pos - lo)[..., None]
    return np.round(stops[lo] * (1 - t) + stops[lo + 1] * t).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The heat map over an image uint8 [3, S, S] (or [S, S, 3]): uint8 [S, S, 3], more opaque where hotter."""
    rgb = image.transpose(1, 2, 0) if image.shape[0] == 3 and image.ndim == 3 else image
    w = (alpha * np.clip(heat, 0, 1) ** 0.5)[..., None]
    return np.round(rgb * (1 - w) + colour(heat) * w).astype(np.uint8)


def picture(a: np.ndarray, heat: np.ndarray, b: np.ndarray, side: int = 256) -> Image.Image:
    """A | the map over A | B, each scaled to ``side`` px, with 8 px white gaps: the PNG ``fastclr explain`` writes."""
    tiles = [a.transpose(1, 2, 0), overlay(a, heat), b.transpose(1, 2, 0)]
    out = Image.new("RGB", (3 * side + 16, side), "white")
    for k, tile in enumerate(tiles):
        out.paste(Image.fromarray(tile).resize((side, side), Image.Resampling.BICUBIC), (k * (side + 8), 0))
    return out


def command(
    checkpoint: str,
    a: str,
    b: str,
    out: str,
    *,
    method: str = "occlusion",
    projection: bool = False,
    device: str | None = None,
) -> dict:
    """``fastclr explain``: which regions of image A make it similar to image B, as a PNG.

    Occlusion (the default): a mean-colour square (1/8 of the side) slides over A, and each pixel scores the
    mean drop of cos(h(A), h(B)) when it is hidden. --method smoothgrad: the gradient of cos(h(A), h(B))
    with respect to A's pixels, averaged over 16 noisy copies of A, its magnitude blurred. Both on the
    encoder's own input (the evaluation view at the checkpoint's image size). The PNG shows A, the map over
    A (red: hottest) and B; the result line gives the similarity and where the map peaks.

    Args:
        checkpoint: a fastclr checkpoint (OUT/checkpoints/last.pt).
        a: the image whose regions are scored.
        b: the image it is compared with.
        out: PNG file to write.
        method: occlusion or smoothgrad.
        projection: explain the similarity of z = g(h) instead of h.
        device: auto (default: the checkpoint's setting), cpu, cuda.
    """
    if method not in METHODS:
        raise UserError(f"--method {method}: use one of {', '.join(METHODS)}")
    if not str(out).lower().endswith(".png"):
        raise UserError(f"--out {out}: write a .png file")
    restored, dev, _ = restore.open_for_command(checkpoint, device)
    model, size = restored.model.eval(), restored.cfg.image_size
    pixels = []
    for name, path in (("A", a), ("B", b)):
        try:
            pixels.append(decode(path, size)[0])
        except BadImage as e:
            raise UserError(f"image {name} {path}: {e.reason}") from None
    fn = (lambda x: model.project(model.encode(x).float())) if projection else model.encode
    heat, similarity = similarity_map(fn, torch.tensor(pixels[0]), torch.tensor(pixels[1]), method)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    picture(pixels[0], heat, pixels[1]).save(out)
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return {
        "out": str(out),
        "method": method,
        "similarity": round(similarity, 6),
        "peak": [round((y + 0.5) / size, 3), round((x + 0.5) / size, 3)],  # (row, column) as fractions of the side
        "image_size": size,
    }
