"""Embeddings of a whole data set, in dataset order, with their ids.

h (the representation, default) or z = g(h) (``projection=True``) of the evaluation view of every
image, computed in batches with a progress bar. Under torchrun each process embeds the rows
rank, rank + k, rank + 2k, ... and the rows travel with their dataset indices (padding rows carry
index -1), so rank 0 writes every row at its own index, whatever the process count (DINO's
gather-with-indices). Output: ``FILE.npy`` plus ``FILE.ids.json`` (a JSON list of ids: file paths
for folders, indices otherwise), or one ``FILE.parquet`` with columns ``id`` and ``embedding``
when pyarrow is installed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fastclr.config import Config
from fastclr.data import evalset
from fastclr.data.loaders import tiers
from fastclr.data.sets import FileSet
from fastclr.errors import UserError, require_positive
from fastclr.eval.features import extract
from fastclr.train import dist, restore


def shard(n: int, rank: int, world: int) -> torch.Tensor:
    """This process's dataset indices: rank, rank + world, ... (int64)."""
    return torch.arange(n)[rank::world]


def embed_rows(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    index: torch.Tensor,
    size: int,
    device: torch.device,
    batch_size: int = 512,
    precision: str = "fp32",
    progress: bool = True,
) -> torch.Tensor:
    """``fn`` of the evaluation view of images[index], batched with a progress bar: float32 [len(index), d]."""
    from tqdm import tqdm

    out = []
    chunks = index.split(batch_size)
    for chunk in tqdm(chunks, file=sys.stderr, desc="embed", leave=False, disable=None if progress else True):
        out.append(extract(fn, images[chunk], size, device, batch_size=batch_size, precision=precision).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def gather_rows(
    rows: torch.Tensor, index: torch.Tensor, n: int, device: torch.device, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """All processes' rows and their dataset indices, sorted by index: ([m, d], [m]) on rank 0, None elsewhere.

    Every process pads to the longest possible shard (ceil(n / world)) with index -1; the gather carries
    (index, row) pairs, so padding can never land on a real row. Rows a process left out (unreadable
    files) are simply absent. One process: its rows sorted by index.

    Raises:
        RuntimeError: an index gathered twice.
    """
    if dist.world_size() == 1:
        order = index.argsort()
        return rows.cpu()[order], index[order]
    longest = -(-n // dist.world_size())
    d = rows.shape[1] if width is None else width  # the model's width: a rank with no rows has shape [0, 0]
    pad_rows = torch.zeros(longest, d, device=device)
    pad_index = torch.full((longest,), -1, dtype=torch.int64, device=device)
    if rows.shape[0]:
        pad_rows[: rows.shape[0]] = rows.to(device)
    pad_index[: index.shape[0]] = index.to(device)
    all_rows, all_index = dist.gather_all(pad_rows), dist.gather_all(pad_index)
    if not dist.is_main():
        return None
    idx = torch.cat(all_index).cpu()
    vals = torch.cat(all_rows).cpu()
    keep = idx >= 0
    idx, vals = idx[keep], vals[keep]
    order = idx.argsort()
    idx, vals = idx[order], vals[order]
    if idx.numel() > 1 and bool((idx[1:] == idx[:-1]).any()):
        raise RuntimeError("distributed embedding: a data set index was gathered twice")
    return vals, idx


def gather_in_order(
    rows: torch.Tensor, index: torch.Tensor, n: int, device: torch.device, width: int | None = None
) -> torch.Tensor | None:
    """All processes' rows placed at their dataset indices: [n, d] on rank 0, None elsewhere (:func:`gather_rows`).

    Raises:
        RuntimeError: the gathered indices do not cover 0..n-1 exactly once.
    """
    got = gather_rows(rows, index, n, device, width)
    if got is None:
        return None
    vals, idx = got
    if not torch.equal(idx, torch.arange(n)):
        raise RuntimeError("distributed embedding: the gathered indices do not cover the data set exactly once")
    return vals


def write(out: str | Path, embeddings: torch.Tensor, ids: list[str]) -> list[str]:
    """Write ``embeddings`` [N, d] with their ids; returns the files written.

    ``.parquet`` -> one table (id: string, embedding: list<float32>); anything else -> ``.npy`` + ``.ids.json``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    array = embeddings.numpy().astype(np.float32)
    if out.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError("--out *.parquet needs pyarrow: pip install 'fastclr[parquet]', or write .npy") from None
        flat = pa.array(array.reshape(-1), type=pa.float32())
        column = pa.FixedSizeListArray.from_arrays(flat, array.shape[1])
        pq.write_table(pa.table({"id": pa.array(ids, type=pa.string()), "embedding": column}), out)
        return [str(out)]
    npy = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")
    ids_path = npy.with_suffix(".ids.json")
    np.save(npy, array)
    ids_path.write_text(json.dumps(ids))
    return [str(npy), str(ids_path)]


def npy_path(out: str | Path) -> Path:
    out = Path(out)
    return out if out.suffix == ".npy" else out.with_name(out.name + ".npy")


@torch.no_grad()
def embed_files(
    fn: Callable[[torch.Tensor], torch.Tensor],
    data: FileSet,
    out: str | Path,
    size: int,
    device: torch.device,
    *,
    batch_size: int = 512,
    precision: str = "fp32",
    workers: int = 0,
    progress: bool = True,
) -> tuple[int, int, list[str]]:
    """Embed a file set straight into ``out``: the evaluation view of every file (decoded by loader
    workers, ``data/evalset.py``), rows written to a memory-mapped ``.npy`` as they come, so no
    process holds the features whole. Unreadable files are left out (and reported).

    Returns:
        (rows written, d, files written).
    """
    from tqdm import tqdm

    if Path(out).suffix == ".parquet":
        raise UserError("--out *.parquet: this data set is embedded straight from its files; write .npy")
    npy = npy_path(out)
    npy.parent.mkdir(parents=True, exist_ok=True)
    rows: np.memmap | None = None
    ids: list[str] = []
    bar = tqdm(total=len(data), file=sys.stderr, desc="embed", leave=False, disable=None if progress else True)
    for index, images, bad in evalset.batches(data, size, batch_size, workers):
        if data.bad is not None:
            data.bad.met(index.shape[0], bad)
        names = {p for p, _ in bad}
        good = [k for k, i in enumerate(index.tolist()) if str(data.files[i]) not in names]
        h = extract(fn, images[good], size, device, batch_size=batch_size, precision=precision)
        if rows is None:
            rows = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(len(data), h.shape[1]))
        rows[len(ids) : len(ids) + h.shape[0]] = h.cpu().numpy()  # h stays on the device until here
        ids.extend(str(data.files[int(index[k])]) for k in good)
        bar.update(index.shape[0])
    bar.close()
    if rows is None:
        raise UserError("embed: the data set has no images")
    dim = rows.shape[1]
    if len(ids) < len(data):  # unreadable files were left out: shorten the file
        kept = np.array(rows[: len(ids)])
        del rows
        np.save(npy, kept)
    else:
        rows.flush()
        del rows
    ids_path = npy.with_suffix(".ids.json")
    ids_path.write_text(json.dumps(ids))
    return len(ids), dim, [str(npy), str(ids_path)]


def read(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read back what :func:`write` wrote: (embeddings [N, d] float32, ids)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        values = table.column("embedding").combine_chunks()
        array = values.flatten().to_numpy().reshape(len(table), -1)
        return array, [str(i) for i in table.column("id").to_pylist()]
    npy = path if path.suffix == ".npy" else path.with_name(path.name + ".npy")
    return np.load(npy), json.loads(npy.with_suffix(".ids.json").read_text())


def command(
    checkpoint: str,
    data: str | None,
    out: str,
    *,
    projection: bool = False,
    split: str = "pretrain",
    batch_size: int = 512,
    device: str | None = None,
) -> dict:
    """``fastclr embed``: h (or z with ``projection``) of every image of a split, written by rank 0 in dataset order.

    Rows come in dataset order with their ids (file paths, dataset ids or ``SHARD/KEY``), written to
    FILE.npy + FILE.ids.json or one FILE.parquet table; under torchrun each rank embeds its share.
    """
    require_positive(batch_size=batch_size)
    restored, dev, precision = restore.open_for_command(checkpoint, device, join=True)
    model = restored.model.eval()
    cfg = restored.cfg
    splits = restore.load_data(cfg, data)
    images = getattr(splits, split)
    if images is None:
        raise UserError(f"--split {split}: data set {splits.name!r} has no such split; use --split pretrain")
    fn = (lambda x: model.project(model.encode(x).float())) if projection else model.encode
    if isinstance(images, FileSet) and dist.world_size() == 1:  # files: streamed, rows to a memmap
        count, dim, files = embed_files(
            fn, images, out, cfg.image_size, dev, batch_size=batch_size, precision=precision, workers=cfg.workers
        )
        dist.cleanup()
        return {"out": out, "count": count, "dim": dim, "files": files}
    width = cfg.proj_dim if projection else model.feature_dim
    if isinstance(images, FileSet):  # torchrun: every rank decodes only its own rows
        return _embed_file_shards(fn, images, out, cfg, dev, width, batch_size, precision)
    mine = shard(len(images), dist.rank(), dist.world_size())
    if hasattr(images, "tokens"):  # texts: token ids through the text encoder
        from fastclr.eval.sts import encode_tokens

        rows = encode_tokens(fn, images.tokens[mine], dev, batch_size, precision)
    else:
        images = restore.in_memory(images, "embed")
        rows = embed_rows(fn, images.images, mine, cfg.image_size, dev, batch_size, precision, progress=dist.is_main())
    full = gather_in_order(rows, mine, len(images), dev, width)
    result: dict = {"out": out, "count": len(images), "dim": width}
    if dist.is_main() and full is not None:
        result["files"] = write(out, full, list(images.ids))
    dist.barrier()
    dist.cleanup()
    return result


def _embed_file_shards(
    fn: Callable[[torch.Tensor], torch.Tensor],
    files: FileSet,
    out: str,
    cfg: Config,
    device: torch.device,
    width: int,
    batch_size: int,
    precision: str,
) -> dict:
    """``fastclr embed`` of a file set under torchrun: each rank decodes and embeds only its shard of the
    files, rank 0 gathers the rows in file order and writes them; unreadable files are left out (reported)."""
    mine = shard(len(files), dist.rank(), dist.world_size())
    own = files.subset(mine)
    part = evalset.decoded(
        own, cfg.image_size, workers=cfg.workers, limit=tiers.budget(cfg.data_memory_gb), bad=files.bad
    )
    readable = set(part.ids)
    kept = mine[torch.tensor([str(f) in readable for f in own.files], dtype=torch.bool)]
    part = restore.in_memory(part, "embed")
    rows = embed_rows(fn, part.images, torch.arange(len(part)), cfg.image_size, device, batch_size, precision,
                      progress=dist.is_main())  # fmt: skip
    got = gather_rows(rows, kept, len(files), device, width)
    result: dict = {"out": out, "count": 0, "dim": width}
    if got is not None:
        vals, idx = got
        ids = files.ids
        result["count"] = int(idx.numel())
        result["files"] = write(out, vals, [ids[i] for i in idx.tolist()])
    dist.barrier()
    dist.cleanup()
    return result
