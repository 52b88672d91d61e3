"""Evaluation of sentence encoders: STS Spearman, and kNN / linear probe for labelled texts.

Semantic textual similarity (Cer et al. 2017, SemEval-2017 Task 1; the protocol of Reimers &
Gurevych 2019, section 4.1 and Gao et al. 2021, section 5): embed both sentences of each pair with h,
score the pair by the cosine of the two embeddings, and report Spearman's rank correlation between
those scores and the gold similarity, times 100. No training on the pairs: only the encoder's
frozen h is used (the projection head is dropped, as in SimCLR).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from fastclr.data.text import StsPairs, TextSet, TextSplits, tokenize
from fastclr.eval.knn import knn_accuracy
from fastclr.eval.probe import linear_probe
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
        tokens: int64 [N, 2, L] from :func:`fastclr.data.text.tokenize` (row 0, the ids, is used).
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
    assert train.labels is not None and test.labels is not None, "labelled splits only"
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


def text_model(checkpoint: str | None, arch: str | None, random_init: bool, seed: int, data: str | None):
    """The model an evaluation command works on, with its config: a checkpoint's (``random_init``: its
    architecture re-drawn from ``seed``), or an ``hf:`` encoder straight from its folder (``arch``)."""
    from fastclr import config
    from fastclr.errors import UserError
    from fastclr.train import restore

    if checkpoint is None and arch is None:
        raise UserError(
            "sts: give --checkpoint OUT/checkpoints/last.pt, or --arch hf:minilm / hf:PATH for its own weights"
        )
    if checkpoint is not None:
        restored = restore.open_checkpoint(checkpoint)
        cfg = restored.cfg
        if not config.is_text(cfg):
            raise UserError(
                f"checkpoint {checkpoint}: arch={cfg.arch!r} is not a text encoder; sts needs an hf: encoder"
            )
        if random_init:
            restored = restore.random_init(cfg, seed)
        return restored.model, restored.cfg, restored.source
    cfg = config.Config(data=data or "stsb:stsbenchmark", arch=str(arch), hf_random_init=random_init)
    torch.manual_seed(seed)
    return restore.build_model(cfg), cfg, ("random-init" if random_init else str(arch))


def sts_command(
    checkpoint: str | None,
    data: str | None,
    split: str = "test",
    random_init: bool = False,
    arch: str | None = None,
    device: str | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """``fastclr sts``: Spearman x 100 of the encoder on an STS-B split (see the module docstring).

    Semantic textual similarity (SemEval-2017 STS Benchmark): Spearman x 100 between the cosine of the
    two sentence embeddings h and the gold score; the projection head is not used.
    """
    from fastclr.data.text import read_stsb
    from fastclr.errors import UserError, require_positive
    from fastclr.train.precision import pick_device, resolve

    require_positive(batch_size=batch_size)
    model, cfg, source = text_model(checkpoint, arch, random_init, seed, data)
    spec = data or cfg.data
    if not spec.startswith("stsb:"):
        raise UserError(f"--data {spec!r}: sts needs the STS Benchmark folder, stsb:DIR")
    pairs = read_stsb(Path(spec[len("stsb:") :]).expanduser())
    if split not in pairs:
        raise UserError(f"--split {split}: no sts-{split}.csv in {spec[5:]}; use one of {', '.join(pairs)}")
    dev = pick_device(device or cfg.device)
    model.to(dev).eval()
    value = sts_spearman(
        model.encode,
        model.encoder.tokenizer,
        pairs[split],
        cfg.max_length,
        dev,
        batch_size,
        resolve(cfg.precision, dev),
    )
    return {"spearman": value, "split": split, "pairs": len(pairs[split].first), "encoder": source}
