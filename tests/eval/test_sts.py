"""STS evaluation: Spearman with ties against scipy, and the STS score of a handmade encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from fastclr.data.text import StsPairs, tokenize
from fastclr.eval.sts import encode_tokens, rank, spearman, sts_spearman


def test_spearman_equals_scipy_with_ties():
    g = np.random.default_rng(0)
    x = g.integers(0, 6, 50).astype(float)  # many ties
    y = x + g.normal(0, 2, 50)
    y[:10] = y[10:20]
    assert spearman(torch.tensor(x), torch.tensor(y)) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == pytest.approx(-1.0)
    assert rank(torch.tensor([10.0, 20, 10, 30])).tolist() == [1.5, 3.0, 1.5, 4.0]


def _bag_of_tokens(vocab: int):
    def encode(x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], vocab)
        return out.scatter_add_(1, x.clamp_min(0), (x >= 0).float())

    return encode


def test_sts_spearman_of_a_handmade_encoder(tokenizer):
    first = ["a man is playing guitar", "the dog runs", "a cat sleeps on sofa", "two people walk", "a bird flies"]
    second = ["a man is playing guitar", "the dog sleeps", "a child reads", "two people walk along beach", "car"]
    gold = torch.tensor([5.0, 3.0, 1.0, 4.0, 0.0], dtype=torch.float64)
    encode = _bag_of_tokens(len(tokenizer))
    got = sts_spearman(encode, tokenizer, StsPairs(first, second, gold), 16, torch.device("cpu"), batch_size=3)
    a = encode(tokenize(tokenizer, first, 16)[0][:, 0])
    b = encode(tokenize(tokenizer, second, 16)[0][:, 0])
    cos = F.cosine_similarity(a, b, dim=1).numpy()
    assert got == pytest.approx(100 * spearmanr(cos, gold.numpy()).statistic, abs=1e-9)


def test_encode_tokens_keeps_the_order(tokenizer):
    texts = ["a", "a man is playing guitar on the sofa", "the dog", "two people walk along the beach"]
    tokens, _ = tokenize(tokenizer, texts, 16)
    got = encode_tokens(lambda x: (x >= 0).sum(1, keepdim=True).float(), tokens, torch.device("cpu"), batch_size=2)
    assert got.flatten().tolist() == (tokens[:, 0] >= 0).sum(1).float().tolist()
