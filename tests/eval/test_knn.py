"""The weighted kNN classifier against references written out by hand; chunked top-k equals one pass; any device."""

from __future__ import annotations

import math

import pytest
import torch

from evalkit import brute_force_knn_top1
from fastclr.eval.knn import knn_accuracy, knn_predict, nearest


def reference_knn(train, labels, test, classes, k, t):
    """One query at a time: cosine similarity to every training row, sort, the k best vote exp(sim / t)."""
    out = torch.zeros(test.shape[0], classes, dtype=torch.float64)
    train = train.double() / train.double().norm(dim=1, keepdim=True)
    for i, q in enumerate(test.double()):
        sim = train @ (q / q.norm())
        order = sim.argsort(descending=True)[:k]
        for j in order.tolist():
            out[i, labels[j]] += torch.exp(sim[j] / t)
    return out


def features(seed: int, n: int, d: int = 16) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k,chunk", [(5, 1000), (5, 7), (40, 7), (200, 64)])
def test_matches_reference_whatever_the_bank_chunk(k, chunk):
    train, test = features(0, 150), features(1, 30)
    labels = torch.randint(0, 4, (150,), generator=torch.Generator().manual_seed(2))
    ours = knn_predict(train, labels, test, 4, k=k, temperature=0.1, batch_size=8, bank_chunk=chunk)
    ref = reference_knn(train, labels, test, 4, min(k, 150), 0.1)
    assert torch.allclose(ours.double(), ref, rtol=1e-4)


def test_nearest_chunked_equals_one_product():
    q, bank = (
        torch.nn.functional.normalize(features(3, 9), dim=1),
        torch.nn.functional.normalize(features(4, 100), dim=1),
    )
    sim, idx = nearest(q, bank, 12, chunk=100)
    for chunk in (1, 5, 11, 13, 99):
        s, i = nearest(q, bank, 12, chunk)
        assert torch.equal(i, idx) and torch.allclose(s, sim), chunk
    assert torch.equal(idx, (q @ bank.T).topk(12, dim=1).indices)


def test_labels_follow_the_features_device():
    """Labels on the CPU with features elsewhere (the kNN command): moved, not an error. Meta tensors stand in."""
    train, test = features(5, 20).to("meta"), features(6, 4).to("meta")
    scores = knn_predict(train, torch.zeros(20, dtype=torch.int64), test, 3, k=5)
    assert scores.device.type == "meta" and scores.shape == (4, 3)


@pytest.mark.cuda
def test_gpu_equals_cpu():
    train, test = features(7, 500, 32), features(8, 100, 32)
    labels = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(9))
    cpu = knn_accuracy(train, labels, test, labels[:100], 10, k=20)
    gpu_scores = knn_predict(train.cuda(), labels, test.cuda(), 10, k=20, bank_chunk=64)
    assert gpu_scores.device.type == "cuda"
    assert torch.allclose(gpu_scores.cpu(), knn_predict(train, labels, test, 10, k=20), rtol=1e-4)
    assert knn_accuracy(train.cuda(), labels, test.cuda(), labels[:100], 10, k=20) == pytest.approx(cpu)


@pytest.mark.parametrize("k,temperature,batch_size", [(1, 0.1, 1024), (5, 0.07, 3), (20, 0.5, 7), (500, 0.1, 16)])
def test_knn_equals_a_brute_force_weighted_vote(k, temperature, batch_size):
    g = torch.Generator().manual_seed(k)
    centres = torch.randn(4, 16, generator=g)
    train_y = torch.randint(0, 4, (60,), generator=g)
    test_y = torch.randint(0, 4, (25,), generator=g)
    train_f = centres[train_y] + 0.8 * torch.randn(60, 16, generator=g)
    test_f = centres[test_y] + 0.8 * torch.randn(25, 16, generator=g)
    scores = knn_predict(train_f, train_y, test_f, 4, k, temperature, batch_size)
    assert scores.shape == (25, 4)
    expected = brute_force_knn_top1(train_f, train_y, test_f, test_y, 4, k, temperature)
    assert knn_accuracy(train_f, train_y, test_f, test_y, 4, k, temperature) == pytest.approx(expected, abs=1e-6)
    assert expected > 0.4  # informative features: the vote is not at chance


def test_the_vote_weights_are_exp_sim_over_t():
    """Two neighbours of class 0 at similarity 0.6 outvote... or not, one of class 1 at 1.0, as exp(sim/T) says."""
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])  # sims to [1, 0]: 1.0, 0.6, 0.6
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.0]])
    for t, winner in ((1.0, 0), (0.1, 1)):  # 2 e^0.6 > e^1 ; 2 e^6 < e^10
        scores = knn_predict(train, labels, query, 2, k=3, temperature=t)
        assert int(scores.argmax()) == winner
        assert scores[0].tolist() == pytest.approx([2 * math.exp(0.6 / t), math.exp(1 / t)], rel=1e-5)
