"""What a sweep writes into DIR: ``trials.csv``, ``best.yaml``, ``sweep.html``, and its result line.

Each names the metric and its direction. trials.csv also carries every figure a finished trial's
result holds (kNN, linear, few-shot probe, the label-free ones): one study read against another metric.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from pathlib import Path
from typing import Any

import yaml

from fastclr.sweep.objective import FIGURES, Metric, describe, get


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _seconds(trial: Any) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)


def write_csv(trials: list[Any], metric: Metric, path: Path) -> None:
    """One row per trial: number, state, every parameter, the metric's name, direction and value, every
    figure of :data:`fastclr.sweep.objective.FIGURES` the trial's result holds, seconds (start to end), folder."""
    names = sorted({k for t in trials for k in t.params})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", *names, "metric", "direction", "value", *FIGURES, "seconds", "folder"])
    for t in trials:
        params = [t.params.get(k, "") for k in names]
        figures = t.user_attrs.get("figures") or {}
        writer.writerow(
            [
                t.number,
                t.state.name,
                *params,
                metric.name,
                metric.direction,
                "" if t.value is None else t.value,
                *(figures.get(name, "") for name in FIGURES),
                _seconds(t) or "",
                t.user_attrs.get("folder", ""),
            ]
        )
    _atomic(path, buffer.getvalue())


def write_best(best: Any, metric: Metric, path: Path) -> None:
    """The best trial's resolved config, ``out`` pointed at DIR/best: ``fastclr pretrain --config DIR/best.yaml``."""
    folder = Path(best.user_attrs["folder"])
    values = yaml.safe_load((folder / "config.yaml").read_text())
    values["out"] = str(path.parent / "best")
    header = (
        f"# best trial {best.number} ({folder}) by {describe(metric)}: {metric.name} = {best.value:.4f}; "
        f"params {best.params}\n"
    )
    _atomic(path, header + yaml.safe_dump(values, sort_keys=False))


def _figure_html(draw: Any, study: Any, title: str) -> str:
    """A matplotlib figure of optuna's as an embedded PNG, or a one-line note why there is none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        axes = draw(study)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(7, 4)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
    except ImportError:
        return f"<p>{title}: needs matplotlib (pip install 'fastclr[report]')</p>"
    except Exception as e:  # noqa: BLE001 - optuna refuses plots it cannot make (too few trials, one value)
        return f"<p>{title}: not drawn ({html.escape(str(e).splitlines()[0][:160])})</p>"
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<h2>{title}</h2><img alt="{title}" src="data:image/png;base64,{data}">'


def write_html(study: Any, summary: dict[str, Any], path: Path) -> None:
    """Optimisation history and parameter importance (optuna's matplotlib plots) and the trial table."""
    import warnings

    from optuna.visualization import matplotlib as plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        history = _figure_html(plots.plot_optimization_history, study, "Optimisation history")
        importance = _figure_html(plots.plot_param_importances, study, "Parameter importance (fANOVA)")
    rows = "".join(
        f"<tr><td>{t.number}</td><td>{t.state.name}</td><td>{html.escape(str(t.params))}</td>"
        f"<td>{'' if t.value is None else f'{t.value:.4f}'}</td></tr>"
        for t in study.get_trials(deepcopy=False)
    )
    goal = describe(get(summary["metric"]))
    text = (
        f"<!doctype html><meta charset='utf-8'><title>fastclr sweep {html.escape(study.study_name)}</title>"
        f"<h1>fastclr sweep: {html.escape(study.study_name)}, {goal}</h1>"
        f"<pre>{html.escape(yaml.safe_dump(summary))}</pre>"
        f"{history}{importance}<h2>Trials</h2><table border=1><tr><th>number</th><th>state</th><th>params</th>"
        f"<th>{goal}</th></tr>{rows}</table>"
    )
    _atomic(path, text)
