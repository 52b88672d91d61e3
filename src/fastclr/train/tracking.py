"""Experiment tracking: ``OUT/metrics.jsonl`` (one JSON object per line) and, when the optional
``tensorboard`` package is installed, TensorBoard event files in the same folder.

Every line has a ``step``; training lines add ``epoch``, ``loss``, ``lr``, ``images_per_s``, monitor
lines add their own keys (``knn_top1``, ``online_probe_top1``, ...). Every numeric key of a line
becomes a TensorBoard scalar with the line's step. On resume the file is cut back to the
checkpoint's step, so a resumed run's log reads like an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FILE = "metrics.jsonl"


def trim(path: Path, step: int) -> None:
    """Keep only the lines of ``path`` whose ``step`` is at most ``step`` (atomically)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(k + "\n" for k in kept))
    os.replace(tmp, path)


def read(path: Path) -> list[dict]:
    """Every well-formed line of a metrics file, in order (a partial last line is skipped)."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


class MetricsLog:
    """Appends JSON lines to ``OUT/metrics.jsonl`` and mirrors numeric values to TensorBoard.

    Args:
        out: the run folder.
        start_step: the step training starts from (0, or a resumed checkpoint's); later lines are dropped.
        enabled: False on every rank but 0 (nothing is written).
    The file-like ``write(line)`` / ``flush()`` / ``close()`` accept lines that callers format themselves.
    """

    def __init__(self, out: Path, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            self.file = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
            return
        path = Path(out) / FILE
        trim(path, start_step)
        self.file = open(path, "a")  # noqa: SIM115 - open for the whole run
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional extra: pip install 'fastclr[tensorboard]'
            return
        self.tb = SummaryWriter(log_dir=str(out), purge_step=start_step if start_step > 0 else None)

    def log(self, record: dict) -> None:
        """Append one record (it must hold ``step``)."""
        self.write(json.dumps(record) + "\n")

    def write(self, line: str) -> None:
        self.file.write(line)
        if self.tb is None:
            return
        for text in line.splitlines():
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            step = record.get("step")
            if not isinstance(step, int):
                continue
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, step)

    def flush(self) -> None:
        self.file.flush()
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
