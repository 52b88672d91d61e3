"""Near-duplicates: on a constructed set every planted duplicate is found and no distinct images are joined,
for the exact and the approximate index; union-find chains pairs; ``fastclr dedup`` writes the CSV."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

pytest.importorskip("faiss", reason="near-duplicate search needs faiss (pip install 'fastclr[search]')")

from evalkit import cli, digit_folder, last_json, make_checkpoint, one_line_error  # noqa: E402
from fastclr.eval import dedup  # noqa: E402
from fastclr.eval.index import VectorIndex  # noqa: E402


def planted(seed: int = 0, distinct: int = 400, d: int = 64) -> tuple[np.ndarray, list[str], list[set[str]]]:
    """``distinct`` random unit vectors (pairwise cosine well below 0.9 in 64 dimensions) and, for every 10th
    of them, 1 to 3 near copies (cosine >= 0.95 to each other): vectors, ids, and the planted groups."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((distinct, d))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    rows, ids, groups = list(base), [f"img{i}" for i in range(distinct)], []
    for i in range(0, distinct, 10):
        group = {ids[i]}
        for c in range(1 + i % 3):
            copy = base[i] + 0.02 * rng.standard_normal(d)
            rows.append(copy / np.linalg.norm(copy))
            ids.append(f"img{i}_copy{c}")
            group.add(ids[-1])
        groups.append(group)
    order = rng.permutation(len(ids))  # copies anywhere in the index, not next to their originals
    return np.array(rows, dtype=np.float32)[order], [ids[k] for k in order], groups


def found_groups(index: VectorIndex, threshold: float) -> list[set[str]]:
    rows, _ = dedup.groups(len(index), dedup.pairs_above(index, threshold))
    return [{index.ids[r] for r in g} for g in rows]


@pytest.mark.parametrize("exact_limit", [100_000, 100])  # exact, then the IVF index
def test_every_planted_duplicate_is_found_and_no_distinct_images_joined(exact_limit):
    vectors, ids, groups = planted()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    same = np.array([[a.split("_")[0] == b.split("_")[0] for b in ids] for a in ids])
    assert sims[same].min() >= 0.95 and sims[~same].max() < 0.7  # the construction: a clear gap
    index = VectorIndex(vectors, ids, exact_limit=exact_limit)
    assert index.kind == ("exact" if exact_limit > 1000 else "ivf")
    got = found_groups(index, 0.9)
    assert sorted(map(sorted, got)) == sorted(map(sorted, groups))


def test_pairs_are_joined_into_groups_by_union_find(tmp_path):
    # a~b (0.95) and b~c (0.95) but a, c at cos 0.81: one group through b; d far from all
    angle = np.arccos(0.95)
    rows = np.array([[np.cos(t), np.sin(t), 0] for t in (0, angle, 2 * angle)] + [[0, 0, 1]], dtype=np.float32)
    index = VectorIndex(rows, ["a", "b", "c", "d"])
    assert found_groups(index, 0.9) == [{"a", "b", "c"}]
    index.save(tmp_path / "ix")
    res = last_json(cli("dedup", str(tmp_path / "ix"), "--threshold", "0.9", "--out", str(tmp_path / "d.csv")))
    assert res["groups"] == 1 and res["grouped_images"] == 3 and res["duplicates"] == 2 and res["pairs"] == 2
    with open(tmp_path / "d.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["id"] for r in table] == ["a", "b", "c"] and {r["group"] for r in table} == {"1"}
    # the score is each member's cosine to the group's first member: a-c below the threshold shows there
    assert [float(r["score"]) for r in table] == pytest.approx([1.0, 0.95, np.cos(2 * angle)], abs=1e-6)


def test_dedup_command_on_image_files(tmp_path):
    folder = digit_folder(tmp_path / "digits", 3, 1)
    train = folder / "train"
    copies = []
    for src in sorted(train.glob("*/000.png"))[:4]:  # byte-identical copies under other names
        copies.append(shutil.copy(src, src.with_name("copy_of_000.png")))
    ckpt, _ = make_checkpoint(tmp_path / "last.pt", str(folder))
    out = tmp_path / "ix"
    last_json(cli("index", "--checkpoint", str(ckpt), "--data", str(folder), "--out", str(out)))
    res = last_json(cli("dedup", str(out), "--threshold", "0.9999"))
    assert res["out"] == str(out / "duplicates.csv") and res["images"] == 34 and res["groups"] == 4
    with open(out / "duplicates.csv") as f:
        table = list(csv.DictReader(f))
    pairs = {}
    for row in table:
        pairs.setdefault(row["group"], []).append(row["id"].rsplit("/", 2)[-2:])
    assert sorted(pairs.values()) == sorted([[c, "000.png"], [c, "copy_of_000.png"]] for c in "0123")
    assert "--threshold 1.5: must be in (0, 1]" in one_line_error(cli("dedup", str(out), "--threshold", "1.5"))
    assert "not a fastclr index" in one_line_error(cli("dedup", str(tmp_path / "digits")))
