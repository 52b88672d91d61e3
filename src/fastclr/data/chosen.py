"""Config values chosen from the data when no preset is named (``defaults.py``'s bands, on the median
short side of a folder, list or shards spec's images, read by ``survey.py``); the CLI's behaviour
without ``--config``. A config value names no data: this is where the data is looked at for it."""

from __future__ import annotations

from typing import Any

import torch

from fastclr import defaults, log
from fastclr.data.datasets import median_side


def preset_from_data(given: dict[str, Any]) -> dict[str, Any] | None:
    """The values for the data the explicitly ``given`` settings name (``data``, ``device``), or None for a
    spec that is not a folder, list or shards of images (then the digits preset applies). Says on stderr
    what it chose. ``--epochs`` replaces the CPU's training budget."""
    spec = str(given.get("data", "digits"))
    found = median_side(spec)
    if found is None:
        return None
    side, sampled, count = found
    gpu = str(given.get("device", "auto")) != "cpu" and torch.cuda.is_available()
    values: dict[str, Any] = {"data": spec, **defaults.choose(side, gpu, count)}
    log.info(defaults.describe(spec, side, sampled, gpu, values))
    if "epochs" in given and "budget_minutes" not in given:
        values.pop("budget_minutes", None)  # --epochs replaces the budget
    return values
