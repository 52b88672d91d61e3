"""Similarity search: the exact index equals brute force, the approximate index reports its recall correctly,
``fastclr index`` writes a folder that ``fastclr search`` and :class:`fastclr.Index` read, and ``--update``
follows the files (new and changed ones embedded, rows of files gone dropped) and refuses another encoder's index."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("faiss", reason="similarity search needs faiss (pip install 'fastclr[search]')")

import fastclr  # noqa: E402
from evalkit import cli, digit_folder, last_json, make_checkpoint, one_line_error  # noqa: E402
from fastclr.errors import UserError  # noqa: E402
from fastclr.eval import index as store  # noqa: E402
from fastclr.eval.index import VectorIndex, recall_at  # noqa: E402


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def clustered(n: int, d: int, centres: int, seed: int = 0, spread: float = 0.3) -> np.ndarray:
    """Unit vectors around ``centres`` random directions: structure like real embeddings have."""
    rng = np.random.default_rng(seed)
    c = unit(rng.standard_normal((centres, d)))
    return unit(c[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of every query with every vector in float64, the k best: written out with numpy."""
    v, q = unit(vectors.astype(np.float64)), unit(queries.astype(np.float64))
    sims = q @ v.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), order


# --- the vector index ------------------------------------------------------------------------------


def test_exact_search_equals_brute_force():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((700, 24)).astype(np.float32) * rng.uniform(0.5, 3, (700, 1)).astype(np.float32)
    index = VectorIndex(vectors, [f"v{i}" for i in range(700)])
    assert index.kind == "exact" and index.meta["recall_at_10"] == 1.0
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1, atol=1e-6)
    queries = rng.standard_normal((40, 24)).astype(np.float32)
    scores, rows = index.search(queries, 10)
    want_s, want_r = brute_force(vectors, queries, 10)
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)
    # an indexed vector asking for its neighbours leaves itself out
    scores, rows = index.search(vectors[:5], 3, exclude=np.arange(5))
    _, want_r = brute_force(vectors, vectors[:5], 4)
    np.testing.assert_array_equal(rows, want_r[:, 1:])
    assert (rows != np.arange(5)[:, None]).all()


def test_the_approximate_index_reaches_and_reports_its_recall():
    vectors = clustered(4000, 32, centres=40)
    index = VectorIndex(vectors, [str(i) for i in range(4000)], exact_limit=1000)
    meta = index.meta
    assert meta["kind"] == "ivf" and meta["nlist"] == round(np.sqrt(4000)) and meta["recall_queries"] == 1000
    assert meta["recall_at_10"] >= store.RECALL_TARGET and meta["nprobe"] < meta["nlist"]
    # recomputed independently, every vector as a query (not the build's sample): the same figure within sampling error
    _, exact = brute_force(vectors, vectors, 11)
    _, found = index.search(vectors, 10, exclude=np.arange(4000))
    truth = [set(row[row != i][:10]) for i, row in enumerate(exact)]
    recall = np.mean([len(truth[i] & set(found[i])) / 10 for i in range(4000)])
    assert abs(recall - meta["recall_at_10"]) < 0.02, (recall, meta)
    # fewer lists searched: lower recall, and the tuned nprobe is the smallest power of two that reached the target
    index.faiss.nprobe = meta["nprobe"] // 2
    _, found = index.search(vectors, 10, exclude=np.arange(4000))
    assert np.mean([len(truth[i] & set(found[i])) / 10 for i in range(4000)]) < store.RECALL_TARGET + 0.01


class HalfRight:
    """A stand-in for a faiss index that returns the query itself, then 5 of the true 10 neighbours and 5 wrong ones."""

    def __init__(self, truth: np.ndarray, scores: np.ndarray):
        self.truth, self.scores = truth, scores

    def search(self, queries, k):
        rows = np.concatenate([np.arange(len(self.truth))[:, None], self.truth[:, :5], self.truth[:, :5] + 1000], 1)
        scores = np.concatenate([np.ones((len(self.truth), 1)), self.scores[:, :5], np.zeros((len(self.truth), 5))], 1)
        return scores[:, :k], rows[:, :k]


def test_recall_counts_only_true_neighbours_and_leaves_the_query_out():
    truth = np.arange(30).reshape(3, 10) + 10
    scores = np.linspace(0.9, 0.5, 10)[None].repeat(3, 0)
    assert recall_at(HalfRight(truth, scores), np.zeros((3, 4)), np.arange(3), scores, 10) == 0.5


def test_add_grows_the_index_and_refuses_ids_already_indexed():
    rng = np.random.default_rng(3)
    index = VectorIndex(rng.standard_normal((50, 8)).astype(np.float32), [f"a{i}" for i in range(50)], exact_limit=60)
    assert index.add(rng.standard_normal((5, 8)).astype(np.float32), [f"b{i}" for i in range(5)]) == 5
    assert len(index) == 55 and index.faiss.ntotal == 55 and index.kind == "exact"
    with pytest.raises(UserError, match="already indexed"):
        index.add(rng.standard_normal((1, 8)).astype(np.float32), ["a3"])
    index.add(rng.standard_normal((10, 8)).astype(np.float32), [f"c{i}" for i in range(10)])  # past exact_limit
    assert index.kind == "ivf" and index.faiss.ntotal == 65 and index.rows["c9"] == 64


def test_save_and_load_round_trip_with_parquet(tmp_path):
    vectors = clustered(300, 16, centres=5)
    index = VectorIndex(vectors, [f"id{i}" for i in range(300)], {"encoder": {"sha256": "x"}})
    files = index.save(tmp_path / "ix")
    assert {os.path.basename(f) for f in files} >= {"vectors.npy", "ids.json", "index.faiss", "meta.json"}
    back = VectorIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(np.asarray(back.vectors), np.asarray(index.vectors))
    assert back.ids == index.ids and back.meta["encoder"] == {"sha256": "x"} and back.kind == "exact"
    if (tmp_path / "ix" / "vectors.parquet").exists():
        import pyarrow.parquet as pq

        table = pq.read_table(tmp_path / "ix" / "vectors.parquet")
        assert table.column("id").to_pylist() == index.ids
        flat = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(300, 16)
        np.testing.assert_array_equal(flat, np.asarray(index.vectors))
    (tmp_path / "ix" / "ids.json").write_text(json.dumps(index.ids[:-1]))
    with pytest.raises(UserError, match="disagree in length"):
        VectorIndex.load(tmp_path / "ix")


def test_missing_faiss_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    with pytest.raises(UserError, match=r"pip install 'fastclr\[search\]'"):
        VectorIndex(np.ones((2, 3), np.float32), ["a", "b"])


# --- fastclr index, fastclr search, fastclr.Index ---------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    folder = digit_folder(root / "digits", 4, 1)  # 40 train images (indexed), 10 test (not)
    ckpt, _ = make_checkpoint(root / "last.pt", str(folder))
    other, _ = make_checkpoint(root / "other.pt", str(folder), seed=1)
    return root, folder, ckpt, other


def test_index_then_search_finds_each_file_first(photos, tmp_path):
    root, folder, ckpt, _ = photos
    out = tmp_path / "digits.index"
    res = last_json(cli("index", "--checkpoint", str(ckpt), "--data", str(folder), "--out", str(out)))
    assert res["count"] == res["added"] == 40 and res["kind"] == "exact" and res["recall_at_10"] == 1.0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["encoder"]["sha256"] == store.file_digest(ckpt) and meta["encoder"]["image_size"] == 8
    assert meta["data"] == [str(folder.resolve())]
    ids = json.loads((out / "ids.json").read_text())
    assert all(os.path.isabs(i) for i in ids) and ids[0].endswith("train/0/000.png")
    # the rows are the encoder's features, L2-normalised (what fastclr.embed gives for the same files)
    h, _ = fastclr.embed(fastclr.load_encoder(ckpt), ids)
    np.testing.assert_allclose(np.load(out / "vectors.npy"), unit(h), atol=1e-5)

    original = folder / "train" / "3" / "001.png"
    query = shutil.copy(original, tmp_path / "copy.png")  # the same pixels under a path the index does not know
    r = cli("search", str(out), "--query", str(query), str(folder / "test" / "7"), ids[5], "-k", "4")
    lines = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert r.returncode == 0 and len(lines) == 1 + 1 + 1 + 1  # the file, the folder's one image, the id, summary
    first = lines[0]
    assert first["query"] == str(query) and first["neighbours"][0]["id"] == str(original.resolve())
    assert first["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-5) and len(first["neighbours"]) == 4
    want_s, want_r = brute_force(np.load(out / "vectors.npy"), h[[ids.index(str(original.resolve()))]], 4)
    assert [n["id"] for n in first["neighbours"]] == [ids[i] for i in want_r[0]]
    by_id = next(line for line in lines if line.get("query") == ids[5])
    assert ids[5] not in [n["id"] for n in by_id["neighbours"]] and len(by_id["neighbours"]) == 4
    assert lines[-1]["queries"] == 3 and lines[-1]["k"] == 4


def test_update_follows_the_files(photos, tmp_path):
    """--update embeds new files and changed ones again, drops the rows of files gone (or no longer images), and
    leaves every other row as it was."""
    root, folder, ckpt, other = photos
    data = tmp_path / "data"
    shutil.copytree(folder / "train", data)
    new = [data / "new" / f"{i}.png" for i in range(3)]
    moved = [shutil.move(str(f), str(tmp_path)) for f in sorted((data / "9").glob("*.png"))[:3]]  # kept out at first
    out = tmp_path / "ix"
    first = last_json(cli("index", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out)))
    assert first["count"] == first["added"] == 37 and first["removed"] == first["replaced"] == 0
    before = dict(zip(json.loads((out / "ids.json").read_text()), np.load(out / "vectors.npy")))
    stamps = json.loads((out / "files.json").read_text())[str(data.resolve())]
    assert sorted(stamps) == sorted(before) and all(len(s) == 2 for s in stamps.values())
    new[0].parent.mkdir()
    for src, dst in zip(moved, new):
        shutil.copy(src, dst)
    junk, changed, gone = data / "0" / "000.png", data / "1" / "000.png", data / "3" / "000.png"
    junk.write_bytes(b"not an image any more")  # changed, and no longer decodes: its row goes
    shutil.copy(data / "2" / "000.png", changed)  # other pixels under the same name: embedded again
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later time, whatever the clock's grain
    gone.unlink()
    res = last_json(cli("index", "--out", str(out), "--update"))  # checkpoint and data: the index's own
    assert (res["added"], res["replaced"], res["removed"], res["skipped"], res["count"]) == (3, 1, 2, 1, 38)
    rows = dict(zip(json.loads((out / "ids.json").read_text()), np.load(out / "vectors.npy")))
    assert str(junk.resolve()) not in rows and str(gone.resolve()) not in rows
    assert all(str(p.resolve()) in rows for p in new)
    for name, row in before.items():  # the other rows as they were
        if name not in (str(junk.resolve()), str(gone.resolve()), str(changed.resolve())):
            np.testing.assert_array_equal(rows[name], row)
    np.testing.assert_allclose(rows[str(changed.resolve())], rows[str((data / "2" / "000.png").resolve())], atol=1e-5)
    again = last_json(cli("index", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--update"))
    assert (again["added"], again["replaced"], again["removed"], again["count"]) == (0, 0, 0, 38)
    (out / "files.json").unlink()  # an index without stamps: files gone from its folder still leave it
    (data / "4" / "000.png").unlink()
    older = last_json(cli("index", "--out", str(out), "--update"))
    assert (older["added"], older["removed"], older["count"]) == (0, 1, 37) and (out / "files.json").is_file()
    line = one_line_error(cli("index", "--checkpoint", str(other), "--data", str(data), "--out", str(out), "--update"))
    assert "built by another encoder" in line and "sha256" in line


def test_user_mistakes_exit_2_with_one_line(photos, tmp_path):
    root, folder, ckpt, _ = photos
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    cases = [
        (("index", "--data", str(folder), "--out", str(tmp_path / "a")), "needs --checkpoint and --data"),
        (("index", "--checkpoint", str(ckpt), "--data", str(folder), "--out", str(tmp_path / "busy")), "not a fastclr"),
        (("index", "--checkpoint", str(tmp_path / "no.pt"), "--data", str(folder), "--out", str(tmp_path / "b")),
         "no such file"),
        (("search", str(tmp_path / "busy"), "--query", "x"), "not a fastclr index"),
    ]  # fmt: skip
    for args, needle in cases:
        assert needle in one_line_error(cli(*args)), args
    out = tmp_path / "ix"
    last_json(cli("index", "--checkpoint", str(ckpt), "--data", str(folder), "--out", str(out)))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    assert "no-such-id: not an image file" in one_line_error(cli("search", str(out), "--query", "no-such-id"))
    assert "bad.png: not an image" in one_line_error(cli("search", str(out), "--query", str(tmp_path / "bad.png")))
    assert "--k 0: must be > 0" in one_line_error(cli("search", str(out), "--query", str(folder), "-k", "0"))


def test_python_index_equals_the_command(photos, tmp_path):
    root, folder, ckpt, _ = photos
    encoder = fastclr.load_encoder(ckpt)
    index = fastclr.Index.build(encoder, str(folder))
    out = tmp_path / "cmd.index"
    last_json(cli("index", "--checkpoint", str(ckpt), "--data", str(folder), "--out", str(out)))
    assert index.ids == json.loads((out / "ids.json").read_text())
    np.testing.assert_allclose(index.vectors, np.load(out / "vectors.npy"), atol=1e-6)
    original = str(folder / "train" / "2" / "000.png")
    query = shutil.copy(original, tmp_path / "copy.png")
    hits = index.search(query, k=3)[0]
    assert hits[0][0] == original and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    by_id, by_file = index.search(original, k=3)[0], index.search(query, k=4)[0][1:]  # an id leaves itself out
    assert [i for i, _ in by_id] == [i for i, _ in by_file]
    np.testing.assert_allclose([s for _, s in by_id], [s for _, s in by_file], atol=1e-5)
    files = index.save(tmp_path / "api.index")
    loaded = fastclr.Index.load(tmp_path / "api.index")  # its encoder comes from the recorded checkpoint
    assert len(files) >= 4 and loaded.search(query, k=3)[0] == hits and loaded.recall_at_10 == 1.0
    assert loaded.add(str(folder)) == 0  # every file is in already
    assert loaded.add([str(folder / "test" / "5" / "000.png")]) == 1 and len(loaded) == 41
    assert "Index(41 vectors" in repr(loaded)
    gone = [str(folder / "test" / "5" / "000.png"), index.ids[0], "not-indexed"]
    assert loaded.remove(gone) == 2 and len(loaded) == 39 and index.ids[0] not in loaded.ids
    assert loaded.search(index.ids[1], k=50)[0][-1][0] != index.ids[0]  # the faiss index lost the row too
    assert len(loaded.search(index.ids[1], k=50)[0]) == 38
