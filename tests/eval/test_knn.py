"""The weighted kNN classifier against a vote written out by hand."""

import pytest
import torch

from evalkit import brute_force_knn_top1
from fastclr.eval.knn import knn_accuracy, knn_predict


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
        assert scores[0].tolist() == pytest.approx([2 * torch.tensor(0.6 / t).exp().item(), torch.tensor(1 / t).exp()])
