"""Where a benchmark's figures come from: the commit, the machine, and side-by-side rates printed alike.

Imported by the scripts beside it (``python benchmarks/NAME.py`` puts this folder on the path)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The checkout's short commit hash ("unknown" outside a git checkout)."""
    try:
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return found.stdout.strip() or "unknown"


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line: CPU, cores, torch, commit."""
    import torch

    return f"{cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}; commit {commit()}"


def print_rates(rates: dict[str, list[float]], baseline: str, unit: str = "images/s") -> None:
    """Each name's mean +- spread over its runs, then every other name's ratio to ``baseline``."""
    width = max(len(name) for name in rates) + 2
    for name, r in rates.items():
        spread = statistics.stdev(r) if len(r) > 1 else 0.0
        print(f"  {name:{width}s} {statistics.mean(r):9.1f} +- {spread:.1f} {unit}")
    for name, r in rates.items():
        if name != baseline:
            print(f"  ratio {name} / {baseline}: {statistics.mean(r) / statistics.mean(rates[baseline]):.2f}x")
