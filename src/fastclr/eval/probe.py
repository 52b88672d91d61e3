"""Linear probe on frozen features: multinomial logistic regression fitted with L-BFGS.

The transfer protocol of SimCLR v1 (section 4, Appendix B.5): features computed once, an L2
penalty chosen among 45 logarithmically spaced values from 1e-6 to 1e5 on a held-out part of the
train split, then the classifier refitted on the whole train split with the chosen value.

Speed: the grid is walked from the strongest penalty to the weakest and every fit starts from
the previous solution (a warm-started regularisation path, as glmnet and scikit-learn's
``warm_start`` do), so the strong-penalty fits converge in a few iterations and each weaker one
starts near its optimum. Everything runs in float32 on the features' device (the training
device); no float64 and no CPU copy is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastclr.eval.knn import topk_accuracy

L2_GRID: tuple[float, ...] = tuple(10 ** (-6 + 11 * i / 44) for i in range(45))  # paper Appendix B.5


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Zero mean, unit variance per feature using the train split's statistics."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def objective(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    """Mean cross-entropy + l2 * ||W||^2 (the bias is not penalised).

    In scikit-learn's terms (``LogisticRegression``, sum of losses + ||W||^2 / 2C) this is C = 1 / (2 n l2).
    """
    return F.cross_entropy(torch.addmm(bias, x, weight.T), y) + l2 * weight.pow(2).sum()


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float,
    max_iter: int = 200,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.nn.Linear:
    """Minimise :func:`objective` over Linear(d, num_classes) with full-batch L-BFGS on ``x``'s device.

    Args:
        x: float32 [n, d] features; y: int64 [n] labels.
        init: (weight [C, d], bias [C]) to start from (a warm start); zeros otherwise.
    Returns:
        the fitted layer (float32, on ``x``'s device).
    """
    layer = torch.nn.Linear(x.shape[1], num_classes, device=x.device, dtype=torch.float32)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        if init is not None:
            layer.weight.copy_(init[0])
            layer.bias.copy_(init[1])
    x, y = x.float(), y.to(x.device)
    opt = torch.optim.LBFGS(
        layer.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective(layer.weight, layer.bias, x, y, l2)
        loss.backward()
        return loss

    opt.step(closure)
    return layer


def _holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation rows, fitting rows) of a seeded random split of n train rows."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(n - 1, max(1, int(fraction * n)))
    return perm[:n_val], perm[n_val:]


@torch.no_grad()
def _score(layer: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of ``layer`` on (x, y)."""
    logits = layer(x)
    return topk_accuracy(logits, y, 1), float(F.cross_entropy(logits, y))


def choose_l2(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2_grid: tuple[float, ...] = L2_GRID,
    holdout: float = 0.2,
    seed: int = 0,
) -> tuple[float, torch.nn.Linear]:
    """The grid value with the best held-out accuracy (ties: lower held-out loss, then stronger penalty).

    Walks the grid from the strongest penalty to the weakest, each fit warm-started from the last.
    Returns:
        (chosen l2, the layer fitted on the fitting rows with it: a warm start for the refit).
    """
    val, fit = _holdout(x.shape[0], holdout, seed)
    val, fit = val.to(x.device), fit.to(x.device)
    best: tuple[float, float, float, torch.nn.Linear] | None = None  # (acc, -loss, l2, layer)
    init = None
    for l2 in sorted(l2_grid, reverse=True):
        layer = fit_logistic(x[fit], y[fit], num_classes, l2, init=init)
        init = (layer.weight.detach(), layer.bias.detach())
        acc, loss = _score(layer, x[val], y[val])
        loss = loss if math.isfinite(loss) else math.inf
        if best is None or (acc, -loss) > (best[0], best[1]):
            best = (acc, -loss, l2, layer)
    assert best is not None, "the L2 grid is empty"
    return best[2], best[3]


def linear_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    l2_grid: tuple[float, ...] = L2_GRID,
    holdout: float = 0.2,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Choose the L2 penalty on a held-out part of the train split, refit on all of it, test.

    Args:
        train_f: [N, d] features; train_y: int64 [N]; test_f: [M, d]; test_y: int64 [M].
        device: where to fit (default: ``train_f``'s device); float32 throughout.
    Returns:
        dict with top1, top5 (fractions) and the chosen l2.
    """
    device = torch.device(device) if device is not None else train_f.device
    train_f, test_f = _standardise(train_f.to(device).float(), test_f.to(device).float())
    train_y, test_y = train_y.to(device), test_y.to(device)
    l2, warm = choose_l2(train_f, train_y, num_classes, l2_grid, holdout, seed)
    layer = fit_logistic(train_f, train_y, num_classes, l2, init=(warm.weight.detach(), warm.bias.detach()))
    with torch.no_grad():
        scores = layer(test_f)
    return {"top1": topk_accuracy(scores, test_y, 1), "top5": topk_accuracy(scores, test_y, 5), "l2": l2}
