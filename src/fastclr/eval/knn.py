"""Weighted k-nearest-neighbour classifier on L2-normalised features (the kNN monitor).

Not in the paper, used by every library (Wu et al. 2018; DINO's eval_knn): each of the k most
similar training features votes for its label with weight exp(sim / T). Batched over the test
set so memory stays bounded (test_batch x train_size similarities at a time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Class scores [M, num_classes] for each test feature.

    Args:
        train_features: [N, d]; train_labels: int64 [N]; test_features: [M, d].
        k: neighbours (capped at N); temperature: T of the vote weights.
    """
    train = F.normalize(train_features.float(), dim=1)
    k = min(k, train.shape[0])
    out = []
    for lo in range(0, test_features.shape[0], batch_size):
        q = F.normalize(test_features[lo : lo + batch_size].float(), dim=1)
        sim, idx = (q @ train.T).topk(k, dim=1)  # [b, k]
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
        votes.scatter_add_(1, train_labels[idx], weights)
        out.append(votes)
    return torch.cat(out)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose true label is among the k highest scores."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(1).float().mean())


def knn_accuracy(train_f, train_y, test_f, test_y, num_classes: int, k: int = 200, temperature: float = 0.1) -> float:
    """Top-1 accuracy of the weighted kNN classifier."""
    return topk_accuracy(knn_predict(train_f, train_y, test_f, num_classes, k, temperature), test_y)
