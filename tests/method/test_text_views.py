"""Keyed text views: a pure function of (seed, epoch, index, view), and each op does what it says."""

from __future__ import annotations

import torch

from fastclr.data.text import tokenize
from fastclr.method.text_views import TextViewConfig, make_text_views, text_view
from textkit import SENTENCES

ALL = TextViewConfig(word_delete=0.3, span_crop=0.3, word_reorder=0.5)


def _rows(ids: torch.Tensor) -> list[list[int]]:
    return [[t for t in row.tolist() if t >= 0] for row in ids]


def _words(tokens: torch.Tensor, i: int) -> list[tuple[int, ...]]:
    """Sample i's words as tuples of token ids."""
    ids, words = tokens[i, 0].tolist(), tokens[i, 1].tolist()
    out: dict[int, list[int]] = {}
    for t, w in zip(ids, words):
        if t >= 0:
            out.setdefault(w, []).append(t)
    return [tuple(v) for _, v in sorted(out.items())]


def test_views_do_not_depend_on_the_batch(tokenizer):
    tokens, _ = tokenize(tokenizer, SENTENCES, 24)
    index = torch.arange(len(SENTENCES)) + 1000
    whole = _rows(make_text_views(tokens, index, seed=3, epoch=2, views=2, cfg=ALL))
    n = len(SENTENCES)
    for perm in (torch.tensor([5, 0, 7]), torch.randperm(n, generator=torch.Generator().manual_seed(1))):
        part = _rows(make_text_views(tokens[perm], index[perm], seed=3, epoch=2, views=2, cfg=ALL))
        b = perm.numel()
        for j, i in enumerate(perm.tolist()):
            assert part[j] == whole[i] and part[b + j] == whole[n + i]


def test_views_change_with_each_key(tokenizer):
    tokens, _ = tokenize(tokenizer, SENTENCES, 24)
    index = torch.arange(len(SENTENCES))
    base = _rows(text_view(tokens, index, 0, 0, 0, ALL))
    for args in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        assert _rows(text_view(tokens, index, *args, ALL)) != base
    assert _rows(text_view(tokens, index, 0, 0, 0, ALL)) == base


def test_default_view_is_the_sentence_itself(tokenizer):
    tokens, _ = tokenize(tokenizer, SENTENCES, 24)
    views = make_text_views(tokens, torch.arange(len(SENTENCES)), 0, 0, 2, TextViewConfig())
    assert torch.equal(views, torch.cat([tokens[:, 0], tokens[:, 0]]))


def _kept_words(row: list[int], words: list[tuple[int, ...]]) -> list[int]:
    """Which of ``words`` (by position) ``row`` is made of, in order, each whole; AssertionError if it is not
    a concatenation of whole words in the sentence's order."""
    kept, pos = [], 0
    for w, word in enumerate(words):
        if tuple(row[pos : pos + len(word)]) == word:
            kept.append(w)
            pos += len(word)
    assert pos == len(row), (row, words)
    return kept


def test_deletion_keeps_whole_words_in_order_and_never_empties(tokenizer):
    """Each view is the sentence with some whole words removed, the others in order; over many keys the
    fraction of words removed is the configured rate; a draw that removes every word keeps the sentence."""
    tokens, _ = tokenize(tokenizer, SENTENCES, 24)
    n = len(SENTENCES)
    reps = 40
    many = tokens.repeat(reps, 1, 1)  # each sentence under 40 keys (indices)
    for rate in (0.3, 0.95):
        out = _rows(text_view(many, torch.arange(n * reps), 0, 0, 0, TextViewConfig(word_delete=rate)))
        total = deleted = changed = whole = 0
        for j, row in enumerate(out):
            words = _words(tokens, j % n)
            assert row, "at least one word stays"
            kept = _kept_words(row, words)
            total += len(words)
            deleted += len(words) - len(kept)
            changed += len(kept) < len(words)
            whole += len(kept) == len(words)
        if rate == 0.3:
            # about 3300 words: the rate within 0.03 (6 standard deviations of a binomial)
            assert abs(deleted / total - rate) < 0.03, deleted / total
            assert changed > 0.7 * len(out)
        else:  # most draws delete every word, and those keep the whole sentence: never an empty view
            assert whole > 0.5 * len(out) and changed > 0


def test_span_crop_keeps_one_contiguous_span_of_the_stated_length(tokenizer):
    tokens, _ = tokenize(tokenizer, SENTENCES, 24)
    cfg = TextViewConfig(span_crop=0.4)
    out = _rows(text_view(tokens, torch.arange(len(SENTENCES)), 0, 0, 0, cfg))
    for i, row in enumerate(out):
        words = _words(tokens, i)
        k = max(1, -(-len(words) * 6 // 10))  # ceil(0.6 n)
        spans = [sum(words[s : s + k], ()) for s in range(len(words) - k + 1)]
        assert tuple(row) in spans


def test_reordering_permutes_words_and_keeps_each_word_intact(tokenizer):
    tokens, _ = tokenize(tokenizer, SENTENCES, 24)
    out = _rows(text_view(tokens, torch.arange(len(SENTENCES)), 0, 0, 0, TextViewConfig(word_reorder=1.0)))
    moved = 0
    for i, row in enumerate(out):
        words = _words(tokens, i)
        assert sorted(row) == sorted(sum(words, ()))
        moved += row != list(sum(words, ()))
        # parse the row back into the sentence's words: each appears exactly once, intact
        rest, pos = list(words), 0
        while pos < len(row):
            w = next(w for w in rest if tuple(row[pos : pos + len(w)]) == w)
            rest.remove(w)
            pos += len(w)
        assert not rest
    assert moved >= len(SENTENCES) // 2
