"""Few-shot probe: weighted kNN, leave-one-out, over a few labelled images named in a CSV.

For a folder without labels, ``--set probe_labels=FILE`` names a handful of labelled images
(``path,label`` lines, 5-20 images a class; paths relative to the CSV's folder, or absolute). Each
image is classified by the weighted kNN vote of :mod:`fastclr.eval.knn` (cosine on normalised h,
weights exp(sim / T)) among all the other labelled images: leave-one-out, so every image is scored
and none votes for itself. The trained and the random-init encoder are scored alike.

k is the run's ``knn_k`` capped at the smallest class's size minus one (:func:`probe_k`). Leaving an
image out leaves its class one short, so when k reaches most of the set every image's class is
outvoted by the full ones and a featureless encoder scores below chance (5 classes of 10, k = 49:
9 votes against 10 for each other class); with k within the smallest class a perfect encoder fills
every vote with its own class.

The CSV follows the data lists' conventions (``data/sources/folders.py``): blank lines and ``#`` lines are
skipped, and so is a first line ``path,label``. Images are decoded by :func:`fastclr.data.images.decode`
(short side resized to the run's size, centre crop) and encoded as evaluation views.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastclr.data.images import BadImage, decode
from fastclr.data.sets import ImageSet
from fastclr.errors import UserError
from fastclr.eval.evaluate import FeatureSettings
from fastclr.eval.features import extract
from fastclr.eval.knn import nearest, topk_accuracy

PROTOCOL = "leave-one-out"


def _rows(path: Path) -> list[tuple[int, str, str]]:
    """(line number, path, label) of every entry of the CSV at ``path``; UserError naming the line otherwise."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or e
        raise UserError(
            f"probe_labels={path}: cannot read the file ({reason}); give a CSV of 'path,label' lines"
        ) from None
    rows: list[tuple[int, str, str]] = []
    for n, r in enumerate(csv.reader(text.splitlines()), 1):
        if not r or not "".join(r).strip() or r[0].lstrip().startswith("#"):
            continue
        if not rows and [c.strip().lower() for c in r] == ["path", "label"]:
            continue  # a header line
        if len(r) < 2:
            raise UserError(f"probe_labels={path} line {n}: no comma in {r[0]!r}; write one 'path,label' per line")
        if not r[0].strip() or not r[1].strip():
            raise UserError(f"probe_labels={path} line {n}: an empty path or label; write one 'path,label' per line")
        rows.append((n, r[0].strip(), r[1].strip()))
    if not rows:
        raise UserError(f"probe_labels={path}: names no images; write one 'path,label' per line (5-20 images a class)")
    return rows


def _check_classes(path: Path, rows: list[tuple[int, str, str]]) -> list[str]:
    """The sorted class names; UserError when a class has a single image or there is only one class."""
    counts = Counter(label for _, _, label in rows)
    for n, _, label in rows:
        if counts[label] == 1:
            raise UserError(
                f"probe_labels={path} line {n}: class {label!r} has only this image; leave-one-out needs at least 2 "
                "images a class (5-20 advised)"
            )
    if len(counts) < 2:
        raise UserError(
            f"probe_labels={path}: every image is labelled {rows[0][2]!r}; a probe needs two classes or more"
        )
    return sorted(counts)


def load(csv_path: str | Path, size: int) -> ImageSet:
    """The labelled images of the CSV at ``csv_path``, decoded at ``size``: uint8 [n, 3, size, size], int64 labels.

    Raises:
        UserError: the CSV or an image is missing or unreadable, a line has no comma, a class has one image.
    """
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise UserError(f"probe_labels={path}: no such file; give a CSV of 'path,label' lines (5-20 images a class)")
    rows = _rows(path)
    classes = _check_classes(path, rows)
    lookup = {c: i for i, c in enumerate(classes)}
    images = np.zeros((len(rows), 3, size, size), dtype=np.uint8)
    ids = []
    for j, (n, name, _) in enumerate(rows):
        file = Path(name).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.exists():
            raise UserError(f"probe_labels={path} line {n}: no file {file} (relative paths start at {path.parent})")
        try:
            images[j] = decode(file, size)[0]
        except BadImage as e:
            raise UserError(f"probe_labels={path} line {n}: {file}: {e.reason}; fix or remove the line") from None
        ids.append(str(file))
    labels = torch.tensor([lookup[label] for _, _, label in rows], dtype=torch.int64)
    return ImageSet(torch.from_numpy(images), labels, ids, classes)


def leave_one_out_scores(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int, temperature: float, chunk: int = 65536
) -> torch.Tensor:
    """Weighted kNN class scores [n, num_classes] of every row voted by its k nearest other rows.

    Args:
        features: [n, d], n >= 2; labels: int64 [n]; k: neighbours (capped at n - 1); temperature: T.
    The k + 1 nearest rows are taken (:func:`fastclr.eval.knn.nearest`) and the row itself dropped;
    where an exact duplicate pushed it out of them, the farthest of the k + 1 is dropped instead.
    """
    f = F.normalize(features.float(), dim=1)
    n = f.shape[0]
    k = min(k, n - 1)
    sim, idx = nearest(f, f, k + 1, chunk)  # [n, k + 1]
    is_self = idx == torch.arange(n, device=f.device)[:, None]
    drop = torch.where(is_self.any(1), is_self.int().argmax(1), k)  # [n] the column to leave out
    cols = torch.arange(k, device=f.device)[None, :]  # [1, k]
    keep = cols + (cols >= drop[:, None]).long()  # [n, k] every column but ``drop``, in order (no host sync)
    sim, idx = sim.gather(1, keep), idx.gather(1, keep)
    labels = labels.to(f.device)
    votes = torch.zeros(n, num_classes, device=f.device)
    return votes.scatter_add_(1, labels[idx], (sim / temperature).exp())


def probe_k(labels: torch.Tensor, k: int) -> int:
    """``k`` capped at the smallest class's size minus one (the module docstring says why); labels int64 [n]."""
    smallest = min(Counter(labels.tolist()).values())
    return max(1, min(k, smallest - 1))


def top1(model: nn.Module, probe: ImageSet, settings: FeatureSettings, k: int, temperature: float) -> float:
    """Leave-one-out weighted-kNN top-1 of ``model.encode`` (eval mode, put back after) on the probe images,
    with the :func:`probe_k` of ``k``."""
    assert probe.labels is not None
    s = settings
    was_training = model.training
    model.eval()
    try:
        h = extract(model.encode, probe.images, s.size, s.device, s.batch_size, s.precision, s.channels_last)  # type: ignore[arg-type]
    finally:
        model.train(was_training)
    scores = leave_one_out_scores(h, probe.labels, probe.num_classes, probe_k(probe.labels, k), temperature)
    return topk_accuracy(scores, probe.labels)
