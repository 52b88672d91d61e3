"""Linear probe on frozen features: multinomial logistic regression fitted with L-BFGS.

The transfer protocol of SimCLR (section 4 / Appendix B.5): features computed once, an L2
penalty chosen on a held-out part of the train split, then refitted on the whole train split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastclr.eval.knn import topk_accuracy

L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def _standardise(train: torch.Tensor, *others: torch.Tensor):
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 200) -> torch.nn.Linear:
    """Minimise mean cross-entropy + l2 * ||W||^2 over a linear layer with full-batch L-BFGS."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(x.shape[1], num_classes).double()
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    xd, opt = (
        x.double(),
        torch.optim.LBFGS(
            layer.parameters(),
            lr=1.0,
            max_iter=max_iter,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-7,
        ),
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(layer(xd), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return layer.float()


def linear_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    l2_grid: tuple[float, ...] = L2_GRID,
    holdout: float = 0.2,
    seed: int = 0,
) -> dict[str, float]:
    """Choose the L2 penalty on a held-out part of the train split, refit on all of it, test.

    Returns:
        dict with top1, top5 (fractions) and the chosen l2.
    """
    train_f, test_f = _standardise(train_f.float(), test_f.float())
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(train_f.shape[0], generator=g)
    n_val = max(1, int(holdout * train_f.shape[0]))
    val, fit = perm[:n_val], perm[n_val:]
    best, best_acc = l2_grid[0], -1.0
    for l2 in l2_grid:
        layer = fit_logistic(train_f[fit], train_y[fit], num_classes, l2)
        with torch.no_grad():
            acc = topk_accuracy(layer(train_f[val]), train_y[val])
        if acc > best_acc:
            best, best_acc = l2, acc
    layer = fit_logistic(train_f, train_y, num_classes, best)
    with torch.no_grad():
        scores = layer(test_f)
    return {"top1": topk_accuracy(scores, test_y, 1), "top5": topk_accuracy(scores, test_y, 5), "l2": best}
