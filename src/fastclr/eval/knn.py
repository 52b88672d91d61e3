"""Weighted k-nearest-neighbour classifier on L2-normalised features (the kNN monitor).

Not in the paper, used by every library (Wu et al. 2018; DINO's eval_knn): each of the k most
similar training features votes for its label with weight exp(sim / T). Runs on the device the
training features are on; memory stays bounded by batching the test set and by taking the top k
of the training bank a chunk at a time (test_batch x bank_chunk similarities at once).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest(queries: torch.Tensor, bank: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest similarities of each query against the bank, and their bank rows.

    Args:
        queries: [b, d]; bank: [N, d] (both L2-normalised, one device); k <= N; chunk: bank rows per product.
    Returns:
        sim [b, k] (descending), idx int64 [b, k]. The top k of the union is the top k of the chunks'
        top k's, so this equals one product against the whole bank, with b x (chunk + k) memory.
    """
    if bank.shape[0] == 0:
        raise ValueError("kNN needs at least one training feature")
    best: tuple[torch.Tensor, torch.Tensor] | None = None
    for lo in range(0, bank.shape[0], chunk):
        part = bank[lo : lo + chunk]
        sim, idx = (queries @ part.T).topk(min(k, part.shape[0]), dim=1)  # [b, <= k]
        idx = idx + lo
        if best is not None:
            sim, idx = torch.cat([best[0], sim], 1), torch.cat([best[1], idx], 1)
            sim, pick = sim.topk(min(k, sim.shape[1]), dim=1)
            idx = idx.gather(1, pick)
        best = (sim, idx)
    assert best is not None
    return best


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 1024,
    bank_chunk: int = 65536,
) -> torch.Tensor:
    """Class scores [M, num_classes] for each test feature, on ``train_features``' device.

    Args:
        train_features: [N, d]; train_labels: int64 [N]; test_features: [M, d] (any devices).
        k: neighbours (capped at N); temperature: T of the vote weights.
        batch_size: test rows at a time; bank_chunk: training rows per similarity product.
    """
    device = train_features.device
    train = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(device)
    k = min(k, train.shape[0])
    out = []
    for lo in range(0, test_features.shape[0], batch_size):
        q = F.normalize(test_features[lo : lo + batch_size].to(device).float(), dim=1)
        sim, idx = nearest(q, train, k, bank_chunk)  # [b, k]
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, dtype=weights.dtype, device=device)
        votes.scatter_add_(1, labels[idx], weights)
        out.append(votes)
    return torch.cat(out) if out else torch.zeros(0, num_classes, device=device)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose true label is among the k highest scores (computed on ``scores``' device)."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == labels.to(scores.device)[:, None]).any(1).float().mean())


def knn_accuracy(train_f, train_y, test_f, test_y, num_classes: int, k: int = 200, temperature: float = 0.1) -> float:
    """Top-1 accuracy of the weighted kNN classifier."""
    return topk_accuracy(knn_predict(train_f, train_y, test_f, num_classes, k, temperature), test_y)
