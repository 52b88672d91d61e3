"""Similarity search over an encoder's embeddings: the index folder, :class:`VectorIndex` and ``fastclr index``.

An index is a folder that any later command (``search``, ``dedup``, ``serve``) and :class:`fastclr.Index` read:

- ``vectors.npy``: float32 [N, d], every row L2-normalised, so an inner product is a cosine similarity;
- ``ids.json``: the N ids in row order (absolute file paths for folders and lists, the data set's ids else);
- ``index.faiss``: a faiss index over the rows: exact inner product (``IndexFlatIP``) up to ``exact_limit``
  rows (200,000), an inverted-file index beyond (``IndexIVFFlat``, about sqrt(N) lists, k-means on a sample)
  whose ``nprobe`` (lists searched per query) is the smallest power of two that reaches recall@10 >= 0.95
  against exact search on 1,000 of the indexed vectors as queries (each query's own row left out), at most a
  quarter of the lists (vectors without cluster structure stop there, with a warning and the recall reached);
- ``meta.json``: the encoder's identity (checkpoint path, SHA-256, size, mtime, arch, image_size,
  projection), the data specs, the kind of index and its measured ``recall_at_10`` (1.0 for exact search);
- ``vectors.parquet`` (when pyarrow is installed): columns ``id`` (string) and ``embedding``
  (fixed-size list of float32), the table a vector database loads as it is (README: Qdrant);
- ``files.json``: for folder and list specs, each indexed file's size and modification time (ns), by spec:
  what ``--update`` compares with the files as they are now.

Embedding runs in bounded memory through the paths of ``fastclr embed`` (``eval/embed.py``): files are
decoded by loader workers a batch at a time and their rows written to a memory-mapped file, so memory holds
the batches in flight and the vectors themselves (faiss keeps one copy). ``--update`` brings the index in
line with its data: for folders and lists it embeds the files not indexed yet and those whose size or
modification time changed, and drops the rows of files that are gone (or no longer decode); other specs
(standard sets, prepared caches, shards) gain the ids not indexed yet. It refuses an index that another
encoder built.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastclr import __version__, log
from fastclr.data import datasets
from fastclr.data.sets import FileSet, ImageSet
from fastclr.data.specs import parse as parse_spec
from fastclr.errors import UserError, require_positive
from fastclr.eval import embed as embedding
from fastclr.train import restore

EXACT_LIMIT = 200_000  # rows searched exactly; an approximate (IVF) index beyond
RECALL_QUERIES = 1000  # indexed vectors used as queries when recall@10 is measured
RECALL_TARGET = 0.95  # the recall@10 the IVF index's nprobe is tuned to reach
FORMAT = "fastclr-index"
CHUNK = 65_536  # rows a time through faiss, normalisation and file writes (bounded memory)
INSTALL = "pip install 'fastclr[search]'"
STAMPS = "files.json"  # per spec, each indexed file's [size, mtime_ns]


def faiss_module() -> Any:
    """faiss, imported on first use; a one-line UserError naming the extra where it is missing."""
    try:
        import faiss
    except ImportError:
        raise UserError(f"similarity search needs faiss: {INSTALL}") from None
    return faiss


def normalise(rows: np.ndarray) -> np.ndarray:
    """Divide each row by its L2 norm in place, ``CHUNK`` rows at a time (all-zero rows stay zero); returns rows."""
    for lo in range(0, rows.shape[0], CHUNK):
        block = np.asarray(rows[lo : lo + CHUNK], dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        rows[lo : lo + CHUNK] = block / np.maximum(norms, 1e-12)
    return rows


def exact_top(
    vectors: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None = None, block: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: the k largest inner products of each query with ``vectors`` ([q, k] scores, [q, k] rows),
    best first; ``exclude[i]`` is a row left out for query i (its own). Blocks of rows bound the memory."""
    q = queries.shape[0]
    best_s = np.full((q, 0), -np.inf, dtype=np.float32)
    best_r = np.zeros((q, 0), dtype=np.int64)
    for lo in range(0, vectors.shape[0], block):
        sims = queries @ np.asarray(vectors[lo : lo + block], dtype=np.float32).T
        if exclude is not None:
            inside = (exclude >= lo) & (exclude < lo + sims.shape[1])
            sims[np.flatnonzero(inside), exclude[inside] - lo] = -np.inf
        if sims.shape[1] > k:  # the block's k best only: memory stays [q, block] whatever N
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            sims, rows = np.take_along_axis(sims, part, 1), part + lo
        else:
            rows = np.broadcast_to(np.arange(lo, lo + sims.shape[1]), sims.shape)
        s, r = np.concatenate([best_s, sims], 1), np.concatenate([best_r, rows], 1)
        keep = _best(s, r, k)
        best_s, best_r = np.take_along_axis(s, keep, 1), np.take_along_axis(r, keep, 1)
    return best_s, best_r


def _best(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Per line, the positions of the k best scores, ties broken by the lower row (as a stable sort of the rows)."""
    order = np.argsort(rows, axis=1, kind="stable")
    ranked = np.argsort(-np.take_along_axis(scores, order, 1), axis=1, kind="stable")
    return np.take_along_axis(order, ranked, 1)[:, :k]


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def encoder_identity(
    checkpoint: str | Path, arch: str | None, image_size: int, projection: bool, dim: int, cifar_stem: bool = False
) -> dict:
    """What says which encoder made the vectors: the file (path, SHA-256, size, mtime) and how it was used."""
    path = Path(checkpoint).resolve()
    st = path.stat()
    return {
        "checkpoint": str(path),
        "sha256": file_digest(path),
        "size": st.st_size,
        "mtime": st.st_mtime,
        "arch": arch,
        "cifar_stem": cifar_stem,
        "image_size": int(image_size),
        "projection": bool(projection),
        "dim": int(dim),
    }


SAME_ENCODER = ("sha256", "image_size", "projection", "dim")  # what must match to mix vectors (the digest: weights)


def check_same_encoder(built: dict, now: dict, where: str) -> None:
    """UserError unless ``now`` is the encoder that built the index (same weights, input side and output)."""
    differ = [k for k in SAME_ENCODER if built.get(k) != now.get(k)]
    if differ:
        raise UserError(
            f"{where}: built by another encoder ({', '.join(f'{k} {built.get(k)!r} != {now.get(k)!r}' for k in differ)}"
            f"; checkpoint {built.get('checkpoint')}); rebuild it without --update"
        )


class VectorIndex:
    """L2-normalised vectors with their ids and a faiss index over them (the folder format of the module docstring).

    Args:
        vectors: float32 [N, d], normalised here (a memory-mapped array is normalised in its file).
        ids: N distinct strings.
        meta: what ``meta.json`` keeps besides the index's own facts (encoder identity, data specs).
        exact_limit: rows searched exactly; beyond, an IVF index tuned to ``RECALL_TARGET``.
        copy: normalise a copy of ``vectors`` (False: normalise them in place, e.g. a writable memory map).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        ids: list[str],
        meta: dict | None = None,
        exact_limit: int = EXACT_LIMIT,
        copy: bool = True,
    ):
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise UserError(f"index: {len(ids)} ids for vectors of shape {tuple(vectors.shape)}")
        own = copy or vectors.dtype != np.float32
        self.vectors = normalise(np.array(vectors, dtype=np.float32) if own else vectors)
        self.ids = [str(i) for i in ids]
        self.rows = _row_table(self.ids)
        self.meta = dict(meta or {})
        self.exact_limit = int(exact_limit)
        self.faiss: Any = None
        self._build_faiss()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def kind(self) -> str:
        """``exact`` (IndexFlatIP) or ``ivf`` (IndexIVFFlat, approximate)."""
        return str(self.meta.get("kind", "exact"))

    # --- faiss -----------------------------------------------------------------------------------

    def _build_faiss(self, seed: int = 0) -> None:
        """(Re)build the faiss index from the vectors: exact up to ``exact_limit`` rows, IVF beyond."""
        faiss = faiss_module()
        n, d = self.vectors.shape
        if n <= self.exact_limit:
            self.faiss = faiss.IndexFlatIP(d)
            self.meta.update(kind="exact", nlist=None, nprobe=None)
        else:
            nlist = max(1, min(round(math.sqrt(n)), n // 39))  # faiss wants >= 39 training points a list
            quantizer = faiss.IndexFlatIP(d)
            ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.cp.niter, ivf.cp.seed = 10, seed
            sample = np.sort(np.random.default_rng(seed).choice(n, size=min(n, 64 * nlist), replace=False))
            ivf.train(np.ascontiguousarray(self.vectors[sample]))
            ivf.own_fields = True  # the IVF index keeps the quantizer alive
            quantizer.this.disown()
            self.faiss = ivf
            self.meta.update(kind="ivf", nlist=nlist)
        if self.vectors.flags.c_contiguous:  # one add: faiss sizes its storage once (no growth by doubling)
            self.faiss.add(self.vectors)
        else:
            for lo in range(0, n, CHUNK):
                self.faiss.add(np.ascontiguousarray(self.vectors[lo : lo + CHUNK]))
        self._measure()

    def _measure(self, queries: int = RECALL_QUERIES, seed: int = 0) -> None:
        """recall@10 against exact search (1.0 for the exact index); for IVF, first tune nprobe to the target."""
        if self.kind == "exact":
            self.meta.update(recall_at_10=1.0, recall_queries=0)
            return
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(self), size=min(queries, len(self)), replace=False))
        q = np.ascontiguousarray(self.vectors[rows])
        k = min(10, len(self) - 1)
        exact_s, _ = exact_top(self.vectors, q, k, exclude=rows)
        ivf = self.faiss
        nlist = ivf.nlist
        most = max(1, nlist // 4)  # past a quarter of the lists an IVF index saves little over exact search
        ladder = [p for p in (2**i for i in range(32)) if p < most] + [most]
        recall = 0.0
        for nprobe in ladder:
            ivf.nprobe = nprobe
            recall = recall_at(self.faiss, q, rows, exact_s, k)
            if recall >= RECALL_TARGET:
                break
        if recall < RECALL_TARGET:
            log.warn(f"index: recall@10 {recall:.3f} below {RECALL_TARGET} with a quarter of the lists searched: "
                     "vectors with little cluster structure; raise exact_limit for exact search")  # fmt: skip
        self.meta.update(nprobe=int(ivf.nprobe), recall_at_10=round(float(recall), 4), recall_queries=len(rows))

    def search(
        self, queries: np.ndarray, k: int = 10, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest rows of each query by cosine similarity: (scores float32 [q, k], rows int64 [q, k]),
        best first; row -1 (score -inf) where fewer were found. Queries are normalised here;
        ``exclude[i]`` is a row left out of query i's answer (an indexed vector asked for its neighbours)."""
        require_positive(k=k)
        q = normalise(np.array(queries, dtype=np.float32, ndmin=2))
        want = min(k + (exclude is not None), len(self))
        if want == 0 or q.shape[0] == 0:
            return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
        scores, rows = self.faiss.search(q, want)
        scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
        if exclude is not None:
            keep = rows != np.asarray(exclude).reshape(-1, 1)
            order = np.argsort(~keep, axis=1, kind="stable")  # kept entries first, in their order
            scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
            drop = ~np.take_along_axis(keep, order, 1)
            scores[drop], rows[drop] = -np.inf, -1
        return scores[:, :k], rows[:, :k]

    # --- growing, saving, loading ------------------------------------------------------------------

    def add(self, vectors: np.ndarray, ids: list[str]) -> int:
        """Append rows (normalised here) with new ids; UserError for an id already indexed. Returns rows added.

        The faiss index grows in place (an IVF index keeps its lists, re-tunes nprobe and re-measures its
        recall), or is rebuilt from the stored vectors when the rows pass ``exact_limit``: nothing is embedded
        again."""
        ids = [str(i) for i in ids]
        if vectors.shape[0] != len(ids):
            raise UserError(f"index: {len(ids)} ids for {vectors.shape[0]} vectors")
        if not ids:
            return 0
        if vectors.shape[1] != self.dim:
            raise UserError(f"index: vectors of width {vectors.shape[1]} added to an index of width {self.dim}")
        again = [i for i in ids if i in self.rows]
        if again or len(set(ids)) < len(ids):
            raise UserError(f"index: id {(again or ids)[0]!r} is already indexed (ids must be distinct)")
        new = normalise(np.array(vectors, dtype=np.float32))
        was_exact = self.kind == "exact"
        self.vectors = np.concatenate([np.asarray(self.vectors), new])
        for i, name in enumerate(ids, start=len(self.ids)):
            self.rows[name] = i
        self.ids += ids
        if was_exact and len(self) > self.exact_limit:
            self._build_faiss()
        else:
            for lo in range(0, new.shape[0], CHUNK):
                self.faiss.add(np.ascontiguousarray(new[lo : lo + CHUNK]))
            if self.kind == "ivf":
                self._measure()
        return len(ids)

    def remove(self, ids: list[str]) -> int:
        """Drop the rows of ``ids`` (those not indexed are ignored); the faiss index is rebuilt from the
        remaining vectors (an IVF index retrains its lists and re-measures its recall). Returns rows removed."""
        drop = {self.rows[str(i)] for i in ids if str(i) in self.rows}
        if not drop:
            return 0
        keep = np.array([r for r in range(len(self)) if r not in drop], dtype=np.int64)
        self.vectors = np.ascontiguousarray(np.asarray(self.vectors)[keep])
        self.ids = [self.ids[r] for r in keep.tolist()]
        self.rows = _row_table(self.ids)
        self._build_faiss()
        return len(drop)

    def facts(self) -> dict:
        """The index's own facts for a result line: count, dim, kind, recall@10 and how it was measured."""
        keys = ("kind", "recall_at_10", "recall_queries", "nlist", "nprobe")
        return {"count": len(self), "dim": self.dim, **{k: self.meta.get(k) for k in keys}}

    def save(self, folder: str | Path) -> list[str]:
        """Write the folder (module docstring); each file goes to a temporary name first, meta.json last.
        Returns the files written."""
        faiss = faiss_module()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name, write in (
            ("vectors.npy", lambda p: _save_npy(p, self.vectors)),
            ("ids.json", lambda p: p.write_text(json.dumps(self.ids))),
            ("index.faiss", lambda p: faiss.write_index(self.faiss, str(p))),
        ):
            tmp = folder / f".{name}.tmp"
            write(tmp)
            os.replace(tmp, folder / name)
            written.append(str(folder / name))
        if _write_parquet(folder / "vectors.parquet", self.vectors, self.ids):
            written.append(str(folder / "vectors.parquet"))
        meta = {"format": FORMAT, "fastclr": __version__, **self.meta, **self.facts(), "exact_limit": self.exact_limit}
        (folder / ".meta.json.tmp").write_text(json.dumps(meta, indent=1))
        os.replace(folder / ".meta.json.tmp", folder / "meta.json")
        self.vectors = np.load(folder / "vectors.npy", mmap_mode="r")  # the file's rows: no copy held in memory
        return [*written, str(folder / "meta.json")]

    @classmethod
    def load(cls, folder: str | Path) -> VectorIndex:
        """Read an index folder; the vectors stay memory-mapped. UserError for a folder that is not a complete index."""
        faiss = faiss_module()
        folder = Path(folder)
        meta = read_meta(folder)
        try:
            vectors = np.load(folder / "vectors.npy", mmap_mode="r")
            ids = json.loads((folder / "ids.json").read_text())
            index = faiss.read_index(str(folder / "index.faiss"))
        except (OSError, ValueError, RuntimeError) as e:
            reason = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
            raise UserError(f"{folder}: an incomplete or damaged index ({reason}); rebuild it") from None
        if not (vectors.shape[0] == len(ids) == index.ntotal == meta.get("count")):
            raise UserError(
                f"{folder}: vectors, ids and faiss index disagree in length (an interrupted write?); rebuild"
            )
        self = cls.__new__(cls)
        self.vectors, self.ids, self.rows, self.faiss = vectors, [str(i) for i in ids], _row_table(ids), index
        self.exact_limit = int(meta.pop("exact_limit", EXACT_LIMIT))
        self.meta = {k: v for k, v in meta.items() if k not in ("format", "fastclr", "count", "dim")}
        if self.kind == "ivf":
            index.nprobe = int(meta["nprobe"])
        return self


def _row_table(ids: list[str]) -> dict[str, int]:
    rows = {str(name): i for i, name in enumerate(ids)}
    if len(rows) < len(ids):
        raise UserError("index: ids must be distinct")
    return rows


def recall_at(index: Any, queries: np.ndarray, rows: np.ndarray, exact_scores: np.ndarray, k: int) -> float:
    """Mean fraction of the true k nearest (query's own row left out) that ``index`` returns: a returned row
    counts when its score reaches the k-th exact score (ties with it count as true neighbours)."""
    if k <= 0:
        return 1.0
    scores, found = index.search(queries, k + 1)
    hits = 0
    for i in range(len(rows)):
        mine = [(s, r) for s, r in zip(scores[i], found[i]) if r >= 0 and r != rows[i]][:k]
        hits += sum(s >= exact_scores[i, k - 1] - 1e-5 for s, _ in mine)
    return hits / (len(rows) * k)


def read_meta(folder: Path) -> dict:
    """``meta.json`` of an index folder; UserError when it is not one."""
    path = Path(folder) / "meta.json"
    if not path.is_file():
        raise UserError(f"{folder}: not a fastclr index (no meta.json); build one with `fastclr index`")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path}: unreadable; rebuild the index") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a fastclr index's metadata")
    return meta


def _save_npy(path: Path, rows: np.ndarray) -> None:
    """Write rows to a .npy file CHUNK rows at a time (no second copy of a memory-mapped array in memory)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": tuple(rows.shape)})
        for lo in range(0, rows.shape[0], CHUNK):
            f.write(np.ascontiguousarray(rows[lo : lo + CHUNK], dtype=np.float32).tobytes())


def _write_parquet(path: Path, rows: np.ndarray, ids: list[str]) -> bool:
    """``id`` + ``embedding`` (fixed-size list of float32) in row groups of CHUNK rows; False without pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), rows.shape[1]))])
    tmp = path.with_name(f".{path.name}.tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for lo in range(0, rows.shape[0], CHUNK):
            block = np.ascontiguousarray(rows[lo : lo + CHUNK], dtype=np.float32)
            column = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), rows.shape[1])
            writer.write_table(pa.table({"id": pa.array(ids[lo : lo + CHUNK], pa.string()), "embedding": column}))
    os.replace(tmp, path)
    return True


# --- fastclr index ------------------------------------------------------------------------------


def _listed(spec: str) -> FileSet | None:
    """A folder's or list's pretraining files (absolute paths, listed, not decoded); None for other specs."""
    kind, _ = parse_spec(spec)
    if kind not in ("folder", "list"):
        return None
    train, _ = datasets.listings(spec)
    return FileSet([Path(os.path.abspath(f)) for f in train.files])


@dataclass
class FileChanges:
    """What ``--update`` finds for a folder or list spec: the files to embed (not indexed yet, or changed since),
    the ids to drop (changed or gone), and the stamp of every file listed now (:func:`file_stamp`)."""

    embed: FileSet
    drop: list[str]
    now: dict[str, list[int] | None]


def file_stamp(path: str | Path) -> list[int] | None:
    """[size, mtime_ns] of a file (None when it cannot be read): a file whose stamp moved is embedded again."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def file_changes(spec: str, known: dict[str, int], tracked: dict[str, list[int]] | None) -> FileChanges | None:
    """A folder's or list's files against the ids already indexed (``known``) and their stamps when indexed
    (``tracked``; None: not kept, as for a spec new to the index); None for specs that are not files."""
    files = _listed(spec)
    if files is None:
        return None
    now = {str(f): file_stamp(f) for f in files.files}
    if tracked is None:  # no stamps to compare: a folder's indexed ids are those below it, none known changed
        kind, path = parse_spec(spec)
        root = os.path.join(os.path.abspath(str(path)), "") if kind == "folder" else None
        mine, changed = [i for i in known if root and i.startswith(root)], []
    else:
        mine = list(tracked)
        changed = [i for i, stamp in now.items() if i in known and i in tracked and tracked[i] != stamp]
    gone = [i for i in mine if i in known and i not in now]
    redo = set(changed)
    return FileChanges(FileSet([f for f in files.files if str(f) not in known or str(f) in redo]), gone + changed, now)


def read_stamps(folder: Path) -> dict[str, dict[str, list[int]]]:
    """``files.json`` of an index folder: {spec: {id: [size, mtime_ns]}}; empty when the index has none."""
    path = folder / STAMPS
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        raise UserError(f"{path}: unreadable; rebuild the index") from None


def _save_stamps(folder: Path, tracked: dict, changes: dict[str, FileChanges | None], rows: dict[str, int]) -> str:
    """Write ``files.json``: the stamps of the files the index holds now, by spec (atomically)."""
    stamps = {spec: {i: s for i, s in old.items() if i in rows} for spec, old in tracked.items()}
    for spec, c in changes.items():
        if c is not None:
            stamps[spec] = {i: s for i, s in c.now.items() if i in rows and s is not None}
    (folder / f".{STAMPS}.tmp").write_text(json.dumps(stamps))
    os.replace(folder / f".{STAMPS}.tmp", folder / STAMPS)
    return str(folder / STAMPS)


def _embed_new(
    fn: Any, spec: str, files: FileSet | None, known: dict[str, int], cfg: Any, device: torch.device, precision: str,
    scratch: Path, batch_size: int,
) -> tuple[np.ndarray, list[str], int]:  # fmt: skip
    """Rows and ids of the images of ``spec`` to add, and how many could not be read.

    Folders and lists: ``files`` (:func:`file_changes`) are decoded by loader workers and their rows written to
    the memory-mapped ``scratch`` file (:func:`fastclr.eval.embed.embed_files`). Other specs (``files`` None:
    digits, cifar10, prepared:DIR, shards:) are loaded as ``fastclr embed`` loads them and the rows whose ids
    are not in ``known`` embedded."""
    if files is None:
        images = restore.load_data(cfg, spec).pretrain
        if isinstance(images, ImageSet):
            new = [i for i, name in enumerate(images.ids) if str(name) not in known]
            rows = embedding.embed_rows(fn, images.images, torch.tensor(new, dtype=torch.int64), cfg.image_size,
                                        device, batch_size, precision)  # fmt: skip
            return rows.numpy(), [str(images.ids[i]) for i in new], 0
        files = images  # files streamed from disk (large images) or shards
    if len(files) == 0:
        return np.zeros((0, 0), np.float32), [], 0
    count, _, _ = embedding.embed_files(fn, files, scratch, cfg.image_size, device, batch_size=batch_size,
                                        precision=precision, workers=cfg.workers)  # fmt: skip
    rows = np.load(scratch, mmap_mode="r+")  # normalised in the file, copied once (into faiss)
    ids = json.loads(scratch.with_suffix(".ids.json").read_text())
    fresh = [i for i, name in enumerate(ids) if name not in known]  # shards: every member was embedded
    rows = rows if len(fresh) == len(ids) else rows[fresh]
    return rows, [ids[i] for i in fresh], len(files) - count


def _target(out: str, checkpoint: str | None, data: str | None, update: bool) -> tuple[VectorIndex | None, str, list]:
    """The index to extend (None: build anew), the checkpoint and the data specs (folders and lists absolute);
    with ``update`` the index's own checkpoint and specs stand in for those not given."""
    if not out:
        raise UserError("--out is required: the index folder to write")
    folder, old = Path(out), None
    if update and (folder / "meta.json").is_file():
        old = VectorIndex.load(folder)
        checkpoint = checkpoint or old.meta["encoder"]["checkpoint"]
        specs = [data] if data else list(old.meta.get("data", []))
    elif folder.exists() and any(folder.iterdir()) and not (folder / "meta.json").is_file():
        raise UserError(f"--out {out}: an existing folder that is not a fastclr index; choose a new folder")
    else:
        specs = [data] if data else []
    if not checkpoint or not specs:
        raise UserError(f"fastclr index needs --checkpoint and --data{'' if update else ' (or --update of an index)'}")
    if not Path(checkpoint).is_file():
        raise UserError(f"--checkpoint {checkpoint}: no such file")
    return old, checkpoint, [os.path.abspath(s) if parse_spec(s)[0] in ("folder", "list") else s for s in specs]


def _grown(old: VectorIndex | None, rows: np.ndarray, ids: list[str], meta: dict, limit: int, spec: str) -> VectorIndex:
    """A new index of the rows (normalised in place: a memory map stays one), or ``old`` with them added."""
    if old is None:
        if not ids:
            raise UserError(f"--data {spec}: no readable images to index")
        return VectorIndex(rows, ids, meta, limit, copy=False)
    old.meta.update(meta)
    old.add(rows, ids)
    return old


def _encoder(checkpoint: str, device: str | None, projection: bool) -> tuple[Any, Any, torch.device, str, dict]:
    """The checkpoint's encoder as a function (h, or z with ``projection``), its config, device, precision and
    identity (:func:`encoder_identity`)."""
    restored, dev, precision = restore.open_for_command(checkpoint, device)
    cfg, model = restored.cfg, restored.model.eval()
    fn = (lambda x: model.project(model.encode(x).float())) if projection else model.encode
    width = cfg.proj_dim if projection else model.feature_dim
    return fn, cfg, dev, precision, encoder_identity(checkpoint, cfg.arch, cfg.image_size, projection, width,
                                                     cfg.cifar_stem)  # fmt: skip


def command(
    checkpoint: str | None = None,
    data: str | None = None,
    out: str = "",
    *,
    projection: bool = False,
    update: bool = False,
    batch_size: int = 256,
    device: str | None = None,
    exact_limit: int = EXACT_LIMIT,
) -> dict:
    """``fastclr index``: embed a data set, L2-normalise, and write a similarity-search index folder.

    The folder holds vectors.npy, ids.json, index.faiss, meta.json, files.json (the files' sizes and times) and
    vectors.parquet (with pyarrow; a vector database loads it as it is). faiss searches exactly up to 200,000
    vectors, with an IVF index beyond whose recall@10 against exact search is measured at build time and reported.
    Files are decoded by workers and embedded a batch at a time: memory holds the vectors and the batches in
    flight. --update follows the data: files not indexed yet and files changed since (size or modification time)
    are embedded, rows of files gone are dropped, unchanged files are not read; an index another encoder built is
    refused. Needs pip install 'fastclr[search]'.

    Args:
        checkpoint: a fastclr checkpoint (OUT/checkpoints/last.pt); with update, default: the index's.
        data: data spec of the images to index; with update, default: the specs the index was built from.
        out: the index folder to write (or, with update, to extend).
        projection: index z = g(h) instead of h.
        update: bring the index at OUT in line with its data (new, changed and removed files).
        batch_size: images embedded at a time.
        device: auto (default: the checkpoint's setting), cpu, cuda.
        exact_limit: vectors searched exactly; beyond, an approximate IVF index.
    """
    require_positive(batch_size=batch_size)
    faiss_module()  # the extra's absence is said before any work
    old, checkpoint, specs = _target(out, checkpoint, data, update)
    fn, cfg, dev, precision, identity = _encoder(checkpoint, device, projection)
    if old is not None:
        check_same_encoder(old.meta["encoder"], identity, f"--update {out}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    known = dict(old.rows) if old is not None else {}
    tracked = read_stamps(folder) if old is not None else {}
    changes = {spec: file_changes(spec, known, tracked.get(spec)) for spec in specs}
    drop = sorted({i for c in changes.values() if c is not None for i in c.drop})
    for name in drop:
        known.pop(name)
    with _scratch_files(folder, len(specs)) as scratch:  # the new rows, memory-mapped until the index is written
        rows, ids, skipped = _embed_all(fn, specs, changes, known, cfg, dev, precision, scratch, batch_size,
                                        identity["dim"])  # fmt: skip
        if old is not None:
            old.remove(drop)
        meta = {"encoder": identity, "data": sorted({*(old.meta.get("data", []) if old else []), *specs})}
        index = _grown(old, rows, ids, meta, exact_limit, specs[0])
        files = [*index.save(folder), _save_stamps(folder, tracked, changes, index.rows)]
    if skipped:
        log.warn(f"index: {skipped} file(s) could not be decoded and were left out")
    speed = round(len(ids) / (time.perf_counter() - start), 1) if ids else None  # embedded, indexed and written
    added, dropped = set(ids), set(drop)
    return {"out": str(folder), **index.facts(), "added": len(added - dropped), "replaced": len(added & dropped),
            "removed": len(dropped - added), "skipped": skipped, "images_per_s": speed, "files": files}  # fmt: skip


@contextlib.contextmanager
def _scratch_files(folder: Path, count: int) -> Iterator[list[Path]]:
    """``count`` scratch files in the index folder for new rows, removed at the end whatever happens."""
    paths = [folder / f".new{k}.npy" for k in range(count)]
    try:
        yield paths
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
            path.with_suffix(".ids.json").unlink(missing_ok=True)


def _embed_all(
    fn: Any, specs: list[str], changes: dict[str, FileChanges | None], known: dict[str, int], cfg: Any,
    dev: torch.device, precision: str, scratch: list[Path], batch_size: int, width: int,
) -> tuple[np.ndarray, list[str], int]:  # fmt: skip
    """The rows and ids every spec adds (:func:`_embed_new`, through its ``scratch`` file), and how many files
    could not be read."""
    rows, skipped, ids = np.zeros((0, width), np.float32), 0, list[str]()
    for spec, path in zip(specs, scratch):
        c = changes[spec]
        r, i, bad = _embed_new(fn, spec, c.embed if c is not None else None, {**known, **dict.fromkeys(ids, 0)}, cfg,
                               dev, precision, path, batch_size)  # fmt: skip
        rows, ids, skipped = (np.concatenate([rows, r]) if ids else r) if i else rows, ids + i, skipped + bad
    return rows, ids, skipped
