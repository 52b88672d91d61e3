"""The table of benchmarks/gpu_check.sh: ``$OUT/summary.txt`` from ``gpu.txt`` and the phases' JSON files.

    python benchmarks/gpu_check/summary.py OUT_FOLDER

One line per command (ok / FAILED, seconds, key figure), then the headline figures of phase b. Prints the
table too; exits 0 when every phase found passed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def figure_text(figure) -> str:
    if isinstance(figure, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in figure.items())
    return str(figure or "")


def headline(b: dict) -> list[str]:
    """Phase b's figures in words, as the targets in benchmarks/README.md state them."""
    by = {e["name"]: e for e in b["commands"]}
    rows = []
    t = (by.get("throughput (eager)") or {}).get("result")
    if t:
        v = t["views"]
        rows += [
            ("device / torch / commit", f"{t['device']} / {t['torch']} / {t['commit']}"),
            (
                "augment views/s (fastclr / reference)",
                f"{t['aug_ours_views_per_s']:.0f} / {t['aug_reference_views_per_s']:.0f} ({t['aug_ratio']:.1f}x)",
            ),
            (
                f"step views/s (fastclr / reference, both {t['precision']} channels_last)",
                f"{v * t['step_ours_images_per_s']:.0f} / {v * t['step_reference_images_per_s']:.0f} "
                f"({t['step_ratio']:.1f}x)",
            ),
            ("MFU", f"{100 * t['mfu']:.1f}% of {t['peak_flops'] / 1e12:.3g} TFLOP/s ({t['peak_source']})"),
        ]
    c = (by.get("throughput --compile") or {}).get("result")
    if c and "step_compiled_images_per_s" in c:
        ratio = c["step_compiled_images_per_s"] / c["step_ours_images_per_s"]
        rows.append(
            (
                "step views/s with torch.compile",
                f"{c['views'] * c['step_compiled_images_per_s']:.0f} ({ratio:.2f}x eager)",
            )
        )
    p = by.get("cifar10 pretrain") or {}
    r = p.get("result")
    if r and "eval" in r:
        e = r["eval"]
        rows += [
            ("pretrain epochs / wall s (start-up and evaluation included)", f"{r['epochs']:.0f} / {p['seconds']:.0f}"),
            (
                "pretrain images/s: training steps only / end to end",
                f"{r['train_images_per_s']:.0f} / {r['images_per_s']:.0f}",
            ),
            ("kNN top-1 (k=200) / random init", f"{e['knn_top1']:.4f} / {e['random_init_knn_top1']:.4f}"),
            ("linear top-1 / random init", f"{e['linear_top1']:.4f} / {e['random_init_linear_top1']:.4f}"),
        ]
    return [f"  {k:66s} {v}" for k, v in rows]


def main(out: Path) -> int:
    lines = []
    gpu = out / "gpu.txt"
    if gpu.is_file():
        lines += [line for line in gpu.read_text().splitlines() if line.strip()] + [""]
    ok = True
    for name in "abc":
        path = out / f"{name}.json"
        if not path.is_file():
            continue
        phase = json.loads(path.read_text())
        ok &= phase["ok"]
        dry = " (dry run)" if phase["dry_run"] else ""
        state = "ok" if phase["ok"] else "FAILED"
        lines.append(f"phase {name}: {phase['title']} on {phase['device']}{dry}: {state}, {phase['seconds']:.0f} s")
        if "epochs" in phase:
            ep = phase["epochs"]
            lines.append(f"  epochs: {ep['run']} of {ep['planned']} planned ({ep['why']})")
        if "data" in phase:
            lines.append(f"  data: {figure_text(phase['data'])}")
        for e in phase["commands"]:
            state = "skipped" if "skipped" in e and e["ok"] else "ok" if e["ok"] else "FAILED"
            text = e.get("skipped") or e.get("error") or figure_text(e.get("figure"))
            lines.append(f"  {e['name']:26s} {state:7s} {e['seconds']:6.1f} s  {text}")
        if name == "b":
            lines += headline(phase)
        lines.append("")
    lines.append("all phases passed" if ok else "SOME COMMANDS FAILED: see the phases' JSON (error, stderr_tail)")
    text = "\n".join(lines) + "\n"
    (out / "summary.txt").write_text(text)
    print(text, end="")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
