"""``fastclr sweep``: hyper-parameter search over SimCLR's config with optuna.

Each trial is an ordinary pretraining run in ``DIR/trials/N`` (config.yaml, metrics.jsonl,
checkpoints, result.json) whose objective is a figure of its end-of-run evaluation
(:mod:`fastclr.sweep.objective`): ``knn_top1`` or ``linear_top1`` on labelled data, a label-free
figure (``rankme``, ``view_agreement`` maximised; ``alignment``, ``uniformity`` minimised) on any
folder, or ``probe_knn`` on the few labelled images ``probe_labels`` names. The study's direction
follows the metric. With a pruner (median, or successive halving), every value of the metric's
monitor is reported to optuna through a loop callback: the kNN monitor (``knn_every``) for the
labelled metrics, the label-free monitor (``quality_every``) for the label-free ones, each set to 1
when the config has it off; a trial below the pruner's bar stops at once with a checkpoint.
``probe_knn`` has no monitor: its trials run to their end.

Rerunning the same command resumes the study (:mod:`fastclr.sweep.study`): finished trials stay,
a trial whose process was killed is taken over and its pretraining resumed, new trials fill the
study up to ``--trials``. Several processes (SLURM array tasks, nodes) running the same command on
the same ``--out`` (a shared file system) and storage share the work. ``--sampler grid`` runs every
point of a space of choices once (no baseline trial: the grid holds it), TPE (the default) samples.

The objective reads the data set's test split, as the end-of-run evaluation does: tune on a
validation split (a folder with ``train/`` and ``val/`` carved from the training images) when the
tuned number is to be reported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastclr import config
from fastclr.data import datasets, specs
from fastclr.errors import UserError
from fastclr.sweep import objective, outputs, space, study
from fastclr.train import preflight
from fastclr.train.callbacks import Callback

PRUNERS = ("median", "halving", "none")
SAMPLERS = ("tpe", "grid")


@dataclass
class SweepSpec:
    """What defines a study: the base config, the data, the space, the objective (``--trials`` may grow)."""

    base: str | None
    data: str | None
    space_file: str
    metric: str = "knn_top1"
    pruner: str = "median"
    sets: tuple[str, ...] = ()
    baseline: bool = True  # trial 0 runs the base config's own values of the searched fields
    sampler: str = "tpe"

    def definition(self, dims: list[space.Dimension]) -> dict[str, Any]:
        stored = {
            "base": self.base,
            "data": self.data,
            "space": space.describe(dims),
            "metric": self.metric,
            "pruner": self.pruner,
            "sets": list(self.sets),
        }
        if self.sampler != "tpe":  # a study stored before samplers were named is a TPE one
            stored["sampler"] = self.sampler
        return stored

    def pruned_on(self) -> str | None:
        """The metrics.jsonl key the pruner reads, or None when nothing is pruned."""
        return objective.get(self.metric).monitor if self.pruner != "none" else None


class Pruning(Callback):
    """Reports each value of the monitor ``key`` (metrics.jsonl) to the trial; asks the loop to stop
    when optuna prunes it. ``key`` None: reports nothing, never stops."""

    def __init__(self, trial: Any, key: str | None = "knn_top1"):
        self.trial, self.key, self.pruned = trial, key, False
        self.seen = set(trial.storage.get_trial(trial._trial_id).intermediate_values)  # a resumed trial's

    def on_log(self, record: dict[str, Any]) -> None:
        value = record.get(self.key) if self.key else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        epoch = round(float(record.get("epoch", 0)))
        if epoch not in self.seen:
            self.trial.report(float(value), epoch)
            self.seen.add(epoch)
        if self.trial.should_prune():
            self.pruned = True

    def should_stop(self) -> bool:
        return self.pruned

    def stop_reason(self) -> str:
        return f"the sweep's pruner (trial {self.trial.number}: its {self.key} monitor trails the other trials')"


def _pruner(name: str) -> Any:
    optuna = study.import_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def trial_config(spec: SweepSpec, dims: list[space.Dimension], trial: Any, out: Path, name: str) -> config.Config:
    """The trial's resolved config: base, then --set, then the trial's parameters; out = DIR/trials/N."""
    cfg = config.build_config(spec.base, {"data": spec.data}, list(spec.sets))
    for key, value in space.suggest(trial, dims).items():
        setattr(cfg, key, config.parse_value(key, value))
    cfg.out = str(out / "trials" / str(trial.number))
    every = objective.get(spec.metric).every
    if spec.pruner != "none" and every and getattr(cfg, every) == 0:
        setattr(cfg, every, 1)  # pruning needs the metric's monitor (kNN or label-free) during training
    cfg.tracker_group = cfg.tracker_group or name  # each trial its own tracked run, grouped by study
    cfg.tracker_dir = cfg.tracker_dir or str(out)
    preflight.settings(cfg)
    return cfg


def run_trial(spec: SweepSpec, dims: list[space.Dimension], trial: Any, out: Path, name: str) -> int:
    """Run one trial to its end and tell optuna; returns an exit code (non-zero: stop the sweep)."""
    from fastclr.pipeline import pretrain_and_evaluate

    optuna = study.import_optuna()
    metric = objective.get(spec.metric)
    pruning = Pruning(trial, spec.pruned_on())
    try:
        cfg = trial_config(spec, dims, trial, out, name)
        trial.set_user_attr("folder", cfg.out)
        with study.Heartbeat(trial):
            result = pretrain_and_evaluate(cfg, resume=True, callbacks=[pruning])
    except UserError as e:  # a trial's bad setting (nan loss, a batch too large): failed, the sweep goes on
        trial.set_user_attr("error", str(e))
        study.log(f"trial {trial.number} failed: {e}")
        trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return 0
    if pruning.pruned:
        trial.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    elif result.get("interrupted"):  # SIGTERM / SIGINT: the trial stays RUNNING, the next run takes it over
        return int(result.get("exit_code", 1))
    else:
        trial.set_user_attr("figures", objective.figures(result.get("eval")))  # trials.csv reads them
        value = objective.read(metric, result.get("eval"))
        if value is None:
            trial.set_user_attr("error", objective.missing_reason(metric))
            study.log(f"trial {trial.number} failed: {objective.missing_reason(metric)}")
            trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            trial.study.tell(trial, value)
    return 0


def sweep(
    spec: SweepSpec,
    trials: int,
    out: str | Path,
    storage_url: str | None = None,
    study_name: str | None = None,
    sampler_seed: int | None = None,
) -> dict[str, Any]:
    """Run (or resume, or join) the study until it holds ``trials`` finished trials; returns the summary."""
    metric = _check_flags(spec, trials)
    dims = space.read(spec.space_file)
    out = Path(out)
    preview = trial_config(spec, dims, _Preview(), out, "check")  # a bad base config or --set fails before any trial
    sampler = _sampler(spec.sampler, dims, trials, sampler_seed)
    _check_metric(spec, preview)  # the last check: it also says what the study will not do
    optuna = study.import_optuna()
    name = study_name or out.resolve().name
    the_study = optuna.create_study(
        study_name=name,
        storage=study.storage(out, storage_url),
        direction=metric.direction,
        load_if_exists=True,
        sampler=sampler,
        pruner=_pruner(spec.pruner if spec.pruned_on() else "none"),
    )
    _check_definition(the_study, spec.definition(dims))
    first = baseline_params(spec, dims) if spec.baseline and spec.sampler == "tpe" else None
    code = 0
    while code == 0:
        trial = study.next_trial(the_study, out, trials, first)
        if trial is None:
            break
        study.log(f"trial {trial.number} of {trials}: {out / 'trials' / str(trial.number)}")
        code = run_trial(spec, dims, trial, out, name)
        write_outputs(the_study, spec.metric, out, spec.pruned_on())
    summary = write_outputs(the_study, spec.metric, out, spec.pruned_on())
    if code:
        summary["exit_code"] = code
        summary["interrupted"] = True
    return summary


def _check_flags(spec: SweepSpec, trials: int) -> objective.Metric:
    """The spec's metric; UserError for an unknown metric, pruner or sampler, or under one trial."""
    metric = objective.get(spec.metric)
    if spec.pruner not in PRUNERS:
        raise UserError(f"--pruner {spec.pruner!r}: use one of {', '.join(PRUNERS)}")
    if spec.sampler not in SAMPLERS:
        raise UserError(f"--sampler {spec.sampler!r}: use one of {', '.join(SAMPLERS)}")
    if trials < 1:
        raise UserError(f"--trials {trials}: must be >= 1")
    return metric


def _check_labelled_without_test(data: str) -> None:
    """UserError unless ``data`` is a labelled folder or list without a test split (what train_knn scores)."""
    kind = "text" if specs.is_text(data) else specs.parse(data)[0]
    if kind not in ("folder", "list"):
        raise UserError(f"--metric train_knn scores a labelled folder or list without a test split, not {data}")
    train, test = datasets.listings(data)
    if train.labels is None:
        raise UserError(f"--metric train_knn: {data} has no labels (class sub-folders); use probe_knn or rankme")
    if test is not None:
        raise UserError(f"--metric train_knn: {data} has a test split; use knn_top1 (held-out accuracy)")


def _check_metric(spec: SweepSpec, cfg: config.Config) -> None:
    """UserError when no trial of ``cfg`` can report the metric; says once what a metric without a monitor prunes."""
    metric = objective.get(spec.metric)
    if not cfg.eval:
        raise UserError(f"--metric {metric.name} reads the end-of-run evaluation: remove --set eval=false")
    if metric.name == "probe_knn" and not cfg.probe_labels:
        raise UserError(
            "--metric probe_knn needs --set probe_labels=FILE (a CSV of path,label lines, 5-20 images a class)"
        )
    if metric.name == "train_knn":
        _check_labelled_without_test(cfg.data)
    if metric.path[0] == "label_free" and config.is_text(cfg):
        raise UserError(f"--metric {metric.name}: a label-free figure of images; a text run has none (use knn_top1)")
    if spec.pruner != "none" and metric.monitor is None:
        study.log(f"--metric {metric.name}: nothing measures it while a trial trains, so no trial is pruned")
    if spec.sampler == "grid" and spec.baseline:
        study.log("--sampler grid: no baseline trial (the grid holds every point of the space)")


def _sampler(name: str, dims: list[space.Dimension], trials: int, seed: int | None) -> Any:
    """TPE, or a grid of every choice (UserError for a range, or for more trials than grid points)."""
    optuna = study.import_optuna()
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    ranges = [d.name for d in dims if d.low is not None]
    if ranges:
        raise UserError(f"--sampler grid: {', '.join(ranges)} is a range; give a list of choices, e.g. [0.1, 0.5]")
    grid = {d.name: list(d.choices) for d in dims if d.choices is not None}
    points = math.prod(len(v) for v in grid.values())
    if not grid or trials > points:
        raise UserError(
            f"--trials {trials}: the grid of --space has {points if grid else 0} points; ask for at most that"
        )

    class Grid(optuna.samplers.GridSampler):  # type: ignore[name-defined]
        """optuna's grid (seeded order), less its ``study.stop()`` once every point ran: that works only inside
        ``study.optimize``, and the sweep's own loop stops at --trials."""

        def after_trial(self, *args: Any) -> None:
            return None

    return Grid(grid, seed=seed)


def baseline_params(spec: SweepSpec, dims: list[space.Dimension]) -> dict[str, Any] | None:
    """The base config's values of the searched fields (trial 0); None, said once, if one lies outside the space."""
    base = config.build_config(spec.base, {"data": spec.data}, list(spec.sets))
    searched = [d for d in dims if d.low is not None or d.choices is not None]
    values = {d.name: getattr(base, d.name) for d in searched}
    outside = [f"{d.name}={values[d.name]}" for d in searched if not space.contains(d, values[d.name])]
    if outside:
        study.log(f"no baseline trial: the base config's {', '.join(outside)} lies outside the space")
        return None
    return values


class _Preview:
    """A stand-in trial for checking the base config: every range at its low end, every first choice."""

    number = 0

    def suggest_categorical(self, name: str, choices: list) -> Any:
        return choices[0]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return low

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        return low


def _check_definition(the_study: Any, definition: dict[str, Any]) -> None:
    stored = the_study.user_attrs.get("definition")
    if stored is None:
        the_study.set_user_attr("definition", json.loads(json.dumps(definition)))
    elif stored != json.loads(json.dumps(definition)):
        raise UserError(
            f"study {the_study.study_name!r} was started with other settings ({stored}); rerun it with the same "
            "--config, --data, --space, --metric, --pruner and --set, or use another --out / --storage"
        )


def write_outputs(the_study: Any, metric: str, out: Path, pruned_on: str | None = None) -> dict[str, Any]:
    """trials.csv, best.yaml (once a trial completed), sweep.html; returns the result line.

    The summary names the metric, its direction and the monitor the pruner read (``pruned_on``).
    """
    optuna = study.import_optuna()
    states = optuna.trial.TrialState
    goal = objective.get(metric)
    trials = the_study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in (states.COMPLETE, states.PRUNED, states.FAIL)}
    summary: dict[str, Any] = {
        "out": str(out),
        "trials": len(trials),
        "complete": count[states.COMPLETE],
        "pruned": count[states.PRUNED],
        "failed": count[states.FAIL],
        "metric": metric,
        "direction": goal.direction,
        "pruned_on": pruned_on,
        "best": None,
    }
    outputs.write_csv(trials, goal, out / "trials.csv")
    if count[states.COMPLETE]:
        best = the_study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params}
        outputs.write_best(best, goal, out / "best.yaml")
    base = [t for t in trials if t.user_attrs.get("baseline") and t.state == states.COMPLETE]
    if base:
        summary["baseline"] = {"number": base[0].number, "value": base[0].value, "params": base[0].params}
    outputs.write_html(the_study, summary, out / "sweep.html")
    return summary


def command(
    space: str,
    trials: int,
    config: str | None = None,
    data: str | None = None,
    *,
    metric: str = "knn_top1",
    pruner: str = "median",
    sampler: str = "tpe",
    out: str = "runs/sweep",
    storage: str | None = None,
    baseline: bool = True,
    study_name: str | None = None,
    sampler_seed: int | None = None,
    sets: Sequence[str] = (),
) -> dict[str, Any]:
    """``fastclr sweep``: search the config fields the YAML file ``space`` names ({low, high[, log][, step]},
    a list of choices, or a fixed value), each trial a pretraining run of the ``config`` preset.

    Writes OUT/trials/N (one run folder per trial), OUT/trials.csv, OUT/best.yaml, OUT/sweep.html. Rerun
    the same command to resume; run it in several processes on the same OUT (and ``storage``) to search in
    parallel. A folder without labels: metric rankme (or view_agreement, alignment, uniformity), or
    probe_knn with --set probe_labels=FILE naming a few labelled images. Needs optuna: pip install
    'fastclr[sweep]'.
    """
    spec = SweepSpec(config, data, space, metric, pruner, tuple(sets), baseline, sampler)
    return sweep(spec, trials, out, storage, study_name, sampler_seed)
