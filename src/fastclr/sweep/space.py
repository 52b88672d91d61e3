"""The search space: ``SPACE.yaml`` maps config fields to a range, a list of choices, or a fixed value.

::

    temperature: {low: 0.05, high: 0.5, log: true}   # a float range (log-uniform)
    min_scale: {low: 0.08, high: 0.5}                 # a float range (uniform)
    batch_size: [64, 128, 256]                        # choices
    warmup_epochs: {low: 0, high: 10, step: 2}        # an int range (the field is an int)
    color_strength: 0.5                               # fixed for every trial

Every key must be a field of :class:`fastclr.config.Config`; values are converted and checked as
``--set`` values are. The fields worth searching for SimCLR are the paper's sensitive ones
(its sections 3 and 5, Appendix B): temperature, learning rate and its rule, batch size, crop
scale, colour strength.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from fastclr import config
from fastclr.errors import UserError


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched field: a range (``low``, ``high``, ``log``, ``step``) or ``choices``; ``fixed`` when set."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None
    fixed: Any = None


def _dimension(name: str, spec: object, where: str) -> Dimension:
    if isinstance(spec, list):
        if not spec:
            raise UserError(f"{where}: {name}: an empty list of choices")
        return Dimension(name, choices=tuple(config.parse_value(name, v) for v in spec))
    if not isinstance(spec, dict):
        return Dimension(name, fixed=config.parse_value(name, spec))
    extra = set(spec) - {"low", "high", "log", "step"}
    if extra or "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: {name}: a range is {{low, high[, log][, step]}}, got {spec}")
    kind = config._field_type(name)
    if kind not in (int, float):
        raise UserError(f"{where}: {name} is a {kind.__name__}: give a list of choices, not a range")
    low, high = float(config.parse_value(name, spec["low"])), float(config.parse_value(name, spec["high"]))
    log = bool(spec.get("log", False))
    if not low < high or (log and low <= 0) or not all(math.isfinite(v) for v in (low, high)):
        raise UserError(f"{where}: {name}: need low < high (and low > 0 with log), got {spec}")
    if kind is int:
        return Dimension(name, low=int(low), high=int(high), log=log, step=spec.get("step"))
    return Dimension(name, low=low, high=high, log=log, step=spec.get("step"))


def contains(d: Dimension, value: Any) -> bool:
    """Whether ``value`` is one the dimension can suggest (a choice, or a point of the range and its step)."""
    if d.choices is not None:
        return value in d.choices
    if d.low is None or d.high is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not d.low <= value <= d.high:
        return False
    return not d.step or math.isclose((value - d.low) / d.step, round((value - d.low) / d.step), abs_tol=1e-9)


def read(path: str | Path) -> list[Dimension]:
    """The dimensions of a space file; UserError (exit 2) naming an unknown field and listing the valid ones."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--space {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"--space {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict) or not values:
        raise UserError(f"--space {path}: expected a mapping of config field: range, choices or value")
    unknown = [k for k in values if k not in config.FIELDS]
    if unknown:
        raise UserError(f"--space {path}: unknown field(s) {unknown}; valid fields: {', '.join(config.FIELDS)}")
    if "out" in values:
        raise UserError(f"--space {path}: 'out' is set per trial (DIR/trials/N); remove it")
    return [_dimension(k, v, f"--space {path}") for k, v in values.items()]


def suggest(trial: Any, dims: list[Dimension]) -> dict[str, Any]:
    """The trial's value of every dimension (optuna's ``suggest_*``; a resumed trial gets its stored values)."""
    params: dict[str, Any] = {}
    for d in dims:
        if d.low is None and d.choices is None:
            params[d.name] = d.fixed
        elif d.choices is not None:
            params[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif isinstance(d.low, int) and isinstance(d.high, int):
            params[d.name] = trial.suggest_int(d.name, d.low, d.high, step=int(d.step or 1), log=d.log)
        else:
            params[d.name] = trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)
    return params


def describe(dims: list[Dimension]) -> dict[str, Any]:
    """A plain-data form of the space (stored with the study, compared when a sweep is resumed)."""
    return {d.name: {k: v for k, v in dataclasses.asdict(d).items() if v is not None and k != "name"} for d in dims}
