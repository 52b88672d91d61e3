"""Similarity search from Python and ``fastclr search``: :class:`Index`, an encoder's embeddings with faiss.

:class:`Index` is the folder ``fastclr index`` writes (:mod:`fastclr.eval.index`): L2-normalised vectors,
their ids, a faiss index (exact inner product up to 200,000 vectors, an IVF index with its measured recall@10
beyond) and the identity of the encoder that made them. Queries go through that same encoder and its
evaluation transform (:func:`fastclr.load_encoder`, :func:`fastclr.embed`), so a file in the index finds
itself first with a cosine score of 1 (up to the precision in use).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastclr.api.embedding import ImageData, embed
from fastclr.api.models import Encoder, load_encoder
from fastclr.data import datasets, specs
from fastclr.data.images import BadImage
from fastclr.data.sources import folders
from fastclr.errors import UserError, require_positive
from fastclr.eval import index as store
from fastclr.eval.index import EXACT_LIMIT, VectorIndex

Neighbours = list[tuple[str, float]]  # (id, cosine similarity), best first


class Index:
    """A similarity-search index of images: ``build``, ``add``, ``search``, ``save``, ``load``.

    Example::

        encoder = fastclr.load_encoder("runs/photos/checkpoints/last.pt")
        index = fastclr.Index.build(encoder, "photos/")          # a folder, list, spec, files or PIL images
        index.search(["query.jpg"], k=5)                          # [[(id, cosine), ...]] per query
        index.save("photos.index")                                # = fastclr index --out photos.index
        index = fastclr.Index.load("photos.index")                # its encoder is loaded on the first image query

    Attributes:
        store: the vectors, ids and faiss index (:class:`fastclr.eval.index.VectorIndex`).
        projection: whether the vectors are z = g(h) rather than h.
        folder: the folder it was loaded from (:meth:`load`), or None.
    """

    def __init__(self, store: VectorIndex, encoder: Encoder | None = None, projection: bool = False):
        self.store = store
        self.projection = bool(projection)
        self._encoder = encoder
        self.folder: Path | None = None

    def __len__(self) -> int:
        return len(self.store)

    def __repr__(self) -> str:
        return f"Index({len(self)} vectors, dim {self.store.dim}, {self.store.kind})"

    @property
    def ids(self) -> list[str]:
        """The N ids, in row order: absolute file paths for files, the data set's ids else."""
        return self.store.ids

    @property
    def vectors(self) -> np.ndarray:
        """float32 [N, d], each row L2-normalised (memory-mapped after ``save`` or ``load``)."""
        return self.store.vectors

    @property
    def recall_at_10(self) -> float:
        """recall@10 of the faiss index against exact search, measured when built (1.0: exact search)."""
        return float(self.store.meta.get("recall_at_10", 1.0))

    @property
    def encoder(self) -> Encoder:
        """The encoder that made the vectors (loaded from the index's checkpoint on first use, its SHA-256
        checked); UserError when it is not known or the file changed."""
        if self._encoder is None:
            identity = self.store.meta.get("encoder") or {}
            path = identity.get("checkpoint")
            if not path or not Path(path).is_file():
                raise UserError(f"the index's encoder {path or '(unknown)'} is not available; pass encoder=")
            if identity.get("sha256") and store.file_digest(Path(path)) != identity["sha256"]:
                raise UserError(f"{path}: changed since the index was built (SHA-256 differs); rebuild the index")
            self._encoder = load_encoder(path)
        return self._encoder

    @classmethod
    def build(
        cls,
        encoder: Encoder,
        data: ImageData,
        *,
        projection: bool = False,
        batch_size: int = 256,
        exact_limit: int = EXACT_LIMIT,
    ) -> Index:
        """Embed ``data`` with ``encoder`` and index it.

        Args:
            encoder: from :func:`fastclr.load_encoder`.
            data: what :func:`fastclr.embed` takes: a data spec, image files, a uint8 tensor or PIL images.
            projection: index z = g(h) instead of h.
            batch_size: images embedded at a time.
            exact_limit: vectors searched exactly; beyond, an approximate IVF index (its recall@10 measured).
        Returns:
            The index; files that cannot be decoded are left out with a warning.
        """
        rows, ids = embed(encoder, data, batch_size=batch_size, projection=projection)
        identity = _identity(encoder, projection, rows.shape[1])
        specs = [str(data)] if isinstance(data, (str, Path)) else []
        vectors = VectorIndex(rows, _absolute(data, ids), {"encoder": identity, "data": specs}, exact_limit)
        return cls(vectors, encoder, projection)

    def add(self, data: ImageData, *, batch_size: int = 256) -> int:
        """Embed and add the images of ``data`` not indexed yet (by id); returns how many were added.

        Files and folders are matched by absolute path, so adding a folder again adds only its new files;
        tensors and PIL images always count as new (ids continue from the index's length).
        """
        kind = specs.parse(str(data))[0] if isinstance(data, (str, Path)) else None
        if kind in ("folder", "list"):
            listed = [os.path.abspath(f) for f in datasets.listings(str(data))[0].files]
            data = [f for f in listed if f not in self.store.rows]
        elif isinstance(data, Sequence) and not isinstance(data, (str, Path)):
            data = [f for f in data if isinstance(f, Image.Image) or os.path.abspath(f) not in self.store.rows]
        rows, ids = embed(self.encoder, data, batch_size=batch_size, projection=self.projection)
        ids = _absolute(data, ids)
        if isinstance(data, torch.Tensor) or (ids and all(i.isdigit() for i in ids) and kind is None):
            ids = [str(len(self) + int(i)) for i in ids]
        fresh = [i for i, name in enumerate(ids) if name not in self.store.rows]
        return self.store.add(rows[fresh], [ids[i] for i in fresh])

    def remove(self, ids: Sequence[str | Path]) -> int:
        """Drop the rows of ``ids`` (a file's id is its absolute path; ids not indexed are ignored); returns how
        many rows went. The faiss index is rebuilt from the vectors left: nothing is embedded again."""
        rows = self.store.rows
        return self.store.remove([str(i) if str(i) in rows else os.path.abspath(i) for i in ids])

    def search(self, queries: ImageData | np.ndarray, k: int = 10) -> list[Neighbours]:
        """The k nearest indexed images of each query, by cosine similarity, best first.

        Args:
            queries: image files, PIL images, a uint8 tensor, a data spec, ids of indexed images (their
                stored vectors; each leaves itself out of its answer), or vectors float [q, d].
            k: neighbours per query.
        Returns:
            One list of (id, cosine similarity) per query.
        """
        if isinstance(queries, np.ndarray):
            return self._answer(*self.store.search(queries, k))
        items = [queries] if isinstance(queries, str) and queries in self.store.rows else queries
        if isinstance(items, list) and items and all(isinstance(q, str) and q in self.store.rows for q in items):
            own = np.array([self.store.rows[q] for q in items])
            return self._answer(*self.store.search(self.store.vectors[own], k, exclude=own))
        if isinstance(items, Image.Image) or (isinstance(items, (str, Path)) and Path(items).is_file()):
            items = [items]  # one image; a folder or another spec is embedded as a data set
        rows, _ = embed(self.encoder, items, projection=self.projection)
        return self._answer(*self.store.search(rows, k))

    def _answer(self, scores: np.ndarray, rows: np.ndarray) -> list[Neighbours]:
        ids = self.store.ids
        return [[(ids[r], float(s)) for s, r in zip(ss, rr) if r >= 0] for ss, rr in zip(scores, rows)]

    def embed_queries(self, items: Sequence[Image.Image | str | Path]) -> np.ndarray:
        """L2-normalised vectors float32 [n, d] of images through the index's encoder; BadImage if one
        cannot be decoded (the service turns that into a 4xx answer)."""
        enc = self.encoder
        pixels = enc.preprocess.pixels(list(items))  # raises BadImage
        rows, _ = embed(enc, pixels, projection=self.projection)
        return store.normalise(rows)

    def save(self, folder: str | Path) -> list[str]:
        """Write the index folder that ``fastclr search``, ``dedup`` and ``serve`` read; returns its files."""
        return self.store.save(folder)

    @classmethod
    def load(cls, folder: str | Path, encoder: Encoder | None = None) -> Index:
        """Read an index folder (``fastclr index`` or :meth:`save`); ``encoder`` overrides the recorded one
        (default: loaded from the index's checkpoint on the first image query)."""
        vectors = VectorIndex.load(folder)
        index = cls(vectors, encoder, bool((vectors.meta.get("encoder") or {}).get("projection")))
        index.folder = Path(folder)
        return index


def _identity(encoder: Encoder, projection: bool, dim: int) -> dict:
    """The encoder's identity as ``fastclr index`` records it (the file's SHA-256 says which weights); without a
    file, what is known of it."""
    if encoder.source and Path(encoder.source).is_file():
        arch, stem = _arch(Path(encoder.source))
        return store.encoder_identity(encoder.source, arch, encoder.image_size, projection, dim, stem)
    return {"checkpoint": None, "arch": None, "image_size": encoder.image_size, "projection": projection, "dim": dim}


def _arch(path: Path) -> tuple[str | None, bool]:
    """(arch, cifar_stem) recorded in a checkpoint's config or an export's description; (None, False) if neither."""
    from fastclr.train import checkpoint

    side = Path(f"{path}.json")
    try:
        if side.is_file():
            meta = json.loads(side.read_text())
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        else:
            meta = checkpoint.load(path, map_location="cpu").get("config", {})
    except Exception:  # the identity is a record; the weights' digest already names them
        return None, False
    return meta.get("arch"), bool(meta.get("cifar_stem", False))


def _absolute(data: ImageData, ids: list[str]) -> list[str]:
    """File ids as absolute paths (as ``fastclr index`` writes them), other ids as they are."""
    if isinstance(data, (str, Path)) and specs.parse(str(data))[0] not in ("folder", "list"):
        return ids
    if isinstance(data, torch.Tensor):
        return ids
    return [os.path.abspath(i) if not i.isdigit() or os.path.exists(i) else i for i in ids]


# --- fastclr search -------------------------------------------------------------------------------


def _queries(index: Index, query: list[str]) -> Iterator[tuple[str, str]]:
    """(kind, item) of each query: ('file', path) for a file and each image of a folder, ('id', id) for an id."""
    for q in query:
        path = Path(q).expanduser()
        if q in index.store.rows:  # an indexed file's path is its id: its stored vector
            yield "id", q
        elif path.is_dir():
            for f in folders.list_folder(path).files:
                yield "file", str(f)
        elif path.is_file():
            yield "file", str(path)
        else:
            raise UserError(f"--query {q}: not an image file, a folder or an id of the index")


def search_command(
    index: str,
    query: list[str],
    *,
    k: int = 10,
    batch_size: int = 64,
    emit: Callable[[dict], None] | None = None,
) -> dict:
    """``fastclr search``: the k nearest indexed images of each query, with cosine scores.

    A query is an id of the index (its stored vector, itself left out: an indexed file's absolute path is its
    id), an image file or a folder (each of its images). Files are embedded with the index's own encoder and
    evaluation transform. Prints one JSON line per query, {"query", "neighbours": [{"id", "score"}, ...]}, then
    the summary; a folder's unreadable images are skipped with a warning, a named file that cannot be read is an
    error. Needs pip install 'fastclr[search]'.

    Args:
        index: an index folder written by fastclr index.
        query: ids of the index, image files or folders.
        k: neighbours per query.
        batch_size: query images embedded at a time.
        emit: where each query's line goes (default: printed on stdout).
    """
    require_positive(k=k, batch_size=batch_size)
    start = time.perf_counter()
    idx = Index.load(index)
    out = emit or (lambda line: print(json.dumps(line), flush=True, file=sys.stdout))
    counts = {"queries": 0, "skipped": 0}
    items = _queries(idx, list(query))
    named = {str(Path(q).expanduser()) for q in query}
    while chunk := list(islice(items, batch_size)):
        pixels: dict[int, torch.Tensor] = {}  # the chunk's files, decoded
        for n, (kind, item) in enumerate(chunk):
            if kind == "file":
                try:
                    pixels[n] = idx.encoder.preprocess.pixels([item])
                except BadImage as e:
                    if item in named:
                        raise UserError(f"--query {item}: {e.reason}") from None
                    counts["skipped"] += 1
                    print(f"fastclr: warning: skipped {item}: {e.reason}", file=sys.stderr)
        found: dict[int, Neighbours] = {}
        if pixels:
            rows, _ = embed(idx.encoder, torch.cat(list(pixels.values())), projection=idx.projection)
            found = dict(zip(pixels, idx.search(rows, k)))
        for n, (kind, item) in enumerate(chunk):  # in the order asked
            if kind == "id" or n in found:
                neighbours = idx.search([item], k)[0] if kind == "id" else found[n]
                out({"query": item, "neighbours": _listing(neighbours)})
                counts["queries"] += 1
    return {"index": index, "k": k, **counts, **idx.store.facts(), "seconds": round(time.perf_counter() - start, 3)}


def _listing(neighbours: Neighbours) -> list[dict]:
    return [{"id": i, "score": round(s, 6)} for i, s in neighbours]
