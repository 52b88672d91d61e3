"""Trackers: every metrics record reaches MLflow and W&B with its step, offline, and a resumed run
continues the same tracked run; a missing extra is one line naming its install command."""

import json
import sys
import time

import pytest

from fastclr.errors import UserError
from fastclr.train.tracking import IDS_FILE, TrackerCallback, Trackers, parse_names

RECORDS = [{"step": 10, "epoch": 0.5, "loss": 5.0, "lr": 0.1}, {"step": 20, "epoch": 1.0, "loss": 4.0, "knn_top1": 0.5}]


def test_parse_names():
    assert parse_names("[tensorboard, mlflow]") == ["tensorboard", "mlflow"]
    assert parse_names("wandb,wandb") == ["wandb"]
    assert parse_names("none") == [] and parse_names("") == []
    with pytest.raises(UserError, match="unknown \\['comet'\\]"):
        parse_names("comet")


def _mlflow_client(folder):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=(folder / "mlruns").resolve().as_uri())


def test_mlflow_file_store_holds_every_metric_at_its_step(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    trackers = Trackers(["mlflow"], out, project="exp", group="study")
    trackers.log_config({"lr": 0.3, "arch": "resnet_mini"})
    callback = TrackerCallback(trackers)  # what the loop calls with every record it logs
    for r in RECORDS:
        callback.on_log(r)
    trackers.log_summary({"knn_top1": 0.75, "name": "not a number"}, step=20)
    trackers.close()
    run_id = json.loads((out / IDS_FILE).read_text())["mlflow"]
    client = _mlflow_client(out)
    run = client.get_run(run_id)
    assert run.data.params == {"lr": "0.3", "arch": "resnet_mini"} and run.data.tags["group"] == "study"
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in ("loss", "knn_top1")}
    assert history == {"loss": [(10, 5.0), (20, 4.0)], "knn_top1": [(20, 0.5)]}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "eval/knn_top1")] == [(20, 0.75)]
    assert "epoch" in run.data.metrics and "step" not in run.data.metrics

    again = Trackers(["mlflow"], out)  # a resumed run: the same MLflow run, its parameters kept
    again.log_config({"lr": 0.3, "arch": "resnet_mini"})
    again.log({"step": 30, "loss": 3.0})
    again.close()
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [10, 20, 30]
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_wandb_offline_run_folder_holds_the_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    trackers = Trackers(["wandb"], out, folder=tmp_path / "shared", project="exp", group="study")
    trackers.log_config({"lr": 0.3})
    for r in RECORDS:
        trackers.log(r)
    trackers.log_summary({"knn_top1": 0.75}, step=20)
    trackers.close()
    run_id = json.loads((out / IDS_FILE).read_text())["wandb"]
    folders = list((tmp_path / "shared" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(folders) == 1
    data = b""
    for _ in range(100):  # W&B's service process may still be writing the file after finish() returned
        data = (folders[0] / f"run-{run_id}.wandb").read_bytes()  # protobuf records: keys appear verbatim
        if b"eval/knn_top1" in data:
            break
        time.sleep(0.2)
    for key in (b"loss", b"knn_top1", b"eval/knn_top1", b"study", b"exp"):
        assert key in data, key


@pytest.mark.parametrize(
    "name,module", [("wandb", "wandb"), ("mlflow", "mlflow.tracking"), ("tensorboard", "torch.utils.tensorboard")]
)
def test_missing_extra_names_the_install_command(tmp_path, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if the package were absent
    with pytest.raises(UserError, match=f"pip install 'fastclr\\[{name}\\]'"):
        Trackers([name], tmp_path)


@pytest.mark.slow
def test_a_pretraining_run_reaches_mlflow_and_tensorboard_with_its_steps(tmp_path, monkeypatch):
    """Through the pipeline: every metrics.jsonl record is in MLflow and TensorBoard at its step."""
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fastclr import config, pipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    sets = ["max_images=128", "image_size=8", "batch_size=32", "epochs=2", "log_every=2", "eval=false", "workers=0"]
    sets += ["device=cpu", "knn_every=1", "knn_k=10", "trackers=[mlflow, tensorboard]", "tracker_project=digits"]
    pipeline.pretrain_and_evaluate(config.build_config(None, {"out": str(out)}, sets))
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    client = _mlflow_client(out)
    run_id = json.loads((out / IDS_FILE).read_text())["mlflow"]
    for key in ("loss", "knn_top1"):
        expected = [(r["step"], pytest.approx(r[key])) for r in records if key in r]
        assert expected and [(m.step, m.value) for m in client.get_metric_history(run_id, key)] == expected
    assert client.get_run(run_id).data.params["temperature"] == "0.2"  # the resolved config
    acc = EventAccumulator(str(out))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [r["step"] for r in records if "loss" in r]
