"""Text data specs -> tokenised sentences.

- ``text:FILE``: a ``.txt`` file (one text a line), or a ``.csv`` / ``.tsv`` / ``.jsonl`` file whose
  text column is ``text_column`` (default ``text``); an optional ``label`` column gives evaluation
  labels. A ``train.*`` file with a ``test.*`` (or ``val.*``) file beside it gives the labelled
  train -> test splits of the kNN and linear probe, as for image lists.
- ``stsb:DIR``: the STS Benchmark folder (``sts-train.csv``, ``sts-dev.csv``, ``sts-test.csv``: tab-separated,
  no header, genre, file, year, id, score, sentence 1, sentence 2, extra fields ignored). Pretraining
  uses the distinct sentences of sts-train and sts-dev (scores unused, as in unsupervised SimCSE,
  Gao et al. 2021 section 3); the pairs of every split stay available for the STS evaluation.

Bad lines are handled like undecodable image files (:func:`fastclr.data.badfiles.settle`): an empty
text, one that is not UTF-8, holds NUL characters (binary junk) or is over ``MAX_TEXT_CHARS``
characters is skipped, counted and listed in ``OUT/skipped.txt``; more than ``max_bad_fraction`` of
them stops the run (exit 2). Texts longer than ``max_length`` tokens are truncated, and counted.

Texts are tokenised once, without special tokens (the encoder adds them, :mod:`fastclr.method.text_encoder`),
to ``tokens`` int64 [N, 2, L] with L = max_length - 2: row 0 the token ids, row 1 each token's word
index (for word-level views, :mod:`fastclr.method.text_views`); -1 pads both.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastclr.data.badfiles import settle
from fastclr.data.specs import text_parts
from fastclr.errors import UserError

TEXT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")
MAX_TEXT_CHARS = 20_000  # longer is a document, not a sentence: split it into lines
STSB_SPLITS = ("train", "dev", "test")


@dataclass
class TextSet:
    """Tokenised texts with optional labels.

    tokens: int64 [N, 2, L] (ids, word index; -1 pads); texts: the N raw texts; labels: int64 [N] or
    None; ids: N strings (``FILE:LINE``); classes: label names, or None.
    """

    tokens: torch.Tensor
    texts: list[str]
    labels: torch.Tensor | None
    ids: list[str]
    classes: list[str] | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def subset(self, index: torch.Tensor) -> TextSet:
        idx = index.tolist()
        return TextSet(
            self.tokens[index],
            [self.texts[i] for i in idx],
            None if self.labels is None else self.labels[index],
            [self.ids[i] for i in idx],
            self.classes,
        )


@dataclass
class StsPairs:
    """Sentence pairs with a gold similarity score (0 to 5): the STS evaluation set of one split."""

    first: list[str]
    second: list[str]
    scores: torch.Tensor  # float64 [P]


@dataclass
class TextSplits:
    """What a text spec provides, with the fields of :class:`fastclr.data.sets.DataSplits`: texts to
    pretrain on, labelled train/test splits when known, skipped lines; ``sts`` holds STS-B's pairs by split."""

    name: str
    pretrain: TextSet
    train: TextSet | None
    test: TextSet | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    sts: dict[str, StsPairs] = field(default_factory=dict)
    truncated: int = 0  # texts cut to max_length tokens


@dataclass
class RawTexts:
    """Texts read from a file before tokenising, with the (where, reason) of every skipped line."""

    texts: list[str]
    labels: list[str] | None
    ids: list[str]
    skipped: list[tuple[str, str]]
    total: int


def _check_line(text: object) -> str | None:
    """Why a text is refused (None: it is fine)."""
    if not isinstance(text, str):
        return "not a string"
    if not text.strip():
        return "empty"
    if "\x00" in text or "\ufffd" in text:
        return "not UTF-8 text (binary data?)"
    if len(text) > MAX_TEXT_CHARS:
        return f"over {MAX_TEXT_CHARS} characters; split long documents into lines"
    return None


def _rows(path: Path, column: str) -> list[tuple[object, object]]:
    """(text, label or None) of every record of a .txt/.csv/.tsv/.jsonl file."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [(line, None) for line in raw.splitlines()]
    if suffix == ".jsonl":
        rows: list[tuple[object, object]] = []
        for line in raw.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                rows.append((None, None))
                continue
            rows.append((record.get(column), record.get("label")) if isinstance(record, dict) else (None, None))
        return rows
    reader = csv.DictReader(io.StringIO(raw), delimiter="\t" if suffix == ".tsv" else ",")
    if column not in (reader.fieldnames or []):
        raise UserError(
            f"--data text:{path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])}); "
            "name the text column with --set text_column=NAME"
        )
    return [(row.get(column), row.get("label")) for row in reader]


def read_texts(path: Path, column: str = "text") -> RawTexts:
    """Every usable text of ``path``, with the skipped lines and why."""
    if not path.is_file():
        raise UserError(f"--data text:{path}: no such file; give a .txt (one text a line), .csv, .tsv or .jsonl file")
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise UserError(f"--data text:{path}: unknown format {path.suffix!r}; use one of {', '.join(TEXT_SUFFIXES)}")
    rows = _rows(path, column)
    texts: list[str] = []
    labels: list[str | None] = []
    ids: list[str] = []
    skipped: list[tuple[str, str]] = []
    for i, (text, label) in enumerate(rows, start=1):
        reason = _check_line(text)
        if reason:
            skipped.append((f"{path}:{i}", reason))
            continue
        texts.append(str(text).strip())
        labels.append(None if label is None or label == "" else str(label))
        ids.append(f"{path.name}:{i}")
    known = [label for label in labels if label is not None]
    return RawTexts(texts, known if labels and len(known) == len(labels) else None, ids, skipped, len(rows))


def read_stsb(folder: Path) -> dict[str, StsPairs]:
    """The pairs of sts-train, sts-dev and sts-test (the splits that are present)."""
    pairs: dict[str, StsPairs] = {}
    for split in STSB_SPLITS:
        path = folder / f"sts-{split}.csv"
        if not path.is_file():
            continue
        first, second, scores = [], [], []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split("\t")
            if len(fields) < 7:
                raise UserError(f"--data stsb:{folder}: {path.name} line {n} has {len(fields)} fields, expected 7")
            first.append(fields[5].strip())
            second.append(fields[6].strip())
            scores.append(float(fields[4]))
        pairs[split] = StsPairs(first, second, torch.tensor(scores, dtype=torch.float64))
    if "test" not in pairs:
        raise UserError(
            f"--data stsb:{folder}: no sts-test.csv there; "
            "point it at the STS Benchmark folder (sts-train.csv, sts-dev.csv, sts-test.csv)"
        )
    return pairs


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, int]:
    """Token ids and word indices of ``texts`` without special tokens: (int64 [N, 2, max_length - 2], truncated).

    Needs a fast tokenizer (for ``word_ids``); ``truncated`` counts texts cut to fit.
    """
    width = max_length - 2  # room for the encoder's [CLS] and [SEP]
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=False)
    out = torch.full((len(texts), 2, width), -1, dtype=torch.int64)
    truncated = 0
    for i, ids in enumerate(enc["input_ids"]):
        words = enc.word_ids(i)
        n = min(len(ids), width)
        truncated += len(ids) > width
        out[i, 0, :n] = torch.tensor(ids[:n], dtype=torch.int64)
        out[i, 1, :n] = torch.tensor([w if w is not None else 0 for w in words[:n]], dtype=torch.int64)
    return out, truncated


def _labels(raw: list[str] | None, classes: list[str] | None) -> tuple[torch.Tensor | None, list[str] | None]:
    if raw is None:
        return None, None
    names = classes or sorted(set(raw))
    index = {c: i for i, c in enumerate(names)}
    unknown = sorted(set(raw) - set(index))
    if unknown:
        raise UserError(f"test labels {unknown[:3]} do not occur in the training file; use the same label names")
    return torch.tensor([index[c] for c in raw], dtype=torch.int64), names


def _test_sibling(path: Path) -> Path | None:
    if path.stem != "train":
        return None
    for name in ("test", "val"):
        if (path.parent / f"{name}{path.suffix}").is_file():
            return path.parent / f"{name}{path.suffix}"
    return None


def _load_file(path: Path, tokenizer, max_length: int, column: str, max_bad_fraction: float, out_dir) -> TextSplits:
    train_raw = read_texts(path, column)
    test_path = _test_sibling(path)
    test_raw = read_texts(test_path, column) if test_path is not None and train_raw.labels is not None else None
    skipped = train_raw.skipped + (test_raw.skipped if test_raw else [])
    total = train_raw.total + (test_raw.total if test_raw else 0)
    settle(skipped, total, max_bad_fraction, out_dir, what="texts", failed="were unusable")
    if not train_raw.texts:
        raise UserError(f"--data text:{path}: no usable text in {train_raw.total} line(s); see skipped.txt")
    tokens, cut = tokenize(tokenizer, train_raw.texts, max_length)
    labels, classes = _labels(train_raw.labels, None)
    train = TextSet(tokens, train_raw.texts, labels, train_raw.ids, classes)
    test = None
    if test_raw is not None and test_raw.labels is not None and test_raw.texts:
        test_tokens, cut_test = tokenize(tokenizer, test_raw.texts, max_length)
        test_labels, _ = _labels(test_raw.labels, classes)
        test = TextSet(test_tokens, test_raw.texts, test_labels, test_raw.ids, classes)
        cut += cut_test
    sources = [path] + ([test_path] if test is not None and test_path is not None else [])
    return TextSplits(path.stem, train, train if labels is not None else None, test, skipped, sources, truncated=cut)


def _load_stsb(folder: Path, tokenizer, max_length: int) -> TextSplits:
    pairs = read_stsb(folder)
    seen: dict[str, None] = {}
    for split in ("train", "dev"):
        if split in pairs:
            for s in pairs[split].first + pairs[split].second:
                if not _check_line(s):
                    seen.setdefault(s, None)  # distinct sentences, in first-seen order
    texts = list(seen)
    if not texts:
        raise UserError(f"--data stsb:{folder}: no sts-train.csv / sts-dev.csv sentences to pretrain on")
    tokens, cut = tokenize(tokenizer, texts, max_length)
    pre = TextSet(tokens, texts, None, [f"stsb:{i}" for i in range(len(texts))])
    sources = [folder / f"sts-{s}.csv" for s in pairs]
    return TextSplits("stsb", pre, None, None, [], sources, sts=pairs, truncated=cut)


def load(
    spec: str,
    tokenizer,
    max_length: int,
    *,
    column: str = "text",
    max_bad_fraction: float = 0.01,
    out_dir: Path | str | None = None,
) -> TextSplits:
    """Resolve a text spec (see the module docstring) to tokenised texts.

    Args:
        tokenizer: a fast Hugging Face tokenizer (:func:`fastclr.method.text_encoder.load_tokenizer`).
        max_length: tokens per text including the two special tokens.
        column: the text column of .csv / .tsv / .jsonl files.
        out_dir: where ``skipped.txt`` goes (nowhere if None).
    """
    kind, path = text_parts(spec)
    if kind == "stsb":
        if not path.is_dir():
            raise UserError(f"--data {spec}: no such folder; give the STS Benchmark folder (stsb:DIR)")
        return _load_stsb(path, tokenizer, max_length)
    out = Path(out_dir) if out_dir is not None else None
    return _load_file(path, tokenizer, max_length, column, max_bad_fraction, out)
