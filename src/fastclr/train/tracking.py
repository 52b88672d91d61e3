"""Experiment tracking: ``OUT/metrics.jsonl`` (one JSON object per line), always, and the trackers
the config's ``trackers`` names: TensorBoard, Weights & Biases, MLflow (any subset). The pipeline
(:mod:`fastclr.pipeline`) opens them and hands the loop a :class:`TrackerCallback`.

Every line has a ``step``; training lines add ``epoch``, ``loss``, ``lr``, ``images_per_s``, monitor
lines add their own keys (``knn_top1``, ``online_probe_top1``, ...). Every numeric key of a line goes
to every tracker with the line's step. On resume the file is cut back to the checkpoint's step, so a
resumed run's log reads like an uninterrupted run's; TensorBoard purges the later steps likewise,
W&B and MLflow continue the same run (their ids are kept in ``OUT/trackers.json``) and may hold a
second value for the steps between the checkpoint and the interruption.

A tracker receives the resolved config (``log_config``), every metric with its step
(``log_metrics``), the final evaluation (``log_summary``) and files such as the report's figures
(``log_file``). Offline use needs no network: W&B writes ``TRACKER_DIR/wandb/offline-run-*`` with
``WANDB_MODE=offline`` (``wandb sync`` uploads it later); MLflow writes the local file store
``TRACKER_DIR/mlruns`` unless ``MLFLOW_TRACKING_URI`` names another store. ``TRACKER_DIR`` is the
config's ``tracker_dir`` or the run folder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

from fastclr.errors import UserError
from fastclr.train.callbacks import Callback

FILE = "metrics.jsonl"
IDS_FILE = "trackers.json"  # the W&B / MLflow run ids, so a resumed run continues the same tracked run
NAMES = ("tensorboard", "wandb", "mlflow")


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


def parse_names(value: str) -> list[str]:
    """The tracker names of a config value: ``"tensorboard,wandb"``, ``"[wandb, mlflow]"``, ``"none"``, ``"auto"``.

    ``auto`` is TensorBoard when its package is installed (nothing otherwise); UserError for unknown names.
    """
    names = [n.strip().strip("'\"") for n in value.strip().strip("[]").split(",") if n.strip().strip("'\"")]
    if names in ([], ["none"]):
        return []
    if names == ["auto"]:
        try:
            import tensorboard  # noqa: F401 - only whether it is there
        except ImportError:
            return []
        return ["tensorboard"]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise UserError(f"trackers={value!r}: unknown {unknown}; use any of {', '.join(NAMES)} (or none, auto)")
    return list(dict.fromkeys(names))


def _numeric(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class Tracker(Protocol):
    """What every tracker does; the run calls these in order and ``close`` last."""

    def log_config(self, values: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_summary(self, values: dict[str, float], step: int) -> None: ...
    def log_file(self, path: Path) -> None: ...
    def close(self) -> None: ...


class TensorBoard:
    """Scalars and the config as text in the run folder (``pip install 'fastclr[tensorboard]'``).

    The writer opens at the first record and purges the events from that step on (TensorBoard's
    ``purge_step``): a resumed run's events read like an uninterrupted run's.
    """

    def __init__(self, out: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("trackers=tensorboard needs tensorboard: pip install 'fastclr[tensorboard]'") from None
        self.out, self.opener, self.pending = out, SummaryWriter, []  # type: ignore[var-annotated]
        self._writer: Any = None

    def _open(self, step: int) -> Any:
        if self._writer is None:
            self._writer = self.opener(log_dir=str(self.out), purge_step=step if step > 0 else None)
            for text in self.pending:
                self._writer.add_text("config", text)
        return self._writer

    def log_config(self, values: dict[str, Any]) -> None:
        text = "\n".join(f"    {k}: {v!r}" for k, v in values.items())
        if self._writer is None:
            self.pending.append(text)
        else:
            self._writer.add_text("config", text)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        writer = self._open(step)
        for key, value in metrics.items():
            writer.add_scalar(key, value, step)
        writer.flush()

    def log_summary(self, values: dict[str, float], step: int) -> None:
        self.log_metrics({f"eval/{k}": v for k, v in values.items()}, step)

    def log_file(self, path: Path) -> None:
        if path.suffix == ".png":
            import numpy as np
            from PIL import Image

            image = np.asarray(Image.open(path).convert("RGB"))
            self._open(0).add_image(path.stem, image, dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class WandB:
    """A Weights & Biases run (``pip install 'fastclr[wandb]'``); ``WANDB_MODE=offline`` needs no network."""

    def __init__(self, out: Path, folder: Path, run_id: str | None, project: str, group: str, name: str):
        try:
            import wandb
        except ImportError:
            raise UserError("trackers=wandb needs wandb: pip install 'fastclr[wandb]'") from None
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=project,
                group=group or None,
                name=name,
                dir=str(folder),
                id=run_id,
                resume="allow",
                settings=wandb.Settings(console="off"),  # stdout stays ours: the result is its last line
            )
        except Exception as e:  # noqa: BLE001 - wandb raises many kinds (no key, no network)
            raise UserError(
                f"trackers=wandb: W&B did not start ({str(e).splitlines()[0][:120]}); run `wandb login`, "
                "or set WANDB_MODE=offline to log without a network"
            ) from None
        self.id = self.run.id

    def log_config(self, values: dict[str, Any]) -> None:
        self.run.config.update(values, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_summary(self, values: dict[str, float], step: int) -> None:
        self.run.log({f"eval/{k}": v for k, v in values.items()}, step=step)
        for key, value in values.items():
            self.run.summary[f"eval/{key}"] = value

    def log_file(self, path: Path) -> None:
        import wandb

        if path.suffix == ".png":
            self.run.log({path.stem: wandb.Image(str(path))})
        else:
            self.run.save(str(path), base_path=str(path.parent), policy="now")

    def close(self) -> None:
        self.run.finish()


class MLflow:
    """An MLflow run (``pip install 'fastclr[mlflow]'``) in ``MLFLOW_TRACKING_URI`` or the local file store."""

    def __init__(self, folder: Path, run_id: str | None, experiment: str, group: str, name: str):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError("trackers=mlflow needs mlflow: pip install 'fastclr[mlflow]'") from None
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for the opt-in
            uri = (folder / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        if run_id is None:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            tags = {"group": group} if group else {}
            run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        self.id = run_id
        self.uri = uri

    def log_config(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(self.id).data.params  # a resumed run keeps its parameters (immutable)
        params = [Param(k, str(v)) for k, v in values.items() if k not in have]
        if params:
            self.client.log_batch(self.id, params=params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_summary(self, values: dict[str, float], step: int) -> None:
        self.log_metrics({f"eval/{k}": v for k, v in values.items()}, step)

    def log_file(self, path: Path) -> None:
        self.client.log_artifact(self.id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.id)


class Trackers:
    """The run's trackers as one: every call goes to each of them (none: every call does nothing).

    Args:
        names: tracker names (see :func:`parse_names`).
        out: the run folder (TensorBoard's events, ``trackers.json``).
        folder: where W&B and MLflow write locally ("" or None: ``out``).
        project, group: W&B project / group, MLflow experiment / tag ``group``.
    """

    def __init__(
        self,
        names: list[str],
        out: Path,
        folder: str | Path | None = None,
        project: str = "fastclr",
        group: str = "",
    ):
        out = Path(out)
        where = Path(folder) if folder else out
        ids_path = out / IDS_FILE
        ids = json.loads(ids_path.read_text()) if ids_path.is_file() else {}
        name = out.name
        self.items: list[Tracker] = []
        for tracker in names:
            if tracker == "tensorboard":
                self.items.append(TensorBoard(out))
            elif tracker == "wandb":
                run = WandB(out, where, ids.get("wandb"), project, group, name)
                ids["wandb"] = run.id
                self.items.append(run)
            elif tracker == "mlflow":
                mlflow = MLflow(where, ids.get("mlflow"), project, group, name)
                ids["mlflow"] = mlflow.id
                self.items.append(mlflow)
        if ids:
            out.mkdir(parents=True, exist_ok=True)
            ids_path.write_text(json.dumps(ids, indent=2))

    @classmethod
    def from_config(cls, cfg: Any) -> Trackers:
        """The trackers ``cfg`` (a :class:`fastclr.config.Config`) asks for, in its run folder."""
        return cls(
            parse_names(cfg.trackers),
            Path(cfg.out),
            cfg.tracker_dir,
            cfg.tracker_project,
            cfg.tracker_group,
        )

    def log_config(self, values: dict[str, Any]) -> None:
        for t in self.items:
            t.log_config(values)

    def log(self, record: dict[str, Any]) -> None:
        """One metrics record (it holds ``step``): its numeric values, at its step."""
        step, values = record.get("step"), _numeric(record)
        if isinstance(step, int) and values:
            for t in self.items:
                t.log_metrics(values, step)

    def log_summary(self, values: dict[str, Any], step: int) -> None:
        numeric = _numeric(values)
        for t in self.items:
            t.log_summary(numeric, step)

    def log_file(self, path: str | Path) -> None:
        for t in self.items:
            t.log_file(Path(path))

    def close(self) -> None:
        for t in self.items:
            t.close()
        self.items = []


class TrackerCallback(Callback):
    """Feeds every record the loop logs (its own and the monitors') to the run's trackers."""

    def __init__(self, trackers: Trackers):
        self.trackers = trackers

    def on_log(self, record: dict[str, Any]) -> None:
        self.trackers.log(record)


class MetricsLog:
    """Appends JSON lines to ``OUT/metrics.jsonl`` (rank 0); the trackers get the same records through
    :class:`TrackerCallback`.

    Args:
        out: the run folder.
        start_step: the step training starts from (0, or a resumed checkpoint's); later lines are dropped.
        enabled: False on every rank but 0 (nothing is written).
    The file-like ``write(line)`` / ``flush()`` / ``close()`` accept lines that callers format themselves.
    """

    def __init__(self, out: Path, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            self.file = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
            return
        path = Path(out) / FILE
        trim(path, start_step)
        self.file = open(path, "a")  # noqa: SIM115 - open for the whole run

    def log(self, record: dict) -> None:
        """Append one record (it must hold ``step``)."""
        self.write(json.dumps(record) + "\n")

    def write(self, line: str) -> None:
        self.file.write(line)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()
