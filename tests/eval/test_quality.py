"""Label-free figures against float64 references written here, on constructed features with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastclr.eval import quality
from fastclr.eval.evaluate import FeatureSettings
from fastclr.method.augment import AugmentConfig
from fastclr.method.model import SimCLR
from synckit import NoHostSync


def gaussian(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def collapsed(n: int, d: int) -> torch.Tensor:
    """Every row the same vector."""
    return gaussian(1, d, 9).expand(n, d).contiguous()


# --- references: one formula each, float64 numpy, no chunks ---------------------------------------


def ref_rankme(h: torch.Tensor, eps: float = 1e-7) -> float:
    s = np.linalg.svd(h.double().numpy(), compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def unit(x: torch.Tensor) -> np.ndarray:
    a = x.double().numpy()
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def ref_alignment(z1: torch.Tensor, z2: torch.Tensor) -> float:
    return float(np.mean(np.sum((unit(z1) - unit(z2)) ** 2, axis=1)))


def ref_uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """Wang & Isola's ``torch.pdist(x).pow(2).mul(-t).exp().mean().log()``: the pairs i < j."""
    u = unit(z)
    i, j = np.triu_indices(len(u), k=1)
    return float(np.log(np.mean(np.exp(-t * np.sum((u[i] - u[j]) ** 2, axis=1)))))


def ref_agreement(h1: torch.Tensor, h2: torch.Tensor) -> float:
    """Features in general position (no ties): the nearest view 2 of each view 1, by cosine."""
    return float(np.mean(np.argmax(unit(h1) @ unit(h2).T, axis=1) == np.arange(len(h1))))


# --- RankMe -------------------------------------------------------------------------------------------


def test_rankme_matches_reference():
    for h in (gaussian(50, 20), gaussian(10, 40, 1), gaussian(30, 8, 2) @ gaussian(8, 30, 3)):
        assert quality.rankme(h).item() == pytest.approx(ref_rankme(h), rel=1e-5)


def test_rankme_of_a_collapsed_set_is_one():
    assert quality.rankme(collapsed(100, 32)).item() == pytest.approx(1.0, abs=1e-3)


def test_rankme_of_k_equal_directions_is_k():
    """Singular values all equal on k directions: p_k = 1/k, so RankMe = exp(log k) = k (analytic)."""
    q, _ = torch.linalg.qr(gaussian(64, 24, 4).double())  # [64, 24] orthonormal columns
    for k in (1, 5, 24):
        h = 3.0 * q[:, :k] @ torch.linalg.qr(gaussian(k, k, 5).double())[0]  # equal singular values 3
        h = torch.cat([h, torch.zeros(64, 8, dtype=h.dtype)], 1)
        assert quality.rankme(h).item() == pytest.approx(k, rel=1e-4)


def test_rankme_of_gaussian_features_is_near_d_when_n_is_much_larger():
    n, d = 4000, 32
    r = quality.rankme(gaussian(n, d)).item()
    assert 0.97 * d < r <= d
    assert r == pytest.approx(ref_rankme(gaussian(n, d)), rel=1e-5)


# --- alignment and uniformity ----------------------------------------------------------------------


def test_alignment_matches_reference_and_analytic_values():
    z1, z2 = gaussian(40, 16, 1), gaussian(40, 16, 2)
    assert quality.alignment(z1, z2).item() == pytest.approx(ref_alignment(z1, z2), rel=1e-5)
    assert quality.alignment(z1, 5 * z1).item() == pytest.approx(0.0, abs=1e-6)  # perfectly aligned views
    assert quality.alignment(z1, -z1).item() == pytest.approx(4.0, rel=1e-6)  # antipodal: ||2u||^2


@pytest.mark.parametrize("chunk", [1, 7, 64, 1024])
def test_uniformity_matches_reference_whatever_the_chunk(chunk):
    z = gaussian(64, 8, 3)
    assert quality.uniformity(z, chunk=chunk).item() == pytest.approx(ref_uniformity(z), rel=1e-6)


def test_uniformity_analytic_values():
    assert quality.uniformity(collapsed(50, 16)).item() == pytest.approx(0.0, abs=1e-6)  # exp(0) for every pair
    e = torch.eye(2)  # two antipodal points: log exp(-2 * 4)
    assert quality.uniformity(torch.cat([e[:1], -e[:1]])).item() == pytest.approx(-8.0, rel=1e-6)
    # the 2d orthonormal basis and its negatives: 4 pairs at distance^2 2, 2 pairs at 4
    x = torch.cat([e, -e])
    assert quality.uniformity(x).item() == pytest.approx(math.log((4 * math.exp(-4) + 2 * math.exp(-8)) / 6))
    with pytest.raises(ValueError):
        quality.uniformity(gaussian(1, 4))


def test_uniformity_survives_values_that_underflow_one_by_one():
    """Far-apart points with a large t: every exp underflows float32, the log-sum-exp does not."""
    z = torch.cat([torch.eye(4), -torch.eye(4)])
    got = quality.uniformity(z, t=200.0).item()
    assert math.isfinite(got) and got == pytest.approx(ref_uniformity(z, 200.0), rel=1e-6)


# --- view agreement -------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 5, 1024])
def test_view_agreement_matches_reference(chunk):
    h1 = gaussian(60, 6, 1)
    h2 = h1 + 0.9 * gaussian(60, 6, 2)  # noisy second views: some find themselves, some do not
    ref = ref_agreement(h1, h2)
    assert 0.1 < ref < 0.9
    assert quality.view_agreement(h1, h2, chunk=chunk).item() == pytest.approx(ref, abs=1e-7)


def test_view_agreement_of_perfectly_aligned_views_is_one():
    h = gaussian(80, 12, 3)
    assert quality.view_agreement(h, h).item() == 1.0
    assert quality.view_agreement(h, 4 * h, chunk=7).item() == 1.0  # cosine: scale does not matter


@pytest.mark.parametrize("chunk", [3, 1024])
def test_view_agreement_of_a_collapsed_set_is_chance(chunk):
    """Every view 2 is equally near: ties share the vote, so each image scores 1/n."""
    n = 40
    got = quality.view_agreement(collapsed(n, 16), collapsed(n, 16), chunk=chunk).item()
    assert got == pytest.approx(1 / n, rel=1e-6)


def test_view_agreement_of_two_groups_is_one_over_group_size():
    """Two distinct points, 10 and 30 copies: an image shares its best cosine with its group."""
    a, b = torch.eye(4)[:1].expand(10, 4), torch.eye(4)[1:2].expand(30, 4)
    h = torch.cat([a, b])
    assert quality.view_agreement(h, h).item() == pytest.approx((10 * 0.1 + 30 / 30) / 40, rel=1e-6)


# --- measure: one model, both views, nothing changed ---------------------------------------------------


def tiny_model() -> SimCLR:
    torch.manual_seed(0)
    return SimCLR("resnet_micro", cifar_stem=True, head_layers=2, proj_dim=16)


def images(n: int = 24) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_measure_reports_every_figure_and_changes_nothing():
    model = tiny_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    aug = AugmentConfig(size=8, min_scale=0.3, flip=False)
    settings = FeatureSettings(8, torch.device("cpu"), batch_size=10)
    got = quality.measure(model, images(), aug, settings, seed=5)
    assert set(got) == set(quality.FIGURES)
    assert got["images"] == 24 and got["dim"] == model.feature_dim
    assert got["rankme_fraction"] == pytest.approx(got["rankme"] / model.feature_dim)
    assert 1 <= got["rankme"] <= 24 and 0 <= got["alignment"] <= 4 and got["uniformity"] <= 0
    assert 0 <= got["view_agreement"] <= 1
    assert model.training  # the mode is put back
    assert torch.equal(torch.get_rng_state(), rng)  # keyed views: the global generator is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # eval mode: BN statistics did not move
    # the same pixels whatever the batch size: the views are keyed on (seed, row, view)
    again = quality.measure(model, images(), aug, FeatureSettings(8, torch.device("cpu"), batch_size=7), seed=5)
    for key in quality.FIGURES:
        assert again[key] == pytest.approx(got[key], rel=1e-4, abs=1e-6), key


def test_measure_equals_the_figures_of_its_own_features():
    """measure = the pure functions on h of the evaluation view and h, z of the two keyed views."""
    from fastclr.eval.features import extract
    from fastclr.method.augment import augment

    model = tiny_model().eval()
    aug = AugmentConfig(size=8, min_scale=0.3, flip=False)
    x = images()
    got = quality.measure(model, x, aug, FeatureSettings(8, torch.device("cpu")), seed=3)
    with torch.no_grad():
        h = extract(model.encode, x, 8, torch.device("cpu"))
        index = torch.arange(len(x))
        h1, h2 = (model.encode(augment(x, index, seed=3, epoch=0, view=v, cfg=aug)) for v in (0, 1))
        z1, z2 = model.project(h1), model.project(h2)
    assert got["rankme"] == pytest.approx(ref_rankme(h), rel=1e-4)
    assert got["alignment"] == pytest.approx(ref_alignment(z1, z2), rel=1e-4)
    assert got["uniformity"] == pytest.approx((ref_uniformity(z1) + ref_uniformity(z2)) / 2, rel=1e-4)
    assert got["view_agreement"] == pytest.approx(ref_agreement(h1, h2), abs=1e-6)


# --- the verdict and the collapse warning -----------------------------------------------------------


def figures(rank: float, agree: float, images: int = 500, dim: int = 512) -> dict[str, float]:
    return {
        "rankme": rank,
        "rankme_fraction": rank / dim,
        "alignment": 0.4,
        "uniformity": -2.0,
        "view_agreement": agree,
        "images": images,
        "dim": dim,
    }


def test_verdict_names_what_was_measured():
    base = figures(40.0, 0.2)
    assert quality.verdict(figures(90.0, 0.6), base) == "spread and view invariance above random init"
    assert quality.verdict(figures(20.0, 0.1), base) == "spread and view invariance not above random init"
    assert quality.verdict(figures(90.0, 0.1), base) == "spread above, view invariance not above random init"
    line = quality.summary(figures(96.0, 0.62, images=865), figures(48.5, 0.31, images=865), "test")
    assert line.startswith("label-free, 865 held-aside images: RankMe 96.0 vs 48.5 at random init (of 512)")
    assert "better" not in line


def test_collapse_warning_below_the_stated_fraction(capsys):
    quality.report(figures(20.0, 0.5), figures(10.0, 0.1), "test")  # 20 < 5% of min(500, 512) = 25
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("fastclr: label-free") and "warning: RankMe 20.0" in err[1]
    quality.report(figures(30.0, 0.5), figures(10.0, 0.1), "train_subset")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "training (no test split) images" in err[0]
    assert quality.collapsed(figures(3.0, 0.5, images=100, dim=512))  # 3 < 5% of 100: fewer images than d
    assert not quality.collapsed(figures(3.0, 0.5, images=40, dim=512))


# --- no host synchronisation before the figures are read ----------------------------------------------


def test_the_figures_never_wait_on_the_host():
    """Chunked as in a real run, every figure (and the few-shot vote) stays a device tensor until read."""
    from fastclr.eval.fewshot import leave_one_out_scores

    h1, h2 = gaussian(50, 8, 1), gaussian(50, 8, 2)
    with NoHostSync():
        figures = [
            quality.rankme(h1),
            quality.alignment(h1, h2),
            quality.uniformity(h1, chunk=7),
            quality.view_agreement(h1, h2, chunk=7),
            leave_one_out_scores(h1, torch.arange(50) % 3, 3, 5, 0.1, chunk=7),
        ]
    assert all(isinstance(f, torch.Tensor) for f in figures)
