"""What the default command learns: trained vs random-init encoder on every band of data, with and without multi-crop.

    python benchmarks/quality.py [--sets digits,tinyimagenet,photos,stl] [--multicrop 2] [--out /tmp/quality]
                                 [--extra "--set precision=fp32"]

For each data set, ``fastclr pretrain`` with no ``--config`` (the settings chosen from the data, a
budgeted schedule on a CPU) runs once as a user would run it, then once more with ``--set
small_crops=V`` (multi-crop at the same training budget: the budget times the heavier step and runs
fewer epochs). Each row: wall time of the whole command, the epochs the budget chose, kNN and linear
top-1 of the trained and the random-init encoder, and the label-free figures of both (RankMe,
alignment, uniformity, view agreement). Seeds are the defaults (0); one run each.

Data (made once under ``--out``/data from ``../shared/data``; a user's checkout has no ``../shared``):
- ``digits``: scikit-learn's 8x8 digits (the digits preset; the embedded default data set).
- ``tinyimagenet``: the 20 Tiny-ImageNet classes of ``../shared/data/tinyimagenet-dev`` (64-px photos, the
  data set's nested layout), read in place.
- ``photos``: 5 CIFAR-10 classes enlarged to 160-px JPEG "photos" (690 train + 173 val a class): the
  large band, trained at 96 px on a CPU.
- ``stl``: 10 CIFAR-10 classes enlarged to 96 px (400 train + 100 val a class), STL-10's size.

It prints a Markdown table (and writes it to ``OUT/quality.md``, the rows to ``OUT/quality.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR = SHARED / "cifar10-jpeg.tar.xz"
TINY = SHARED / "tinyimagenet-dev"
PHOTO_SETS = {  # name: (side, classes, train per class, val per class)
    "photos": (160, ("airplane", "automobile", "bird", "cat", "ship"), 690, 173),
    "stl": (96, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"), 400, 100),
}


def make_photos(root: Path, side: int, classes: tuple[str, ...], n_train: int, n_val: int) -> Path:
    """CIFAR-10 JPEGs enlarged (bicubic) to ``side`` px in ``root/{train,val}/<class>/`` (once).

    The archive is read twice in order (an xz stream cannot seek back): the names, then the chosen files.
    """
    from PIL import Image

    if (root / "done").exists():
        return root
    members: dict[tuple[str, str], list[str]] = {}
    with tarfile.open(CIFAR) as tar:
        for name in tar.getnames():
            parts = Path(name).parts
            if len(parts) >= 3 and parts[-2] in classes and parts[-3] in ("train", "test") and "." in parts[-1]:
                members.setdefault((parts[-3], parts[-2]), []).append(name)
    rng, chosen = random.Random(0), {}
    for (split, cls), names in sorted(members.items()):
        names.sort()
        rng.shuffle(names)
        for name in names[: n_train if split == "train" else n_val]:
            chosen[name] = root / ("train" if split == "train" else "val") / cls / Path(name).name
    with tarfile.open(CIFAR, "r|xz") as stream:
        for m in stream:
            target = chosen.get(m.name)
            fh = stream.extractfile(m) if target is not None else None
            if fh is None or target is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(fh).convert("RGB").resize((side, side), Image.BICUBIC).save(target, quality=90)
    (root / "done").touch()
    return root


def data_spec(name: str, out: Path) -> str:
    if name == "digits":
        return "digits"
    if name == "tinyimagenet":
        return str(TINY)
    side, classes, n_train, n_val = PHOTO_SETS[name]
    return str(make_photos(out / "data" / name, side, classes, n_train, n_val))


def pretrain(spec: str, out: Path, extra: list[str]) -> tuple[dict, float, str]:
    """Run ``fastclr pretrain`` as a user would; (final JSON line, wall seconds, stderr)."""
    cmd = [sys.executable, "-m", "fastclr", "pretrain", "--out", str(out), "--no-resume", *extra]
    if spec != "digits":
        cmd += ["--data", spec]
    print("$", shlex.join(cmd), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RunFailed(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1]), seconds, done.stderr


class RunFailed(Exception):
    """A run that exited non-zero: its last stderr line (a refusal such as multi-crop on streamed files)."""


def row(name: str, variant: str, result: dict, seconds: float) -> dict:
    ev = result.get("eval", {})
    ours, base = ev.get("label_free", {}), ev.get("random_init_label_free", {})
    return {
        "data": name,
        "variant": variant,
        "seconds": round(seconds, 1),
        "epochs": round(result.get("epochs", 0), 1),
        "knn": ev.get("knn_top1"),
        "knn_random": ev.get("random_init_knn_top1"),
        "linear": ev.get("linear_top1"),
        "linear_random": ev.get("random_init_linear_top1"),
        **{f"{k}": ours.get(k) for k in ("rankme", "alignment", "uniformity", "view_agreement")},
        **{f"{k}_random": base.get(k) for k in ("rankme", "alignment", "uniformity", "view_agreement")},
    }


def fmt(value, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if pct else f"{value:.3g}"


def table(rows: list[dict]) -> str:
    head = (
        "| data | variant | wall | epochs | kNN (random) | linear (random) | RankMe (random) | alignment (random) "
        "| uniformity (random) | view agreement (random) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for r in rows:
        cells = [
            r["data"],
            r["variant"],
            f"{r['seconds'] / 60:.1f} min",
            str(r["epochs"]),
            f"{fmt(r['knn'], True)} ({fmt(r['knn_random'], True)})",
            f"{fmt(r['linear'], True)} ({fmt(r['linear_random'], True)})",
        ] + [f"{fmt(r[k])} ({fmt(r[k + '_random'])})" for k in ("rankme", "alignment", "uniformity", "view_agreement")]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="digits,tinyimagenet,photos,stl")
    p.add_argument("--multicrop", type=int, default=2, help="small crops of the second run (0: skip it)")
    p.add_argument("--out", default="/tmp/fastclr-quality")
    p.add_argument("--extra", default="", help="more pretrain arguments for every run, e.g. '--set precision=fp32'")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = shlex.split(args.extra)
    rows: list[dict] = []
    notes: list[str] = []
    for name in args.sets.split(","):
        if name != "digits" and not SHARED.is_dir():
            print(f"skipping {name}: {SHARED} is absent")
            continue
        spec = data_spec(name, out)
        variants = [("2 views", [])]
        if args.multicrop:
            variants.append((f"2 + {args.multicrop} small", ["--set", f"small_crops={args.multicrop}"]))
        for label, flags in variants:
            try:
                result, seconds, _ = pretrain(spec, out / "runs" / f"{name}-{len(flags)}", [*extra, *flags])
            except RunFailed as e:
                print(f"{name}, {label}: {e}", flush=True)
                notes.append(f"- {name}, {label}: {e}")
                continue
            rows.append(row(name, label, result, seconds))
            print(table(rows[-1:]), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load:.1f}\n\n"
    text = header + table(rows) + ("\n" + "\n".join(notes) + "\n" if notes else "")
    (out / "quality.md").write_text(text)
    (out / "quality.json").write_text(json.dumps(rows, indent=2))
    print(text)


if __name__ == "__main__":
    main()
