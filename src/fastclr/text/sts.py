"""Evaluation of sentence encoders: STS Spearman, and kNN / linear probe for labelled texts.

Semantic textual similarity (Cer et al. 2017, SemEval-2017 Task 1; the protocol of Reimers &
Gurevych 2019, section 4.1 and Gao et al. 2021, section 5): embed both sentences of each pair with h,
score the pair by the cosine of the two embeddings, and report Spearman's rank correlation between
those scores and the gold similarity, times 100. No training on the pairs: only the encoder's
frozen h is used (the projection head is dropped, as in SimCLR).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fastclr.eval.knn import knn_accuracy
from fastclr.eval.probe import linear_probe
from fastclr.text.data import StsPairs, TextSet, TextSplits, tokenize
from fastclr.train.precision import autocast


def rank(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of x [n], ties given their average rank (as scipy.stats.rankdata): float64 [n]."""
    x = x.double()
    order = x.argsort(stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    # every run of equal values takes the mean of its positions
    _, group, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # [groups]
    ranks[order] = mean_rank[group]
    return ranks


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of x [n] and y [n]: the Pearson correlation of their ranks."""
    rx, ry = rank(x), rank(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.square().sum() * ry.square().sum()).sqrt()
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


@torch.no_grad()
def encode_tokens(
    encode: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
    precision: str = "fp32",
) -> torch.Tensor:
    """``encode`` (e.g. ``model.encode``) of every text's token ids: float32 [N, d] on the CPU, in order.

    Args:
        tokens: int64 [N, 2, L] from :func:`fastclr.text.data.tokenize` (row 0, the ids, is used).
    Texts are batched by length (less padding on the CPU) and put back in their order.
    """
    ids = tokens[:, 0]
    order = (ids >= 0).sum(1).argsort()
    rows = []
    for lo in range(0, ids.shape[0], batch_size):
        x = ids[order[lo : lo + batch_size]].to(device)
        with autocast(device, precision):
            rows.append(encode(x).float().cpu())
    if not rows:
        return torch.zeros(0, 0)
    out = torch.empty(ids.shape[0], rows[0].shape[1])
    out[order] = torch.cat(rows)
    return out


def sts_spearman(
    encode, tokenizer, pairs: StsPairs, max_length: int, device: torch.device, batch_size: int = 256, precision="fp32"
) -> float:
    """Spearman x 100 between cos(h(s1), h(s2)) and the gold scores of ``pairs``."""
    n = len(pairs.first)
    tokens, _ = tokenize(tokenizer, pairs.first + pairs.second, max_length)
    h = encode_tokens(encode, tokens, device, batch_size, precision)
    cos = F.cosine_similarity(h[:n], h[n:], dim=1)
    return 100.0 * spearman(cos, pairs.scores)


def labelled_eval(encode, train: TextSet, test: TextSet, device, precision: str, k: int, t: float, seed: int) -> dict:
    """kNN and L-BFGS linear probe on frozen h of labelled texts, train -> test."""
    tr = encode_tokens(encode, train.tokens, device, precision=precision)
    te = encode_tokens(encode, test.tokens, device, precision=precision)
    classes = len(train.classes or []) or int(train.labels.max()) + 1
    knn = knn_accuracy(tr, train.labels, te, test.labels, classes, k, t)
    probe = linear_probe(tr, train.labels, te, test.labels, classes, seed=seed)
    return {"knn_top1": knn, "linear_top1": probe["top1"], "linear_top5": probe["top5"]}


def evaluate_text(model, start, data: TextSplits, cfg, device: torch.device, precision: str) -> dict[str, float]:
    """The end-of-pretraining evaluation of a text run: the trained encoder against ``start``, the same
    architecture at its starting weights (the file's, or the run's random draw).

    STS-B (``stsb:`` data): ``sts_spearman`` on sts-test and ``start_sts_spearman``; labelled
    texts: kNN / linear probe, with ``start_knn_top1`` / ``start_linear_top1``.
    """
    out: dict[str, float] = {}
    for name, net in (("", model), ("start_", start)):
        net.eval()
        if "test" in data.sts:
            tok = net.encoder.tokenizer
            out[f"{name}sts_spearman"] = sts_spearman(
                net.encode, tok, data.sts["test"], cfg.max_length, device, cfg.eval_batch_size, precision
            )
        if data.train is not None and data.test is not None:
            scores = labelled_eval(
                net.encode, data.train, data.test, device, precision, cfg.knn_k, cfg.knn_temperature, cfg.seed
            )
            keep = scores if not name else {k: v for k, v in scores.items() if k != "linear_top5"}
            out.update({f"{name}{k}": v for k, v in keep.items()})
    return out
