"""Pretraining and evaluation batches from tar shards: every sample once per epoch over k ranks x w workers.

The epoch's stream (``layout``): the shards in an order keyed on (seed, epoch), each shard's samples
in tar order. With N samples, global batch B, k ranks and w loader workers (``streams`` = max(w, 1)):

- T = N // B steps per epoch; rank r reads stream positions [r*T*B/k, (r+1)*T*B/k), so the N mod B
  samples at the stream's end are the only ones an epoch leaves out (a different few each epoch, as
  the shard order changes). Shards need not divide evenly between ranks or workers: ranges are cut
  at sample granularity, and a reader that starts inside a shard reads past (does not decode) the
  members before its start.
- Local batch t of a rank is read by its worker t mod w (torch's DataLoader hands batch keys to its
  workers in turn); worker j's batches are one contiguous range of the rank's stream, so each worker
  reads its shards sequentially, once.
- Samples are shuffled within chunks of ``window`` samples (whole batches) of a worker's range, keyed
  on (seed, epoch, chunk start): the chunk's bytes are held while its batches are cut.

Every position is a pure function of (seed, epoch, k, w, step), so resuming at step s of an epoch
(``epoch(e, s)``) reads exactly the samples an uninterrupted run would have read from there on;
this holds for the same number of ranks and workers (another worker count lays the rest of that
epoch out anew). The random crop and colour draws are keyed on the sample's position in the set
(``files.crop_views``), so a sample's views do not depend on the rank, the worker or the order.
A member that cannot be decoded is reported like a bad file (``badfiles.py``) and replaced by the
next readable sample of its batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from fastclr.data.images import BadImage, decode, open_rgb
from fastclr.data.loaders.base import Batch, CroppedViews, FinishedViews, finish_views
from fastclr.data.loaders.files import crop_views
from fastclr.data.loaders.workers import EpochSampler, epoch_loader, guarded, in_order
from fastclr.data.sources.shards import ShardSet, image_bytes, sample_id, samples
from fastclr.errors import UserError
from fastclr.method.augment import AugmentConfig, crop_source_side
from fastclr.method.rng import keyed_generator

WINDOW = 1024  # samples shuffled together (their encoded bytes are held in the worker)


def shard_order(shards: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's keyed order of the shards: int64 [S]."""
    return torch.randperm(shards, generator=keyed_generator(seed, epoch, 0x5A4D)).numpy()


def worker_batches(steps: int, streams: int) -> list[int]:
    """How many of a rank's ``steps`` local batches each of its ``streams`` workers reads (t -> t mod w)."""
    return [len(range(j, steps, streams)) for j in range(streams)]


def batch_positions(
    t: int, *, steps: int, local: int, rank: int, streams: int, window: int, seed: int, epoch: int
) -> tuple[int, int, np.ndarray]:
    """Stream positions of rank ``rank``'s local batch ``t``: (chunk start, chunk end, positions int64 [local])."""
    j, q = t % streams, t // streams
    n = worker_batches(steps, streams)
    start = rank * steps * local + local * sum(n[:j])
    per_chunk = max(1, math.ceil(window / local))  # batches per shuffled chunk
    c = q // per_chunk
    lo, hi = start + c * per_chunk * local, start + min((c + 1) * per_chunk, n[j]) * local
    perm = torch.randperm(hi - lo, generator=keyed_generator(seed, epoch, 0x5A4E, lo)).numpy()
    within = (q - c * per_chunk) * local
    return lo, hi, lo + perm[within : within + local]


class Stream:
    """An epoch's stream over a ShardSet: position -> (set index, shard, member in the tar)."""

    def __init__(self, data: ShardSet, seed: int, epoch: int):
        counts = np.array(data.counts, dtype=np.int64)
        self.order = shard_order(len(counts), seed, epoch)
        self.starts = np.concatenate([[0], np.cumsum(counts[self.order])])  # stream position of each ordered shard
        self.first = np.concatenate([[0], np.cumsum(counts)])  # set index of each shard's first sample
        self.members = data.members

    def locate(self, p: int) -> tuple[int, int, int]:
        """(set index, shard, member position in its tar) of stream position ``p``."""
        u = int(np.searchsorted(self.starts, p, side="right")) - 1
        s, k = int(self.order[u]), p - int(self.starts[u])
        return int(self.first[s]) + k, s, int(self.members[s][k])


class ShardReader:
    """Sequential reads of shard members in a worker: keeps the open shard, skips forward, reopens backward."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.shard, self.next = -1, 0
        self.it: Iterator[dict] = iter(())

    def read(self, shard: int, member: int) -> dict | None:
        """Member ``member`` of ``shard`` (None: the shard ended before it, e.g. a truncated tar)."""
        if shard != self.shard or member < self.next:
            self.shard, self.next, self.it = shard, 0, samples(self.urls[shard])
        sample: dict | None = None
        try:
            while self.next <= member:
                sample = next(self.it)
                self.next += 1
        except Exception:  # StopIteration, or a broken tar: nothing more comes from this shard
            self.next = 1 << 62
            return None
        return sample


def fetch(reader: ShardReader, stream: Stream, positions: list[int]) -> dict[int, tuple[int, str, bytes | None]]:
    """Stream positions (ascending) -> (set index, sample id, image bytes or None)."""
    out = {}
    for p in positions:
        i, s, m = stream.locate(p)
        sample = reader.read(s, m)
        key = sample_id(reader.urls[s], sample["__key__"]) if sample is not None else f"{reader.urls[s]}#{m}"
        out[p] = (i, key, image_bytes(sample) if sample is not None else None)
    return out


def open_batch(
    items: list[tuple[int, str, bytes | None]], draft: int = 0
) -> tuple[torch.Tensor, list, list[tuple[str, str]]]:
    """Decode a batch's images on the CPU (JPEGs at the reduced scale whose sides stay >= ``draft``, as
    ``files.open_or_replace``); a bad member is replaced by the next readable one of the batch."""
    decoded: list = [None] * len(items)
    bad = []
    for k, (_, key, data) in enumerate(items):
        try:
            if data is None:
                raise BadImage(key, "no image member, or the shard ended early (truncated?)")
            decoded[k] = open_rgb(key, draft=draft, data=data)[0]
        except BadImage as e:
            bad.append((e.path, e.reason))
    good = [k for k, im in enumerate(decoded) if im is not None]
    if not good:
        raise UserError(f"no member of the batch from {items[0][1]} on could be decoded; are the shards readable?")
    index = torch.empty(len(items), dtype=torch.int64)
    images = []
    for k in range(len(items)):
        src = k if decoded[k] is not None else next((g for g in good if g > k), good[0])
        index[k] = items[src][0]
        images.append(decoded[src])
    return index, images, bad


class _ShardBatches(torch.utils.data.Dataset):
    """(epoch, t) -> (index [b], views, bad) of a rank's local batch t; runs in the CPU workers.

    ``mode`` ``crop``: uint8 views [V, b, 3, S, S]; ``finish``: float32 [V*b, 3, S, S] after the pixel
    ops (CPU device); ``bytes``: the encoded images (a list of uint8 tensors) for decoding on the GPU.
    """

    def __init__(self, data: ShardSet, batch_size: int, seed: int, views: int, cfg: AugmentConfig, *, rank: int,
                 world_size: int, streams: int, mode: str = "crop", window: int = WINDOW):  # fmt: skip
        self.data, self.seed, self.views, self.cfg, self.mode = data, seed, views, cfg, mode
        self.local, self.rank, self.streams, self.window = batch_size // world_size, rank, streams, window
        self.steps = len(data) // batch_size
        self.reader: ShardReader | None = None
        self.stream: tuple[int, Stream] | None = None
        self.chunk: tuple[int, int, int, dict] | None = None  # (epoch, lo, hi, position -> item)

    def items(self, epoch: int, t: int) -> list[tuple[int, str, bytes | None]]:
        """The batch's (set index, id, bytes), reading its chunk of the stream once."""
        if self.reader is None:
            self.reader = ShardReader(self.data.urls)
        if self.stream is None or self.stream[0] != epoch:
            self.stream = (epoch, Stream(self.data, self.seed, epoch))
        lo, hi, positions = batch_positions(
            t, steps=self.steps, local=self.local, rank=self.rank, streams=self.streams, window=self.window,
            seed=self.seed, epoch=epoch,
        )  # fmt: skip
        if self.chunk is None or self.chunk[:3] != (epoch, lo, hi):
            self.chunk = (epoch, lo, hi, fetch(self.reader, self.stream[1], list(range(lo, hi))))
        return [self.chunk[3][int(p)] for p in positions]

    def __getitem__(self, key: tuple[int, int]):
        epoch, t = key
        items = self.items(epoch, t)
        if self.mode == "bytes":  # one buffer and its offsets: a tensor per image would cost a file handle each
            index = torch.tensor([i for i, _, _ in items], dtype=torch.int64)
            sizes = [len(d) if d else 0 for _, _, d in items]
            buffer = torch.frombuffer(
                bytearray(b"".join(d or b"" for _, _, d in items)) or bytearray(1), dtype=torch.uint8
            )
            offsets = torch.tensor(np.cumsum([0, *sizes]), dtype=torch.int64)
            return index, (buffer, offsets, [k for _, k, _ in items]), []
        index, images, bad = open_batch(items, crop_source_side(self.cfg))
        views = crop_views(images, index, seed=self.seed, epoch=epoch, views=self.views, cfg=self.cfg)
        if self.mode == "finish":
            views = finish_views(views, index, seed=self.seed, epoch=epoch, cfg=self.cfg)
        return index, views, bad


class ShardLoader:
    """Yields batches of views on ``device`` for a ShardSet; b = batch_size / world_size.

    Views as ``files.FileLoader`` yields them (CroppedViews uint8 [V, b, 3, S, S], or FinishedViews
    float32 when the device is the CPU and there are workers); with ``decode="gpu"`` the workers only read bytes and
    ``gpu_decode.decode_crop_views`` decodes and crops on the device.
    """

    def __init__(self, data: ShardSet, batch_size: int, seed: int, device: torch.device, *, views: int,
                 cfg: AugmentConfig, workers: int = 0, rank: int = 0, world_size: int = 1, decode: str = "cpu",
                 resume: str = "", window: int = WINDOW):  # fmt: skip
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.n, self.batch_size, self.device, self.bad, self.resume = len(data), batch_size, device, data.bad, resume
        self.seed, self.views, self.cfg, self.decode = seed, views, cfg, decode
        mode = "bytes" if decode == "gpu" else "finish" if device.type == "cpu" and workers > 0 else "crop"
        self.batches = _ShardBatches(
            data, batch_size, seed, views, cfg, rank=rank, world_size=world_size, streams=max(workers, 1), mode=mode,
            window=window,
        )  # fmt: skip
        self.batch: type[Batch] = FinishedViews if mode == "finish" else CroppedViews
        self.sampler = EpochSampler(len(self))
        self.loader = epoch_loader(self.batches, self.sampler, workers, device.type == "cuda" and mode != "bytes")

    def __len__(self) -> int:
        """Steps per epoch."""
        return self.n // self.batch_size

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` from step ``start`` on (resume: exact at step granularity)."""
        from fastclr.data.loaders import gpu_decode

        self.sampler.epoch, self.sampler.start = epoch, start
        for index, views, bad in guarded(self.loader, self.resume):
            if self.decode == "gpu":
                buffer, offsets, names = views
                raw = [buffer[int(a) : int(b)] for a, b in zip(offsets[:-1], offsets[1:])]
                index, views, bad = gpu_decode.decode_crop_views(
                    raw, names, index, self.device, seed=self.seed, epoch=epoch, views=self.views, cfg=self.cfg
                )
            if self.bad is not None:
                self.bad.met(index.shape[0] + len(bad), bad)
            yield self.batch(index.to(self.device, non_blocking=True), views.to(self.device, non_blocking=True))


class _EvalChunks(torch.utils.data.Dataset):
    """Chunk k (<= batch_size samples of one shard, in set order) -> (index, uint8 [b, 3, S, S], bad)."""

    def __init__(self, data: ShardSet, size: int, batch_size: int):
        self.data, self.size = data, size
        self.first = np.concatenate([[0], np.cumsum(data.counts)])
        self.chunks = [
            (s, lo, min(lo + batch_size, c)) for s, c in enumerate(data.counts) for lo in range(0, c, batch_size)
        ]
        self.reader: ShardReader | None = None

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int):
        if self.reader is None:
            self.reader = ShardReader(self.data.urls)
        s, lo, hi = self.chunks[k]
        out = np.zeros((hi - lo, 3, self.size, self.size), dtype=np.uint8)
        bad = []
        for j in range(lo, hi):
            sample = self.reader.read(s, int(self.data.members[s][j]))
            name = self.data.files[int(self.first[s]) + j]
            data = image_bytes(sample) if sample is not None else None
            try:
                if data is None:
                    raise BadImage(name, "no image member, or the shard ended early (truncated?)")
                out[j - lo] = decode(name, self.size, data=data)[0]
            except BadImage as e:
                bad.append((e.path, e.reason))
        return torch.arange(int(self.first[s]) + lo, int(self.first[s]) + hi), torch.from_numpy(out), bad


def eval_batches(data: ShardSet, size: int, batch_size: int = 256, workers: int = 0):
    """(index [b], evaluation views uint8 [b, 3, S, S], bad) of every sample, in set order (shards in
    index order, members in tar order), whatever the worker count; ``evalset.batches`` for shards.
    Each worker reads the shards sequentially and decodes only its chunks."""
    yield from in_order(_EvalChunks(data, size, batch_size), workers)
