"""The L-BFGS transfer probe: scikit-learn's LogisticRegression on the same features, the paper's grid."""

import math

import pytest
import torch

from fastclr.eval import probe

sklearn_linear = pytest.importorskip("sklearn.linear_model")


def blobs(n: int = 240, d: int = 12, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian classes: not separable, so every L2 value has one well-defined optimum."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=g)
    return centres[y] + 1.5 * torch.randn(n, d, generator=g), y


def sklearn_fit(x: torch.Tensor, y: torch.Tensor, l2: float):
    """scikit-learn's minimiser of sum CE + ||W||^2 / 2C with C = 1 / (2 n l2): our objective times n."""
    clf = sklearn_linear.LogisticRegression(C=1.0 / (2 * x.shape[0] * l2), tol=1e-8, max_iter=10_000)
    return clf.fit(x.double().numpy(), y.numpy())


@pytest.mark.parametrize("l2", [1e-4, 1e-2, 1.0])
def test_fit_equals_scikit_learn(l2):
    x, y = blobs()
    layer = probe.fit_logistic(x, y, 4, l2, max_iter=500)
    ref = sklearn_fit(x, y, l2)
    with torch.no_grad():
        ours = torch.softmax(layer(x), 1).double()
    theirs = torch.from_numpy(ref.predict_proba(x.double().numpy()))
    assert (ours - theirs).abs().max() < 1e-3  # float32 L-BFGS against float64: same model to ~1e-4
    assert torch.equal(ours.argmax(1), theirs.argmax(1))
    # the same minimum: our objective (float32) at scikit-learn's optimum equals it at ours
    w_ref, b_ref = torch.from_numpy(ref.coef_).float(), torch.from_numpy(ref.intercept_).float()
    at_ref = probe.objective(w_ref, b_ref, x, y, l2)
    at_ours = probe.objective(layer.weight.detach(), layer.bias.detach(), x, y, l2)
    assert float(at_ours) == pytest.approx(float(at_ref), rel=1e-6)


def test_grid_is_the_papers():
    grid = probe.L2_GRID
    assert len(grid) == 45
    assert grid[0] == pytest.approx(1e-6) and grid[-1] == pytest.approx(1e5)
    steps = [math.log10(b) - math.log10(a) for a, b in zip(grid, grid[1:])]
    assert steps == pytest.approx([11 / 44] * 44)


def test_warm_started_path_equals_cold_fits():
    x, y = blobs(seed=1)
    warm = None
    for l2 in (1e2, 1.0, 1e-2, 1e-3):
        layer = probe.fit_logistic(x, y, 4, l2, init=warm)
        warm = (layer.weight.detach(), layer.bias.detach())
        cold = probe.fit_logistic(x, y, 4, l2)
        f_warm = probe.objective(*warm, x, y, l2)
        f_cold = probe.objective(cold.weight.detach(), cold.bias.detach(), x, y, l2)
        assert float(f_warm) == pytest.approx(float(f_cold), rel=1e-5, abs=1e-6)


def test_chosen_l2_is_the_held_out_best():
    """The chosen value has the best held-out accuracy among scikit-learn's fits on the same split."""
    x, y = blobs(n=300, d=40, seed=2)  # many features for few rows: the penalty matters
    grid = probe.L2_GRID[::6]
    chosen, _ = probe.choose_l2(x, y, 4, grid, holdout=0.3, seed=5)
    val, fit = probe._holdout(x.shape[0], 0.3, 5)
    acc = {l2: float((sklearn_fit(x[fit], y[fit], l2).predict(x[val].numpy()) == y[val].numpy()).mean()) for l2 in grid}
    assert chosen in grid
    assert acc[chosen] == pytest.approx(max(acc.values()), abs=1.0 / len(val) + 1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_linear_probe_reports_the_chosen_l2_and_runs_in_float32(dtype, monkeypatch):
    """Whatever the features' dtype, every fit sees float32 features and gives a float32 layer; the reported
    L2 is the one choose_l2 picked and the final refit used; the result is the probe of the same values
    given as float32."""
    x, y = blobs(n=400, seed=3)
    x = x.to(dtype)
    grid = probe.L2_GRID[::6]  # a coarser grid keeps the test fast; the full one is walked the same way
    fits, chosen = [], []
    fit, choose = probe.fit_logistic, probe.choose_l2

    def spy_fit(features, labels, num_classes, l2, *args, **kwargs):
        layer = fit(features, labels, num_classes, l2, *args, **kwargs)
        fits.append((features.dtype, layer.weight.dtype, layer.bias.dtype, l2, features))
        return layer

    def spy_choose(*args, **kwargs):
        chosen.append(choose(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(probe, "fit_logistic", spy_fit)
    monkeypatch.setattr(probe, "choose_l2", spy_choose)
    out = probe.linear_probe(x[:300], y[:300], x[300:], y[300:], 4, grid, seed=0)
    assert len(fits) == len(grid) + 1  # the path over the grid, then the refit on all 300 rows
    assert {f[:3] for f in fits} == {(torch.float32,) * 3}, {f[:3] for f in fits}
    assert out["l2"] in grid and out["l2"] == chosen[0][0] == fits[-1][3]
    xf = x[:300].float()  # the refit's rows: standardised in float32 from the float32 values
    assert torch.allclose(fits[-1][4], (xf - xf.mean(0)) / xf.std(0), atol=1e-5)
    assert 0.5 < out["top1"] <= 1.0 and out["top5"] == 1.0
    monkeypatch.undo()
    same = probe.linear_probe(x[:300].float(), y[:300], x[300:].float(), y[300:], 4, grid, seed=0)
    assert same == out
