"""Similarity search, near-duplicates, explanations and the service, measured (benchmarks/README.md, "Search").

Parts (each a few minutes at most on a 2-core CPU; every figure printed as one JSON line):

- ``build``: ``fastclr index`` on an image folder: images/s end to end (decode, embed, normalise, faiss, files),
  and the peak memory of building from N and 4N images (a folder of symbolic links repeating the files).
- ``latency``: synthetic random unit vectors (and clustered ones, closer to real embeddings), 512-d: build time,
  one-query search latency p50/p99 at 10k and 1M vectors, exact and IVF; the IVF index's recall@10 against
  exact search as measured at build time and recomputed here on other queries; peak memory beyond the vectors.
- ``service``: ``fastclr serve`` on loopback, threads of keep-alive clients: requests/s, p50/p99 and errors at
  16 and 64 concurrent clients, for search by id (the index alone) and search by upload (decode + embed too).
- ``quality``: precision@10 (same-class neighbours, each image querying the others) of a trained checkpoint
  and of the same architecture at random init, on a labelled folder (class = the folder above the file).
- ``dedup``: planted duplicates (JPEG re-encoded at quality 40, resized to 3/4, cropped by 6%) of N photos
  against each other and the distinct photos: the score distributions, and per threshold the planted pairs
  found and the distinct photos wrongly joined.
- ``explain``: a 16-px patch cut from a third photo pasted into two distinct photos: how much of A's map falls
  on the patch (mean inside / mean outside, and how often the peak lands on it), trained vs random init.

    python benchmarks/search.py --part build --checkpoint CKPT --data DIR
    python benchmarks/search.py --part latency
    python benchmarks/search.py --part service --checkpoint CKPT --data DIR
    python benchmarks/search.py --part quality --checkpoint CKPT --data DIR_WITH_CLASS_FOLDERS
    python benchmarks/search.py --part dedup --checkpoint CKPT --data DIR
    python benchmarks/search.py --part explain --checkpoint CKPT --data DIR
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

D = 512


def say(**figures) -> None:
    print(json.dumps(figures), flush=True)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def images_of(folder: str) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


# --- build ---------------------------------------------------------------------------------------


def build(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="fastclr_bench_"))
    try:
        files = images_of(args.data)
        for copies in (1, 4):
            folder = work / f"x{copies}"
            for c in range(copies):  # symbolic links: the same pixels under new names, nothing copied
                for i, f in enumerate(files):
                    link = folder / f"copy{c}" / f"{i:06d}{f.suffix}"
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(f)
            code = (
                "import json, resource, sys, time; from fastclr.eval import index; t = time.perf_counter(); "
                f"r = index.command({args.checkpoint!r}, {str(folder)!r}, {str(work / f'ix{copies}')!r}); "
                "r['wall_s'] = time.perf_counter() - t; "
                "r['peak_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; print(json.dumps(r))"
            )
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            vectors_mb = r["count"] * r["dim"] * 4 / 2**20
            say(
                part="build",
                images=r["count"],
                dim=r["dim"],
                images_per_s=round(r["count"] / r["wall_s"], 1),
                wall_s=round(r["wall_s"], 1),
                peak_mb=round(r["peak_mb"]),
                vectors_mb=round(vectors_mb, 1),
                peak_minus_2x_vectors_mb=round(r["peak_mb"] - 2 * vectors_mb),
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- latency, recall, memory on synthetic vectors -------------------------------------------------


def synthetic(n: int, kind: str, seed: int = 0) -> np.ndarray:
    """Unit vectors [n, 512]: ``uniform`` on the sphere (no structure: the worst case for an approximate index)
    or ``clustered`` around 1,000 random centres (structure like real embeddings)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, D), np.float32)
    centres = np.random.default_rng(0).standard_normal((1000, D)).astype(np.float32)  # the same for every seed
    for lo in range(0, n, 65536):
        m = min(65536, n - lo)
        x = rng.standard_normal((m, D), dtype=np.float32)
        if kind == "clustered":
            x = centres[rng.integers(0, 1000, m)] + 0.5 * x
        out[lo : lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def latencies(index, queries: np.ndarray) -> dict:
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q[None], 10)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def one_latency(n: int, kind: str, exact_limit: int) -> None:
    """One configuration in this process (run in a fresh process each, so its peak memory is its own)."""
    from fastclr.eval.index import VectorIndex, exact_top

    vectors = synthetic(n, kind)

    t = time.perf_counter()
    index = VectorIndex(vectors, [str(i) for i in range(n)], exact_limit=exact_limit, copy=False)
    built = time.perf_counter() - t
    queries = synthetic(300, kind, seed=1)  # not in the index
    lat = latencies(index, queries)
    recall = None
    if index.kind == "ivf":  # recomputed on other queries than the build's sample
        exact_s, _ = exact_top(index.vectors, queries, 10)
        found_s, _ = index.search(queries, 10)
        recall = float(np.mean(found_s >= exact_s[:, 9:10] - 1e-5))
    vectors_mb = n * D * 4 / 2**20
    say(
        part="latency",
        vectors=n,
        data=kind,
        kind=index.kind,
        build_s=round(built, 1),
        **lat,
        recall_at_10_build=index.meta["recall_at_10"],
        recall_at_10_new_queries=recall,
        nprobe=index.meta["nprobe"],
        nlist=index.meta["nlist"],
        vectors_mb=round(vectors_mb),
        peak_mb=round(peak_mb()),
        peak_minus_2x_vectors_mb=round(peak_mb() - 2 * vectors_mb),  # the caller's array and faiss's copy
    )


def latency(args) -> None:
    runs = [
        (10_000, "uniform", 200_000),
        (1_000_000, "uniform", 2_000_000),
        (1_000_000, "uniform", 200_000),
        (1_000_000, "clustered", 200_000),
    ]
    if args.quick:
        runs = [(10_000, "uniform", 200_000), (250_000, "clustered", 200_000)]
    if args.ivf_only:
        runs = [r for r in runs if r[0] > r[2]]
    for n, kind, limit in runs:
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import search; "
        code += f"search.one_latency({n}, {kind!r}, {limit})"
        subprocess.run([sys.executable, "-c", code], check=True)


# --- the service under load -------------------------------------------------------------------------


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    for name, (filename, content) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def load(port: int, clients: int, seconds: float, body_of) -> dict:
    import http.client

    times, errors, lock = [], [], threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        rng = random.Random(seed)
        mine, bad = [], 0
        while time.monotonic() < stop:
            body, ctype = body_of(rng)
            t = time.perf_counter()
            try:
                conn.request("POST", "/search", body, {"Content-Type": ctype})
                r = conn.getresponse()
                r.read()
                bad += r.status != 200
            except OSError:
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append(time.perf_counter() - t)
        with lock:
            times.extend(mine)
            errors.append(bad)

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = np.array(times) * 1000
    return {
        "clients": clients,
        "requests": len(times),
        "requests_per_s": round(len(times) / (time.monotonic() - start), 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "errors": int(sum(errors)),
    }


def service(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="fastclr_bench_"))
    try:
        out = work / "ix"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fastclr",
                "index",
                "--checkpoint",
                args.checkpoint,
                "--data",
                args.data,
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        ids = json.loads((out / "ids.json").read_text())
        uploads = []
        for f in ids[:200]:
            buf = io.BytesIO()
            from PIL import Image

            Image.open(f).convert("RGB").save(buf, "JPEG", quality=90)
            uploads.append(buf.getvalue())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastclr", "serve", str(out), "--port", str(port)], stderr=subprocess.DEVNULL
        )
        try:
            import urllib.request

            for _ in range(600):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.2)
            by_id = lambda rng: multipart({"id": rng.choice(ids), "k": 10}, {})  # noqa: E731
            by_upload = lambda rng: multipart({"k": 10}, {"image": ("q.jpg", rng.choice(uploads))})  # noqa: E731
            for name, body in (("id", by_id), ("upload", by_upload)):
                load(port, 4, 2, body)  # warm-up
                for clients in (16, 64):
                    say(part="service", query=name, index_size=len(ids), **load(port, clients, args.seconds, body))
        finally:
            proc.terminate()
            proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- retrieval quality, near-duplicates, explanations ---------------------------------------------


def random_init_checkpoint(checkpoint: str, path: Path) -> str:
    """The checkpoint's architecture with random weights (seed 0), saved as a fastclr checkpoint."""
    from fastclr import config
    from fastclr.train import checkpoint as ckpt
    from fastclr.train import restore

    restored, _, _ = restore.open_for_command(checkpoint, "cpu")
    fresh = restore.random_init(restored.cfg, 0)
    state = {**restored.state, "model": fresh.model.state_dict()}
    state["config"] = config.to_dict(restored.cfg)
    ckpt.save(state, path)
    return str(path)


def quality(args) -> None:
    from fastclr.eval import index as store

    work = Path(tempfile.mkdtemp(prefix="fastclr_bench_"))
    try:
        for name, ckpt in (
            ("trained", args.checkpoint),
            ("random_init", random_init_checkpoint(args.checkpoint, work / "r.pt")),
        ):
            store.run(ckpt, args.data, str(work / name))
            index = store.VectorIndex.load(work / name)
            labels = np.array(
                [
                    Path(i).parent.name if Path(i).parent.name != "images" else Path(i).parent.parent.name
                    for i in index.ids
                ]
            )
            rows = np.arange(len(index))
            _, found = index.search(np.asarray(index.vectors), 10, exclude=rows)
            precision = float(np.mean(labels[found] == labels[:, None]))
            chance = float(np.mean([(labels == c).sum() - 1 for c in labels]) / (len(labels) - 1))
            say(
                part="quality",
                encoder=name,
                images=len(index),
                classes=len(set(labels)),
                precision_at_10=round(precision, 4),
                chance=round(chance, 4),
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def plant(files: list[Path], folder: Path, copies_of: int, seed: int = 0) -> None:
    from PIL import Image

    rng = random.Random(seed)
    for i, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        im.save(folder / f"o{i:04d}.png")
        if i < copies_of:
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=40)
            Image.open(buf).save(folder / f"o{i:04d}_jpeg.png")
            w, h = im.size
            im.resize((round(w * 0.75), round(h * 0.75)), Image.Resampling.BICUBIC).save(
                folder / f"o{i:04d}_resize.png"
            )
            c = max(1, round(0.06 * w))
            dx, dy = rng.randint(0, c), rng.randint(0, c)
            im.crop((dx, dy, w - (c - dx), h - (c - dy))).save(folder / f"o{i:04d}_crop.png")


def dedup_part(args) -> None:
    from fastclr.eval import dedup
    from fastclr.eval import index as store

    work = Path(tempfile.mkdtemp(prefix="fastclr_bench_"))
    try:
        folder = work / "planted"
        folder.mkdir()
        plant(images_of(args.data)[: args.images], folder, args.images * 3 // 10)
        for projection in (False, True):
            name = "z" if projection else "h"
            store.run(args.checkpoint, str(folder), str(work / name), projection=projection)
            index = store.VectorIndex.load(work / name)
            v = np.asarray(index.vectors)
            stem = [Path(i).stem for i in index.ids]
            row = {s: k for k, s in enumerate(stem)}
            dup = {kind: [] for kind in ("jpeg", "resize", "crop")}
            for s, k in row.items():
                if "_" in s:
                    base, kind = s.split("_")
                    dup[kind].append(float(v[k] @ v[row[base]]))
            originals = [k for k, s in enumerate(stem) if "_" not in s]
            sims = v[originals] @ v[originals].T
            np.fill_diagonal(sims, -1)
            nearest = sims.max(1)
            q = lambda x, p: round(float(np.percentile(x, p)), 4)  # noqa: E731
            say(
                part="dedup",
                vectors=name,
                originals=len(originals),
                planted=sum(map(len, dup.values())),
                **{f"{k}_min": round(min(x), 4) for k, x in dup.items()},
                **{f"{k}_p5": q(x, 5) for k, x in dup.items()},
                **{f"{k}_median": q(x, 50) for k, x in dup.items()},
                distinct_nearest_max=round(float(nearest.max()), 4),
                distinct_nearest_p99=q(nearest, 99),
                distinct_nearest_p95=q(nearest, 95),
                distinct_nearest_median=q(nearest, 50),
            )
            for t in (0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.995):
                groups, pairs = dedup.groups(len(index), dedup.pairs_above(index, t))
                group_of = {m: g for g, members in enumerate(groups) for m in members}
                found = sum(
                    group_of.get(row[s]) is not None and group_of.get(row[s]) == group_of.get(row[s.split("_")[0]])
                    for s in row
                    if "_" in s
                )
                joined = sum(sum("_" not in stem[m] for m in g) > 1 for g in groups)
                wrong = sum(
                    sum("_" not in stem[m] for m in g) for g in groups if sum("_" not in stem[m] for m in g) > 1
                )
                say(
                    part="dedup_threshold",
                    vectors=name,
                    threshold=t,
                    planted_found=round(found / (len(row) - len(originals)), 4),
                    groups_joining_distinct=joined,
                    distinct_photos_wrongly_joined=wrong,
                    pairs=pairs,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def explain_part(args) -> None:
    import torch

    from fastclr.data.images import decode
    from fastclr.eval import explain
    from fastclr.train import restore

    work = Path(tempfile.mkdtemp(prefix="fastclr_bench_"))
    try:
        files = images_of(args.data)
        rng = random.Random(0)
        for name, ckpt in (
            ("trained", args.checkpoint),
            ("random_init", random_init_checkpoint(args.checkpoint, work / "r.pt")),
        ):
            restored, _, _ = restore.open_for_command(ckpt, "cpu")
            model, size = restored.model.eval(), restored.cfg.image_size
            side = max(4, size // 4)
            for method in explain.METHODS:
                ratios, peaks = [], []
                rng.seed(0)
                for _ in range(args.pairs):
                    a, b, src = (decode(f, size)[0].copy() for f in rng.sample(files, 3))
                    patch = src[:, :side, :side]
                    ya, xa, yb, xb = (rng.randint(0, size - side) for _ in range(4))
                    a[:, ya : ya + side, xa : xa + side] = patch
                    b[:, yb : yb + side, xb : xb + side] = patch
                    heat, _ = explain.similarity_map(model.encode, torch.tensor(a), torch.tensor(b), method)
                    mask = np.zeros_like(heat, dtype=bool)
                    mask[ya : ya + side, xa : xa + side] = True
                    ratios.append(float(heat[mask].mean() / max(heat[~mask].mean(), 1e-9)))
                    peaks.append(bool(mask.flat[int(np.argmax(heat))]))
                say(
                    part="explain",
                    encoder=name,
                    method=method,
                    pairs=args.pairs,
                    image_size=size,
                    patch=side,
                    inside_over_outside_median=round(float(np.median(ratios)), 2),
                    pairs_ratio_above_2=round(float(np.mean(np.array(ratios) > 2)), 3),
                    peak_on_patch=round(float(np.mean(peaks)), 3),
                    patch_area=round(side * side / size / size, 4),
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", required=True, choices=("build", "latency", "service", "quality", "dedup", "explain"))
    p.add_argument("--checkpoint")
    p.add_argument("--data")
    p.add_argument("--seconds", type=float, default=10.0, help="service: seconds of load per setting")
    p.add_argument("--images", type=int, default=1000, help="dedup: distinct photos (30%% get 3 planted copies)")
    p.add_argument("--pairs", type=int, default=50, help="explain: photo pairs")
    p.add_argument("--quick", action="store_true", help="latency: 10k and 250k vectors only")
    p.add_argument("--ivf-only", action="store_true", help="latency: the IVF settings only")
    args = p.parse_args()
    say(cpu=cpu_name(), cores=os.cpu_count(), part=args.part)
    {
        "build": build,
        "latency": latency,
        "service": service,
        "quality": quality,
        "dedup": dedup_part,
        "explain": explain_part,
    }[args.part](args)


if __name__ == "__main__":
    main()
