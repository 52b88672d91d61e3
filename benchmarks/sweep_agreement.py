"""Which trial each metric of a finished sweep picks, and that trial's kNN against the best kNN.

    python benchmarks/sweep_agreement.py DIR/trials.csv [DIR/trials.csv ...]

Reads the figures every completed trial carries in ``trials.csv`` (``fastclr sweep`` writes them
whatever ``--metric`` it optimised), so one study answers for every metric: for each, the trial
it would have chosen (in its direction), that trial's ``knn_top1``, the best ``knn_top1`` of the
study and the gap. Prints a Markdown table (benchmarks/README.md, "Tuning without labels").
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from fastclr.sweep.objective import MAXIMIZE, METRICS

REFERENCE = "knn_top1"


def _params(row: dict[str, str], names: list[str]) -> str:
    return ", ".join(f"{k} {row[k]}" for k in names)


def table(path: Path) -> list[str]:
    """The Markdown rows of one study: one per metric whose figure the completed trials hold."""
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["state"] == "COMPLETE"]
    fixed = {"number", "state", "metric", "direction", "value", "seconds", "folder", *METRICS, "probe_knn"}
    names = [k for k in rows[0] if k not in fixed]
    best = max(float(r[REFERENCE]) for r in rows)
    lines = []
    for metric in METRICS.values():
        scored = [r for r in rows if r.get(metric.name)]
        if len(scored) < len(rows):
            continue  # the study did not measure it (probe_knn without probe_labels)
        sign = 1.0 if metric.direction == MAXIMIZE else -1.0
        pick = max(scored, key=lambda r: sign * float(r[metric.name]))
        knn = float(pick[REFERENCE])
        verdict = "the best" if knn == best else f"wrong: {100 * (best - knn):.1f} points below the best"
        lines.append(
            f"| {path.parent.name} | {metric.name} ({metric.direction[:3]}) | {pick['number']}: "
            f"{_params(pick, names)} | {float(pick[metric.name]):.4g} | {knn:.3f} | {best:.3f} | {verdict} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", metavar="TRIALS_CSV", help="a finished sweep's trials.csv (several: one table)")
    paths = ap.parse_args().paths
    print("| study | metric (direction) | trial it picks | its value | its kNN | best kNN | choice |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        print("\n".join(table(Path(path))))


if __name__ == "__main__":
    main()
