"""Views of a sentence: dropout noise by default, word deletion, span crop and word reordering as options.

Unsupervised SimCSE (Gao et al. 2021, section 3) passes the same sentence twice through the
encoder: the two dropout masks are the only "augmentation", and it beats the discrete ones (its
Table 1 compares crop, word deletion, synonym replacement, MLM). Here the default view is the
sentence itself, and the dropout of the encoder in training mode makes the two views differ (the V
views of a batch are one forward pass, so every row draws its own masks). Deletion, span crop and
reordering, on whole words, are options.

Every random decision is a pure function of (seed, epoch, sample index, view) through
:func:`fastclr.method.rng.keyed_uniform`, as for the image augmentations (docs/distributed.md: one
random stream per sample), so a sample's views do not depend on the batch or the process count.
The ops work on the token tensors of :mod:`fastclr.data.text` on any device, with no host
synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastclr.method.rng import keyed_uniform


@dataclass(frozen=True)
class TextViewConfig:
    """Probabilities of the discrete text views (all 0: the sentence itself, dropout only).

    word_delete: each word is deleted with this probability (at least one word stays).
    span_crop: fraction of the words cut away: one contiguous span of the others is kept.
    word_reorder: probability that a view's words are put in a random order.
    """

    word_delete: float = 0.0
    span_crop: float = 0.0
    word_reorder: float = 0.0

    @property
    def identity(self) -> bool:
        return self.word_delete == 0 and self.span_crop == 0 and self.word_reorder == 0


def _word_mask(words: torch.Tensor, u: torch.Tensor, cfg: TextViewConfig) -> torch.Tensor:
    """Which words a view keeps: bool [b, L] over word indices 0..L-1."""
    b, width = words.shape
    n = words.max(1).values + 1  # [b] words per text (0 for an empty row)
    pos = torch.arange(width, device=words.device)[None, :]  # [1, L]
    keep = pos < n[:, None]
    if cfg.span_crop > 0:
        k = torch.clamp(torch.ceil(n.float() * (1.0 - cfg.span_crop)), min=1).long()  # [b] words kept
        start = torch.floor(u[:, 0] * (n - k + 1).clamp_min(1).float()).long()  # [b]
        keep = keep & (pos >= start[:, None]) & (pos < (start + k)[:, None])
    if cfg.word_delete > 0:
        kept = keep & (u[:, 2 : 2 + width] >= cfg.word_delete)
        empty = ~kept.any(1, keepdim=True)  # every word drawn for deletion: keep the text as cropped
        keep = torch.where(empty, keep, kept)
    return keep


def _word_rank(words: torch.Tensor, u: torch.Tensor, cfg: TextViewConfig) -> torch.Tensor:
    """The new position of each word: int64 [b, L] (the identity unless the view is reordered)."""
    b, width = words.shape
    pos = torch.arange(width, device=words.device).expand(b, width)
    if cfg.word_reorder <= 0:
        return pos
    shuffle = u[:, 1:2] < cfg.word_reorder  # [b, 1]
    key = torch.where(shuffle, u[:, 2 + width : 2 + 2 * width], pos.float() / width)
    return key.argsort(1).argsort(1)


def text_view(tokens: torch.Tensor, index: torch.Tensor, seed: int, epoch: int, view: int, cfg: TextViewConfig):
    """One view of each text: token ids int64 [b, L], kept tokens first, -1 after.

    Args:
        tokens: int64 [b, 2, L] (ids, word index; -1 pads) from :mod:`fastclr.data.text`.
        index: int64 [b], the samples' global indices (the keys of their random draws).
    """
    ids, words = tokens[:, 0], tokens[:, 1]
    if cfg.identity:
        return ids
    width = ids.shape[1]
    u = keyed_uniform(seed, epoch, index, view, 2 + 2 * width).to(ids.device)  # [b, 2 + 2L]
    valid = ids >= 0
    w = words.clamp_min(0)
    words_m = torch.where(valid, words, -1)
    keep = _word_mask(words_m, u, cfg).gather(1, w) & valid  # [b, L] tokens kept
    rank = _word_rank(words_m, u, cfg).gather(1, w)  # [b, L] new position of each token's word
    pos = torch.arange(width, device=ids.device)[None, :]
    key = torch.where(keep, rank * width + pos, width * width + pos)  # kept tokens first, words in new order
    order = key.argsort(1)
    out = ids.gather(1, order)
    return torch.where(keep.gather(1, order), out, -1)


def make_text_views(
    tokens: torch.Tensor, index: torch.Tensor, seed: int, epoch: int, views: int, cfg: TextViewConfig
) -> torch.Tensor:
    """All V views of a batch, view-major (rows v*b .. (v+1)*b - 1 are view v): int64 [V*b, L]."""
    return torch.cat([text_view(tokens, index, seed, epoch, v, cfg) for v in range(views)])
