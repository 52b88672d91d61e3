"""Contrastive losses of SimCLR (Chen et al. 2020, section 2.1 and Table 2).

Every loss takes the projections of V >= 2 views, each an [N, D] tensor of *unnormalised* z,
normalises them, and compares every anchor with every other view in the batch. Views of the
same image are positives; views of all other images are negatives. The functions are pure:
the distributed training step passes gathered candidates through :func:`contrastive_terms`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["nt_xent", "nt_logistic", "margin_triplet", "contrastive_terms"]


def _stack_views(views: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    if len(views) < 2:
        raise ValueError(f"contrastive losses need at least 2 views, got {len(views)}")
    n = views[0].shape[0]
    if any(v.shape != views[0].shape for v in views) or views[0].dim() != 2:
        raise ValueError(f"every view must be an [N, D] tensor of one shape, got {[tuple(v.shape) for v in views]}")
    z = F.normalize(torch.cat(views).float(), dim=1)  # [V*N, D], row v*N + i is view v of sample i
    sample = torch.arange(n, device=z.device).repeat(len(views))  # [V*N]
    return z, sample


def contrastive_terms(
    anchors: torch.Tensor,
    anchor_sample: torch.Tensor,
    anchor_pos: torch.Tensor,
    candidates: torch.Tensor,
    candidate_sample: torch.Tensor,
    max_negatives: int | None = None,
    generator: torch.Generator | None = None,
    scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine similarities of anchors against candidates, with the positive and negative masks.

    Args:
        anchors: [A, D] L2-normalised float32 projections (local anchors).
        anchor_sample: [A] sample id of each anchor (global, so ranks agree).
        anchor_pos: [A] row of each anchor inside ``candidates`` (its self-similarity to mask).
        candidates: [C, D] L2-normalised float32 projections (all views of the global batch).
        candidate_sample: [C] sample id of each candidate.
        max_negatives: keep at most this many negatives per anchor, chosen uniformly at random
            (the "M negatives" ablation); None keeps all.
        generator: random source for that choice.
        scores: [A, C] random numbers in [0, 1) for that choice instead of ``generator`` (the
            training step keys them on the global anchor row, so the choice does not depend on
            the number of processes).
    Returns:
        sim [A, C] cosine similarities, pos [A, C] bool, neg [A, C] bool. Only A x C is ever built.
    """
    sim = anchors @ candidates.T  # [A, C]
    a, c = sim.shape
    self_mask = torch.arange(c, device=sim.device)[None, :] == anchor_pos[:, None]  # [A, C]
    same = anchor_sample[:, None] == candidate_sample[None, :]  # [A, C]
    pos = same & ~self_mask
    neg = ~same
    # The cap is decided from shapes, never from counting negatives (a host sync): with fewer than
    # max_negatives negatives, the top-k below keeps all of them plus non-negatives that ``neg &`` drops.
    if max_negatives is not None and max_negatives < c:
        score = scores if scores is not None else torch.rand(a, c, generator=generator, device="cpu").to(sim.device)
        score = score.masked_fill(~neg, -1.0)  # negatives score in [0, 1): every one outranks a non-negative
        keep = score.topk(max_negatives, dim=1).indices  # [A, M]
        capped = torch.zeros_like(neg)
        capped.scatter_(1, keep, True)
        neg = neg & capped
    return sim, pos, neg


def _local_all(views: tuple[torch.Tensor, ...]):
    z, sample = _stack_views(views)
    return z, sample, torch.arange(z.shape[0], device=z.device), z, sample


def nt_xent_terms(sim: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-anchor NT-Xent: -mean over positives p of log softmax_{k != a}(sim/t)[p]. Returns [A]."""
    logits = (sim / temperature).masked_fill(~(pos | neg), float("-inf"))  # self and dropped negatives out
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # [A, C]
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1)) / pos.sum(1)
    return per_anchor


def nt_xent(
    *views: torch.Tensor,
    temperature: float = 0.5,
    max_negatives: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """NT-Xent, the normalised temperature-scaled cross entropy of SimCLR (paper eq. 1).

    For anchor a with positive p: l(a, p) = -log( exp(s_ap / t) / sum_{k != a} exp(s_ak / t) ),
    with s the cosine similarity. With V views per image, each anchor has V - 1 positives; the
    anchor's loss is the mean of its positives' terms (every positive stays in the denominator,
    as in the paper's formula). The result is the **mean over all V*N anchors** of that anchor's
    mean over positives. The reference TF code returns the sum of the two directions averaged over
    N, which is 2x this value for V = 2: scale the learning rate accordingly when comparing.

    Args:
        views: V >= 2 tensors [N, D] of projections (normalised here; any dtype, computed in float32).
        temperature: t > 0.
        max_negatives: cap on negatives per anchor (None: all 2(N-1) for V = 2).
    Returns:
        scalar float32 loss. Identical embeddings everywhere give exactly log(V*N - 1).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z, sample, rows, cand, cand_sample = _local_all(views)
    sim, pos, neg = contrastive_terms(z, sample, rows, cand, cand_sample, max_negatives, generator)
    return nt_xent_terms(sim, pos, neg, temperature).mean()


def nt_logistic_terms(sim: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-anchor NT-Logistic: mean_p -log sig(s_p/t) + mean_n -log sig(-s_n/t). Returns [A]."""
    pos_term = -(F.logsigmoid(sim / temperature).masked_fill(~pos, 0.0).sum(1)) / pos.sum(1)
    neg_term = -(F.logsigmoid(-sim / temperature).masked_fill(~neg, 0.0).sum(1)) / neg.sum(1).clamp_min(1)
    return pos_term + neg_term


def nt_logistic(
    *views: torch.Tensor,
    temperature: float = 0.5,
    max_negatives: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """NT-Logistic (paper Table 2): -log sig(s(u, v+)/t) - sum_{v-} log sig(-s(u, v-)/t).

    Our choice, stated as the paper asks: the negative terms are **averaged** over the anchor's
    negatives rather than summed, a uniform reweighting that keeps the positive term from being
    drowned by 2(N-1) negatives (the paper reweights or mines negatives for this loss). Both
    terms matter: the positive term alone collapses every z to one point.

    Returns:
        scalar, the mean over all V*N anchors.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z, sample, rows, cand, cand_sample = _local_all(views)
    sim, pos, neg = contrastive_terms(z, sample, rows, cand, cand_sample, max_negatives, generator)
    return nt_logistic_terms(sim, pos, neg, temperature).mean()


def margin_triplet_terms(
    sim: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float, slots: int | None = None
) -> torch.Tensor:
    """Per-anchor margin triplet: mean over (positive, negative) pairs of max(s_n - s_p + m, 0). Returns [A].

    One [A, C] hinge per positive slot (V - 1 of them with V views), each summed over the negatives
    at once, so memory is O(A x C), never the A x C x C of all (anchor, positive, negative) triples.
    ``slots``: the positives per anchor (V - 1), known to the caller; None reads it from ``pos`` (a host
    synchronisation on an accelerator).
    """
    n_pos = pos.sum(1)  # [A]
    if slots is None:
        slots = int(n_pos.max()) if n_pos.numel() else 0
    pos_index = pos.to(torch.uint8).topk(max(slots, 1), dim=1).indices  # [A, P] columns of the positives first
    total = sim.new_zeros(sim.shape[0])  # [A]
    for j in range(slots):
        col = pos_index[:, j : j + 1]  # [A, 1]
        s_pos = sim.gather(1, col)  # [A, 1]
        hinge = (sim - s_pos + margin).clamp_min(0).masked_fill(~neg, 0.0)  # [A, C]
        total = total + hinge.sum(1).masked_fill(~pos.gather(1, col).squeeze(1), 0.0)
    return total / (n_pos * neg.sum(1)).clamp_min(1)


def margin_triplet(
    *views: torch.Tensor,
    margin: float = 1.0,
    max_negatives: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Margin triplet loss (paper Table 2): max(s(u, v-) - s(u, v+) + m, 0), averaged over negatives.

    No negative mining (the paper's semi-hard mining is optional and not applied). Memory is
    O(A x C) (:func:`margin_triplet_terms`), so it runs at the batch sizes the paper ablates it at.

    Returns:
        scalar, the mean over anchors of the mean over (positive, negative) pairs.
    """
    z, sample, rows, cand, cand_sample = _local_all(views)
    sim, pos, neg = contrastive_terms(z, sample, rows, cand, cand_sample, max_negatives, generator)
    return margin_triplet_terms(sim, pos, neg, margin, slots=len(views) - 1).mean()


def analytic_uniform_nt_xent(num_views: int, batch: int) -> float:
    """NT-Xent when every embedding is identical: log(V*N - 1) (all logits equal)."""
    return math.log(num_views * batch - 1)
