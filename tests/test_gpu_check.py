"""The GPU check (benchmarks/gpu_check.sh) in its dry run: every phase on the CPU at CI size, so that the script
a lent GPU runs cannot rot before one is lent. At most 8 files come back from a lent GPU's $OUT: the test holds
the script to that, to its table, and to one passing entry per command in each phase's JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "a": [
        "pytest -m cuda",
        "pretrain (1 epoch)",
        "embed (flat folder)",
        "knn",
        "linear (SGD, 2 epochs)",
        "linear --features",
        "finetune (50% labels)",
        "distill",
        "text pretrain (3 steps)",
        "sts",
    ],
    "b": ["throughput (eager)", "cifar10 pretrain", "throughput --compile"],
    "c": ["gpu_decode.py"],
}


def installed(*names: str) -> bool:
    return all(importlib.util.find_spec(n) is not None for n in names)


def may_skip() -> set[str]:
    """Commands the dry run skips (and does not fail): torch.compile always; what needs a missing package."""
    allowed = {"throughput --compile"}
    if not installed("webdataset", "braceexpand"):
        allowed.add("gpu_decode.py")
    if not installed("transformers"):
        allowed |= {"text pretrain (3 steps)", "sts"}
    return allowed


@pytest.mark.slow
def test_dry_run_of_every_phase(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "WORK": str(work), "PYTHON": sys.executable, "SITE": str(tmp_path / "site")}
    r = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run", "all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]

    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).is_file() for f in files), files  # what a lent GPU can send back
    assert {"gpu.txt", "summary.txt", "log.txt", "tests_tail.txt", "a.json", "b.json", "c.json"} <= set(files)
    summary = (out / "summary.txt").read_text()
    assert summary.rstrip().endswith("all phases passed"), summary
    assert "device cpu, dry run 1" in (out / "gpu.txt").read_text()
    assert "skipped" in (out / "tests_tail.txt").read_text()  # no CUDA here: the CUDA tests ran and skipped

    allowed = may_skip()
    for phase, names in COMMANDS.items():
        record = json.loads((out / f"{phase}.json").read_text())
        assert record["ok"] and record["dry_run"] and record["device"] == "cpu", record
        assert [e["name"] for e in record["commands"]] == names
        for e in record["commands"]:
            assert e["ok"], (phase, e["name"], e.get("error"), e.get("stderr_tail"))
            if "skipped" in e:
                assert e["name"] in allowed, (phase, e["name"], e["skipped"])
                continue
            assert e["rc"] == 0 and e["seconds"] > 0 and e["figure"], (phase, e)
            assert e["name"] in summary
    a = {e["name"]: e for e in json.loads((out / "a.json").read_text())["commands"]}
    assert 0 <= a["pretrain (1 epoch)"]["figure"]["knn_top1"] <= 1 and a["embed (flat folder)"]["figure"]["count"] == 8
    b = {e["name"]: e for e in json.loads((out / "b.json").read_text())["commands"]}
    assert b["cifar10 pretrain"]["figure"]["epochs"] == 1 and b["throughput (eager)"]["figure"]["step_views_per_s"] > 0
