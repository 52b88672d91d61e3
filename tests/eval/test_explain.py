"""Explanations light up what two images share: a distinctive patch pasted into two otherwise different images
carries the saliency of their similarity, for occlusion and for SmoothGrad, and follows the patch when it
moves. The encoder is built so that the answer is known: its only feature the two images share is the
patch's (a red detector), the others see each image's own background; a map that ignored the patch, or
marked a fixed place, fails. ``fastclr explain`` writes the picture and reports the similarity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from evalkit import cli, last_json, make_checkpoint, one_line_error
from fastclr.eval import explain
from fastclr.method.augment import eval_view

S, P = 32, 8  # image side, patch side


class ColourEncoder(nn.Module):
    """h = mean over pixels of ReLU(1x1 conv): a red, a green and a blue detector on normalised pixels, each off
    by a wide margin on the other colours (also under SmoothGrad's noise), so A and B share only the patch's."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -0.5, -0.5], [-1, 1, -1], [-1, -1, 1]])[:, :, None, None])
            self.conv.bias.copy_(torch.tensor([-1.0, -2.5, -2.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x)).mean((2, 3))


def image(background: tuple[int, int, int], patch_at: tuple[int, int] | None, seed: int) -> torch.Tensor:
    """uint8 [3, S, S]: a textured background of one colour and a red square of side P at (row, column)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(background) + rng.integers(-25, 26, (S, S, 3)), 0, 255)
    if patch_at is not None:
        y, x = patch_at
        pixels[y : y + P, x : x + P] = (230, 20, 20)
    return torch.from_numpy(pixels.astype(np.uint8).transpose(2, 0, 1).copy())


def inside_outside(heat: np.ndarray, at: tuple[int, int]) -> tuple[float, float]:
    mask = np.zeros_like(heat, dtype=bool)
    mask[at[0] : at[0] + P, at[1] : at[1] + P] = True
    return float(heat[mask].mean()), float(heat[~mask].mean())


@pytest.mark.parametrize("method", explain.METHODS)
@pytest.mark.parametrize("at_a", [(4, 20), (18, 6)])
def test_the_shared_patch_lights_up_and_follows_the_patch(method, at_a):
    torch.manual_seed(0)
    model = ColourEncoder().eval()
    a = image((20, 200, 20), at_a, seed=1)  # green textured ground, red patch
    b = image((20, 20, 200), (12, 12), seed=2)  # blue textured ground, the same patch elsewhere
    heat, similarity = explain.similarity_map(model, a, b, method)
    assert heat.shape == (S, S) and heat.dtype == np.float32 and heat.min() >= 0 and heat.max() == pytest.approx(1)
    with torch.no_grad():
        want = F.cosine_similarity(model(eval_view(a[None], S)), model(eval_view(b[None], S))).item()
    assert similarity == pytest.approx(want, abs=1e-6)
    inside, outside = inside_outside(heat, at_a)
    assert inside > 4 * outside, (inside, outside)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert at_a[0] - 1 <= y <= at_a[0] + P and at_a[1] - 1 <= x <= at_a[1] + P, (y, x)


def test_without_the_shared_patch_nothing_in_a_is_singled_out():
    """Control: B without the patch shares nothing with A; A's patch then carries no similarity."""
    model = ColourEncoder().eval()
    a, b = image((20, 200, 20), (4, 20), seed=1), image((20, 20, 200), None, seed=2)
    heat, similarity = explain.similarity_map(model, a, b, "occlusion")
    assert similarity == pytest.approx(0.0, abs=1e-6) and heat.max() == 0.0


def test_gaussian_blur_keeps_the_mass_and_the_colour_scale():
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 10] = 1
    y = explain.gaussian_blur(x, 2.0)
    assert y.sum().item() == pytest.approx(1.0, abs=1e-5) and y[0, 0, 10, 10] == y.max()
    rgb = explain.colour(np.array([[0.0, 1.0]]))
    assert rgb.dtype == np.uint8 and rgb[0, 0, 2] > rgb[0, 0, 0] and rgb[0, 1, 0] > rgb[0, 1, 2]  # blue cold, red hot


def test_explain_command_writes_the_picture(tmp_path):
    ckpt, model = make_checkpoint(tmp_path / "last.pt", "digits", image_size=16)
    files = []
    for name, (bg, at) in {"a": ((20, 200, 20), (4, 20)), "b": ((20, 20, 200), (12, 12))}.items():
        Image.fromarray(image(bg, at, seed=len(files)).numpy().transpose(1, 2, 0)).save(tmp_path / f"{name}.png")
        files.append(str(tmp_path / f"{name}.png"))
    out = tmp_path / "map.png"
    res = last_json(cli("explain", "--checkpoint", str(ckpt), *files, "--out", str(out), "--method", "smoothgrad"))
    assert res["method"] == "smoothgrad" and res["image_size"] == 16 and res["out"] == str(out)
    with Image.open(out) as im:
        assert im.size == (3 * 256 + 16, 256)
    from fastclr.data.images import decode

    a, b = (torch.from_numpy(decode(f, 16)[0].copy())[None] for f in files)
    with torch.no_grad():
        model.eval()
        want = F.cosine_similarity(model.encode(eval_view(a, 16)), model.encode(eval_view(b, 16))).item()
    assert res["similarity"] == pytest.approx(want, abs=1e-5) and all(0 <= v <= 1 for v in res["peak"])
    (tmp_path / "bad.jpg").write_bytes(b"no image")
    line = one_line_error(cli("explain", "--checkpoint", str(ckpt), str(tmp_path / "bad.jpg"), files[1], "--out",
                              str(out)))  # fmt: skip
    assert "image A" in line and "not an image" in line
    assert "--method grad" in one_line_error(cli("explain", "--checkpoint", str(ckpt), *files, "--out", str(out),
                                                 "--method", "grad"))  # fmt: skip
    assert "write a .png" in one_line_error(cli("explain", "--checkpoint", str(ckpt), *files, "--out", "m.jpg"))
