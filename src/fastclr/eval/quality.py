"""Label-free figures of a representation: what a run on unlabelled images can say about its encoder.

Four figures, each computed for the trained encoder and for a random-init encoder of the same
architecture on the same held-aside images and the same augmented pixels:

* RankMe (Garrido et al. 2023, "RankMe: assessing the downstream performance of pretrained
  self-supervised representations by their rank", eq. 1): the effective rank of h [n, d],
  exp(entropy of the normalised singular values). 1 for a collapsed set, near min(n, d) for
  features that use every direction alike. Also given as a fraction of d.
* alignment and uniformity (Wang & Isola 2020, "Understanding contrastive representation learning
  through alignment and uniformity on the hypersphere", section 4.1) of the normalised projections z
  of two augmented views: alignment = E ||z1 - z2||^2 (alpha = 2, lower: the views agree);
  uniformity = log E exp(-2 ||zi - zj||^2) over pairs of images (t = 2, lower: the points spread over
  the sphere; 0 for a collapsed set), averaged over the two views as in the paper's code.
* view agreement: the fraction of images whose view 1 has its own view 2 as nearest neighbour
  (cosine on h) among every image's view 2. Chance level is 1/n; exact ties share the vote, so a
  collapsed set scores exactly 1/n.

A collapsed encoder maps every view to one point: alignment 0, which looks perfect. That is why the
verdict reads spread from RankMe and view invariance from view agreement, which no collapse can fake.

Everything stays on the device until :func:`measure` reads its figures once at the end.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastclr import log
from fastclr.eval.evaluate import FeatureSettings
from fastclr.eval.features import extract
from fastclr.method.augment import AugmentConfig, augment
from fastclr.train.precision import autocast

EPS = 1e-7  # Garrido et al. 2023, eq. 1: p_k = s_k / ||s||_1 + eps keeps log p finite for zero singular values
UNIFORMITY_T = 2.0  # Wang & Isola 2020, section 4.1: t = 2
# A trained SimCLR encoder spreads its images over a large share of its dimensions; an effective rank
# under 5% of the most it can be (min(images, d)) is the dimensional collapse of Jing et al. 2022
# ("Understanding dimensional collapse in contrastive self-supervised learning"): most directions unused.
COLLAPSE_FRACTION = 0.05
TIE_TOLERANCE = 1e-6  # cosines closer than this to the best one count as ties (float32 rounding is ~1e-7)
VIEW_SEED = 0x9A11  # added to the run's seed: the figures' views are never the views of a training step
FIGURES = ("rankme", "rankme_fraction", "alignment", "uniformity", "view_agreement", "images", "dim")


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float64 where the device has it (MPS has not: float32 there)."""
    return x.float() if x.device.type == "mps" else x.double()


def rankme(h: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Effective rank of ``h`` [n, d] (Garrido et al. 2023, eq. 1): a 0-d tensor on ``h``'s device.

    s = singular values of h (float64), p_k = s_k / sum(s) + eps, RankMe = exp(-sum_k p_k log p_k).
    """
    s = torch.linalg.svdvals(_wide(h))  # [min(n, d)]
    p = s / s.sum().clamp_min(torch.finfo(s.dtype).tiny) + eps
    return torch.exp(-(p * p.log()).sum()).float()


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """E ||z1_i - z2_i||^2 over the rows of the L2-normalised views z1, z2 [n, D] (Wang & Isola 2020, alpha = 2)."""
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    return (a - b).pow(2).sum(1).mean()


def uniformity(z: torch.Tensor, t: float = UNIFORMITY_T, chunk: int = 1024) -> torch.Tensor:
    """log E_{i != j} exp(-t ||z_i - z_j||^2) over the L2-normalised rows of ``z`` [n, D], n >= 2 (Wang & Isola 2020).

    The mean over ordered pairs i != j equals the mean over pairs i < j. ``chunk`` rows at a time
    against all n: memory chunk x n; the sum is a log-sum-exp, so no term underflows.
    """
    n = z.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least two rows")
    u = F.normalize(_wide(z), dim=1)
    parts = []
    for lo in range(0, n, chunk):
        rows = u[lo : lo + chunk]  # [c, D]
        sq = (2 - 2 * rows @ u.T).clamp_min(0)  # [c, n] squared distances of unit vectors
        logits = -t * sq
        logits.diagonal(lo).fill_(-math.inf)  # row i of the chunk is row lo + i: i != j
        parts.append(torch.logsumexp(logits, dim=1))  # [c]
    return (torch.logsumexp(torch.cat(parts), 0) - math.log(n * (n - 1))).float()


def view_agreement(h1: torch.Tensor, h2: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Fraction of rows i whose nearest row of ``h2`` (cosine) is row i, for queries ``h1`` [n, d].

    A query whose best cosine is shared by m rows within :data:`TIE_TOLERANCE` counts 1/m if its own
    row is among them, so a collapsed set scores the chance level 1/n. Two passes over the bank, chunk x
    chunk similarities at a time: the best cosine of each query, then the ties and the own row.
    """
    q_all, bank = F.normalize(h1.float(), dim=1), F.normalize(h2.float(), dim=1)
    n = q_all.shape[0]
    total = torch.zeros((), device=q_all.device)
    for lo in range(0, n, chunk):
        q = q_all[lo : lo + chunk]  # [b, d]
        rows = torch.arange(lo, lo + q.shape[0], device=q.device)[:, None]  # [b, 1]
        best = torch.cat([(q @ bank[c : c + chunk].T).amax(1, keepdim=True) for c in range(0, n, chunk)], 1).amax(1)
        ties = torch.zeros(q.shape[0], device=q.device)
        own = torch.zeros(q.shape[0], dtype=torch.bool, device=q.device)
        for c in range(0, n, chunk):
            near = q @ bank[c : c + chunk].T >= best[:, None] - TIE_TOLERANCE  # [b, c]
            ties += near.sum(1)
            cols = torch.arange(c, c + near.shape[1], device=q.device)[None, :]
            own |= (near & (cols == rows)).any(1)
        total += (own / ties).sum()
    return total / n


@torch.no_grad()
def _view_features(
    model: nn.Module, images: torch.Tensor, view: int, aug: AugmentConfig, settings: FeatureSettings, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """h [n, d] and z [n, D] (float32, on the device) of one keyed augmented view of every image.

    The view is keyed on (seed, epoch 0, row, view): the same pixels for any encoder and batch size.
    """
    s = settings
    hs, zs = [], []
    for lo in range(0, images.shape[0], s.batch_size):
        batch = images[lo : lo + s.batch_size].to(s.device, non_blocking=True)
        index = torch.arange(lo, lo + batch.shape[0], device=s.device)
        x = augment(batch, index, seed=seed, epoch=0, view=view, cfg=aug)
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(s.device, s.precision):
            h = model.encode(x)  # type: ignore[operator]
            z = model.project(h.float())  # type: ignore[operator]
        hs.append(h.float())
        zs.append(z.float())
    return torch.cat(hs), torch.cat(zs)


def measure(
    model: nn.Module, images: torch.Tensor, aug: AugmentConfig, settings: FeatureSettings, seed: int
) -> dict[str, float]:
    """The label-free figures of ``model`` (eval mode, put back after) on ``images`` uint8 [n, 3, H, W], n >= 2.

    RankMe of h of the evaluation view (:func:`fastclr.eval.features.extract`); alignment and
    uniformity of z, view agreement of h, on two views drawn with ``aug`` keyed on ``seed``.
    Returns the keys of :data:`FIGURES`; the figures are read from the device once.
    """
    if images.shape[0] < 2:
        raise ValueError("the label-free figures need at least two images")
    s = settings
    was_training = model.training
    model.eval()
    try:
        h = extract(model.encode, images, s.size, s.device, s.batch_size, s.precision, s.channels_last)  # type: ignore[arg-type]
        h1, z1 = _view_features(model, images, 0, aug, s, seed)
        h2, z2 = _view_features(model, images, 1, aug, s, seed)
    finally:
        model.train(was_training)
    spread = (uniformity(z1) + uniformity(z2)) / 2
    rank, align, unif, agree = torch.stack([rankme(h), alignment(z1, z2), spread, view_agreement(h1, h2)]).tolist()
    d = h.shape[1]
    return {
        "rankme": rank,
        "rankme_fraction": rank / d,
        "alignment": align,
        "uniformity": unif,
        "view_agreement": agree,
        "images": int(images.shape[0]),
        "dim": int(d),
    }


def verdict(trained: dict[str, float], baseline: dict[str, float]) -> str:
    """What the figures show against random init: spread read from RankMe, view invariance from view agreement.

    Alignment and uniformity are reported, not judged: a collapsed encoder aligns its views perfectly,
    and both are measured on z, the head's output, which the downstream tasks do not use.
    """
    spread = trained["rankme"] > baseline["rankme"]
    invariance = trained["view_agreement"] > baseline["view_agreement"]
    if spread and invariance:
        return "spread and view invariance above random init"
    if not spread and not invariance:
        return "spread and view invariance not above random init"
    above = {True: "above", False: "not above"}
    return f"spread {above[spread]}, view invariance {above[invariance]} random init"


def summary(trained: dict[str, float], baseline: dict[str, float], source: str) -> str:
    """The stderr line: both encoders' figures side by side and the :func:`verdict`."""
    where = "held-aside" if source == "test" else "training (no test split)"
    return (
        f"label-free, {trained['images']} {where} images: RankMe {trained['rankme']:.1f} vs "
        f"{baseline['rankme']:.1f} at random init (of {trained['dim']}), alignment {trained['alignment']:.2f} vs "
        f"{baseline['alignment']:.2f}, uniformity {trained['uniformity']:.2f} vs {baseline['uniformity']:.2f}, "
        f"view agreement {trained['view_agreement']:.2f} vs {baseline['view_agreement']:.2f} (chance "
        f"{1 / trained['images']:.3f}): {verdict(trained, baseline)}"
    )


def collapsed(figures: dict[str, float]) -> bool:
    """True when RankMe is below :data:`COLLAPSE_FRACTION` of the most it can be, min(images, d)."""
    return figures["rankme"] < COLLAPSE_FRACTION * min(figures["images"], figures["dim"])


def report(trained: dict[str, float], baseline: dict[str, float], source: str) -> None:
    """Log :func:`summary`, and a warning when the trained encoder looks :func:`collapsed`."""
    log.info(summary(trained, baseline, source))
    if collapsed(trained):
        top = min(trained["images"], trained["dim"])
        log.warn(
            f"RankMe {trained['rankme']:.1f} is below {COLLAPSE_FRACTION:.0%} of the {top} it can reach: the "
            "representation has (dimensionally) collapsed; a lower lr or stronger views (color_strength, "
            "min_scale) are the usual remedies"
        )
