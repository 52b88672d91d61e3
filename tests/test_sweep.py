"""``fastclr sweep``: a 3-trial search on digits writes every output and prunes the trial that cannot
keep up, resumes after a kill without losing or duplicating a trial, and refuses a space with an
unknown field; label-free metrics pick the best trial in their own direction and prune on the
label-free monitor; probe_knn without probe_labels is refused."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fastclr import config
from fastclr.cli import main
from fastclr.errors import UserError
from fastclr.sweep import space

pytest.importorskip("optuna")

TINY = [
    "max_images=256",
    "image_size=8",
    "epochs=2",
    "batch_size=64",
    "warmup_epochs=0",
    "workers=0",
    "knn_k=10",
    "log_every=1",
    "checkpoint_every=1",
    "trackers=none",
    "device=cpu",
]
SPACE = "temperature: {low: 0.1, high: 0.5, log: true}\nlr: [0.05, 0.1]\nmin_scale: 0.3\n"
# A trial whose kNN bank and held-aside set hold 2 images cannot keep up: kNN predicts 2 of the 10 classes
# (top-1 about 0.2, against about 0.7 with 200), RankMe is at most min(images, d) = 2 (against 40 or more).
STARVED = "eval_max_images: [200, 2]\n"


def _args(
    tmp_path: Path, out: Path, trials: int = 3, text: str = SPACE, seed: int = 0, flags: tuple[str, ...] = ()
) -> list[str]:
    (tmp_path / "space.yaml").write_text(text)
    args = ["sweep", "--space", str(tmp_path / "space.yaml"), "--trials", str(trials), "--out", str(out)]
    args += ["--sampler-seed", str(seed), *flags]
    for item in TINY:
        args += ["--set", item]
    return args


def _rows(out: Path) -> list[dict]:
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


def test_space_reads_ranges_choices_and_fixed_values(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SPACE + "warmup_epochs: {low: 0, high: 4, step: 2}\nflip: false\n")
    dims = {d.name: d for d in space.read(path)}
    assert dims["temperature"].log and dims["temperature"].low == 0.1
    assert dims["lr"].choices == (0.05, 0.1) and dims["min_scale"].fixed == 0.3
    assert dims["flip"].fixed is False and dims["flip"].low is None


@pytest.mark.parametrize(
    "text,match",
    [
        ("temprature: [0.1, 0.2]\n", "unknown field.*valid fields: data, image_size"),
        ("arch: {low: 1, high: 2}\n", "give a list of choices"),
        ("lr: {low: 0.5, high: 0.1}\n", "need low < high"),
        ("lr: {low: 0.1}\n", "a range is"),
    ],
)
def test_bad_space_is_a_user_error(tmp_path, text, match):
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(UserError, match=match):
        space.read(tmp_path / "s.yaml")


def test_unknown_field_exits_2_listing_the_valid_ones(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("temprature: [0.1, 0.2]\n")
    code = main(["sweep", "--space", str(tmp_path / "s.yaml"), "--trials", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "temprature" in err[0] and "temperature" in err[0]
    assert not (tmp_path / "o" / "trials").exists()


@pytest.mark.slow
def test_sweep_completes_and_writes_every_output(tmp_path, capsys):
    """Sampler seed 5 draws eval_max_images 200, 200, then 2: the median pruner (2 startup trials) stops
    trial 2 after its first kNN monitor value, far below the others'."""
    out = tmp_path / "sweep"
    assert main(_args(tmp_path, out, text=SPACE + STARVED, seed=5)) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) >= {"out", "trials", "complete", "pruned", "failed", "best", "direction", "pruned_on"}
    assert result["trials"] == 3 and result["complete"] == 2 and result["pruned"] == 1 and result["failed"] == 0
    assert result["direction"] == "maximize" and result["pruned_on"] == "knn_top1"
    rows = _rows(out)
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert [r["eval_max_images"] for r in rows] == ["200", "200", "2"] and rows[2]["state"] == "PRUNED"
    monitor = [json.loads(x) for x in (out / "trials" / "2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in monitor if "knn_top1" in r] == [1.0]  # stopped at its first monitor value
    assert not (out / "trials" / "2" / "result.json").is_file() or "eval" not in json.loads(
        (out / "trials" / "2" / "result.json").read_text()
    )
    for r in rows:
        folder = out / "trials" / r["number"]
        assert (folder / "config.yaml").is_file() and (folder / "metrics.jsonl").is_file()
        assert (folder / "checkpoints" / "last.pt").is_file()
        if r["state"] == "COMPLETE":
            scores = json.loads((folder / "result.json").read_text())["eval"]
            assert float(r["value"]) == pytest.approx(scores["knn_top1"]) == pytest.approx(float(r["knn_top1"]))
            assert float(r["rankme"]) == pytest.approx(scores["label_free"]["rankme"])  # read against another metric
            assert float(r["linear_top1"]) == pytest.approx(scores["linear_top1"]) and r["metric"] == "knn_top1"
        trial_cfg = config.read_preset(str(folder / "config.yaml"))
        assert trial_cfg["temperature"] == pytest.approx(float(r["temperature"])) and trial_cfg["min_scale"] == 0.3
    best = result["best"]
    assert best["value"] == max(float(r["value"]) for r in rows if r["state"] == "COMPLETE")
    cfg = config.build_config(str(out / "best.yaml"), {}, [])  # loadable with --config DIR/best.yaml
    assert cfg.temperature == pytest.approx(best["params"]["temperature"]) and cfg.lr == best["params"]["lr"]
    assert "<img" in (out / "sweep.html").read_text()
    assert main(_args(tmp_path, out, text=SPACE + STARVED, seed=5)) == 0  # rerun: nothing left to do, nothing added
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trials"] == 3


def _checkpoint_steps(folder: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[-1]) for p in (folder / "checkpoints").glob("step-*.pt"))


@pytest.mark.slow
def test_sweep_resumes_after_a_kill_without_losing_or_duplicating_a_trial(tmp_path):
    out = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
    cmd = [sys.executable, "-m", "fastclr", *_args(tmp_path, out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    victim = out / "trials" / "1"
    deadline = time.time() + 1200
    while time.time() < deadline and proc.poll() is None:
        if (victim / "checkpoints").is_dir() and [s for s in _checkpoint_steps(victim) if s >= 2]:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before trial 1 was checkpointed mid-way"
    os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: trial 1 stays RUNNING in the study
    proc.wait()
    killed_at = max(_checkpoint_steps(victim))
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads(again.stdout.strip().splitlines()[-1])
    assert result["trials"] == 3 and result["failed"] == 0 and result["complete"] + result["pruned"] == 3
    assert [r["number"] for r in _rows(out)] == ["0", "1", "2"]
    assert f"resuming from {victim / 'checkpoints'}" in again.stderr  # taken over, not restarted
    steps = [json.loads(x)["step"] for x in (victim / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == sorted(set(steps)) and steps[0] == 1 and killed_at in steps  # one continuous log


def test_a_trial_of_a_dead_process_is_taken_over_not_added(tmp_path):
    """A RUNNING trial whose owner pid is gone is handed out again (same number, same params);
    the study never grows past --trials."""
    import optuna

    from fastclr.sweep import study

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    s = optuna.create_study(storage=study.storage(tmp_path, None), study_name="s", direction="maximize")
    first = study.next_trial(s, tmp_path, total=2)
    lr = first.suggest_float("lr", 0.01, 1.0, log=True)
    first.set_user_attr("owner", {"host": study.me()["host"], "pid": dead.pid})  # its process was killed
    again = study.next_trial(s, tmp_path, total=2)
    assert again.number == first.number and again.suggest_float("lr", 0.01, 1.0, log=True) == lr
    assert again.user_attrs["owner"] == study.me()
    s.tell(again, 0.5)
    second = study.next_trial(s, tmp_path, total=2)
    assert second.number == 1
    assert study.next_trial(s, tmp_path, total=2) is None  # trial 1 is alive (ours): nothing to take over
    s.tell(second, 0.7)
    assert study.next_trial(s, tmp_path, total=2) is None and len(s.trials) == 2


def test_trial_0_is_the_base_configs_own_values_when_they_lie_in_the_space(tmp_path):
    """The study starts from the base config (digits: temperature 0.2, lr 0.075) so that the summary can
    set the best trial beside it; a base value outside the space means no baseline trial, said once."""
    import optuna

    from fastclr.sweep import run, study

    (tmp_path / "in.yaml").write_text(
        "temperature: {low: 0.1, high: 0.5, log: true}\nlr: [0.075, 0.1]\nmin_scale: 0.3\n"
    )
    (tmp_path / "out.yaml").write_text("temperature: {low: 0.3, high: 0.5}\n")
    spec = run.SweepSpec(None, None, str(tmp_path / "in.yaml"))
    dims = space.read(spec.space_file)
    base = config.build_config(None, {}, [])
    first = run.baseline_params(spec, dims)
    assert first == {"temperature": base.temperature, "lr": base.lr}  # the fixed min_scale is not searched
    outside = run.SweepSpec(None, None, str(tmp_path / "out.yaml"))
    assert run.baseline_params(outside, space.read(outside.space_file)) is None

    s = optuna.create_study(storage=study.storage(tmp_path, None), study_name="s", direction="maximize")
    t0 = study.next_trial(s, tmp_path, total=3, first=first)
    assert space.suggest(t0, dims) == {"temperature": base.temperature, "lr": base.lr, "min_scale": 0.3}
    s.tell(t0, 0.5)
    t1 = study.next_trial(s, tmp_path, total=3, first=first)  # queued once: trial 1 is the sampler's
    assert t1.number == 1 and not t1.user_attrs.get("baseline")
    space.suggest(t1, dims)
    (tmp_path / "trials" / "1").mkdir(parents=True)  # best.yaml is written from the best trial's config
    (tmp_path / "trials" / "1" / "config.yaml").write_text(yaml.safe_dump(config.to_dict(base)))
    t1.set_user_attr("folder", str(tmp_path / "trials" / "1"))
    s.tell(t1, 0.7)
    summary = run.write_outputs(s, "knn_top1", tmp_path)
    assert summary["baseline"] == {"number": 0, "value": 0.5, "params": first}
    assert summary["best"]["number"] == 1 and summary["best"]["value"] == 0.7
    assert (tmp_path / "best.yaml").is_file()  # written from the best trial, baseline or not


def test_contains_follows_ranges_steps_and_choices():
    d = space.Dimension("warmup_epochs", low=0, high=10, step=2)
    assert space.contains(d, 4) and not space.contains(d, 5) and not space.contains(d, 12)
    assert space.contains(space.Dimension("lr", choices=(0.1, 0.2)), 0.2)
    assert not space.contains(space.Dimension("lr", choices=(0.1, 0.2)), 0.3)
    assert not space.contains(space.Dimension("lr", low=0.1, high=1.0), "0.5")


def _result(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "flags,match",
    [
        (("--metric", "probe_knn"), "--metric probe_knn needs --set probe_labels=FILE"),
        (("--metric", "train_knn"), "--metric train_knn scores a labelled folder or list without a test split"),
        (("--metric", "top1"), "--metric 'top1': use one of knn_top1, linear_top1, rankme"),
        (("--metric", "rankme", "--set", "eval=false"), "remove --set eval=false"),
        (("--sampler", "grid"), "--sampler grid: temperature is a range"),
    ],
)
def test_a_metric_no_trial_can_report_exits_2_in_one_line(tmp_path, capsys, flags, match):
    out = tmp_path / "o"
    code = main(_args(tmp_path, out, flags=flags))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and match in err[0], err
    assert not (out / "trials").exists()


@pytest.mark.parametrize(
    "metric,pruner,on",
    [
        ("rankme", "median", "quality_every"),
        ("alignment", "halving", "quality_every"),
        ("knn_top1", "median", "knn_every"),
    ]
    + [("probe_knn", "median", None), ("rankme", "none", None)],
)
def test_a_trial_turns_on_the_monitor_its_pruner_reads_and_no_other(tmp_path, metric, pruner, on):
    from fastclr.sweep import objective, run

    (tmp_path / "s.yaml").write_text(SPACE)
    spec = run.SweepSpec(None, None, str(tmp_path / "s.yaml"), metric=metric, pruner=pruner)
    cfg = run.trial_config(spec, space.read(spec.space_file), run._Preview(), tmp_path, "s")
    assert {f: getattr(cfg, f) for f in ("knn_every", "quality_every")} == {
        f: int(f == on) for f in ("knn_every", "quality_every")
    }
    assert spec.pruned_on() == (objective.get(metric).monitor if on else None)


@pytest.mark.parametrize(
    "metric,done,worse,better", [("rankme", (40.0, 50.0), 10.0, 60.0), ("alignment", (0.5, 0.7), 0.9, 0.4)]
)
def test_pruning_reads_its_metrics_monitor_in_the_metrics_direction(metric, done, worse, better):
    """Two finished trials set the median at epoch 1; a trial below it (RankMe lower, alignment higher)
    is pruned, one above it is not; another monitor's value in the same record is never reported."""
    import optuna

    from fastclr.sweep import objective, run

    s = optuna.create_study(direction=objective.get(metric).direction, pruner=run._pruner("median"))
    for value in done:
        t = s.ask()
        run.Pruning(t, metric).on_log({"step": 4, "epoch": 1.0, metric: value})
        s.tell(t, value)
    for value, pruned in ((worse, True), (better, False)):
        t = s.ask()
        callback = run.Pruning(t, metric)
        callback.on_log({"step": 4, "epoch": 1.0, "knn_top1": 0.0})  # the kNN monitor: not this study's
        assert s.trials[t.number].intermediate_values == {} and not callback.should_stop()
        callback.on_log({"step": 4, "epoch": 1.0, metric: value, "knn_top1": 0.99})
        assert s.trials[t.number].intermediate_values == {1: value} and callback.should_stop() is pruned
        if pruned:
            s.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            s.tell(t, value)


@pytest.mark.slow
@pytest.mark.parametrize("metric,pick", [("rankme", max), ("alignment", min)])
def test_a_label_free_study_picks_its_best_trial_in_the_metrics_direction(tmp_path, capsys, metric, pick):
    """best.yaml is the trial with the highest RankMe (the lowest alignment) in trials.csv, whose rows also
    carry every other figure of the trial's result."""
    out = tmp_path / "sweep"
    flags = ("--metric", metric, "--sampler", "grid", "--pruner", "none", "--set", "eval_max_images=100")
    assert main(_args(tmp_path, out, trials=2, text="temperature: [0.1, 0.5]\n", flags=flags)) == 0
    result = _result(capsys)
    direction = "maximize" if pick is max else "minimize"
    assert result["complete"] == 2 and result["direction"] == direction and result["pruned_on"] is None
    rows = _rows(out)
    for r in rows:
        scores = json.loads((out / "trials" / r["number"] / "result.json").read_text())["eval"]
        assert (r["metric"], r["direction"]) == (metric, direction)
        assert float(r["value"]) == pytest.approx(scores["label_free"][metric]) == pytest.approx(float(r[metric]))
        assert float(r["knn_top1"]) == pytest.approx(scores["knn_top1"]) and r["view_agreement"] and r["uniformity"]
    chosen = pick(rows, key=lambda r: float(r[metric]))
    assert result["best"]["number"] == int(chosen["number"])
    header = (out / "best.yaml").read_text().splitlines()[0]
    assert header.startswith(f"# best trial {chosen['number']} ") and f"by {metric} ({direction[:-2]}sed)" in header
    assert config.build_config(str(out / "best.yaml"), {}, []).temperature == float(chosen["temperature"])
    assert f"{metric} ({direction[:-2]}sed)" in (out / "sweep.html").read_text()


@pytest.mark.slow
def test_a_label_free_study_prunes_on_the_label_free_monitor(tmp_path, capsys):
    """The seeded grid runs 200 held-aside images, then 2: trial 1's RankMe (at most min(2, d) = 2) trails
    trial 0's at epoch 1 and successive halving prunes it. The values optuna got are the RankMe
    entries of metrics.jsonl, and no trial ran the kNN monitor."""
    import optuna

    from fastclr.sweep import study

    out = tmp_path / "sweep"
    flags = ("--metric", "rankme", "--sampler", "grid", "--pruner", "halving")
    assert main(_args(tmp_path, out, trials=2, text="eval_max_images: [2, 200]\n", flags=flags)) == 0
    result = _result(capsys)
    rows = _rows(out)
    assert [r["eval_max_images"] for r in rows] == ["200", "2"], "the grid's seeded order changed"
    assert result["pruned_on"] == "rankme" and [r["state"] for r in rows] == ["COMPLETE", "PRUNED"]
    stored = optuna.load_study(study_name="sweep", storage=study.storage(out, None))
    for t in stored.trials:
        folder = out / "trials" / str(t.number)
        trial_cfg = config.read_preset(str(folder / "config.yaml"))
        assert trial_cfg["quality_every"] == 1 and trial_cfg["knn_every"] == 0
        records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        assert t.intermediate_values == {round(r["epoch"]): r["rankme"] for r in records if "rankme" in r}
        assert not any("knn_top1" in r for r in records)
    assert list(stored.trials[1].intermediate_values) == [1] and stored.trials[1].intermediate_values[1] <= 2


def test_the_grid_runs_every_point_once_in_its_seeded_order_and_tells_the_last_one(tmp_path):
    """optuna's GridSampler calls study.stop() once its last point is told, which raises outside
    study.optimize; the sweep's grid lets its own loop stop at --trials instead."""
    import optuna

    from fastclr.sweep import run

    (tmp_path / "s.yaml").write_text("temperature: [0.1, 0.5]\nlr: [0.05, 0.1]\nmin_scale: 0.3\n")
    dims = space.read(tmp_path / "s.yaml")
    s = optuna.create_study(sampler=run._sampler("grid", dims, 4, 0))
    seen = []
    for _ in range(4):
        t = s.ask()
        seen.append(tuple(space.suggest(t, dims).values()))
        s.tell(t, 0.5)  # the last tell must not raise
    assert sorted(seen) == [(a, b, 0.3) for a in (0.1, 0.5) for b in (0.05, 0.1)]
    with pytest.raises(UserError, match="the grid of --space has 4 points"):
        run._sampler("grid", dims, 5, 0)


@pytest.mark.parametrize("pruner", ["median", "halving", "none"])
def test_the_pruner_flag_picks_optunas_pruner_and_only_none_never_prunes(tmp_path, monkeypatch, pruner):
    """``--pruner NAME`` reaches the study: median (2 startup trials) and successive halving prune a trial
    whose first kNN value trails two finished trials' and keep one that leads; none prunes nothing and reads
    no monitor; an unknown name exits 2 in one line before any trial."""
    import optuna

    from fastclr.sweep import run

    seen = {}
    monkeypatch.setattr(run, "sweep", lambda spec, *args: seen.setdefault("spec", spec) and {"ok": 1})
    assert main(_args(tmp_path, tmp_path / "o", flags=("--pruner", pruner))) == 0
    spec = seen["spec"]
    assert spec.pruner == pruner and spec.pruned_on() == (None if pruner == "none" else "knn_top1")
    kind = {"median": optuna.pruners.MedianPruner, "halving": optuna.pruners.SuccessiveHalvingPruner}
    chosen = run._pruner(pruner)
    assert type(chosen) is kind.get(pruner, optuna.pruners.NopPruner)
    s = optuna.create_study(direction="maximize", pruner=chosen)
    for value in (0.7, 0.8):
        t = s.ask()
        callback = run.Pruning(t, spec.pruned_on())
        for epoch in (1, 2):
            callback.on_log({"step": 4 * epoch, "epoch": float(epoch), "knn_top1": value})
        s.tell(t, value)
    for value, pruned in ((0.1, pruner != "none"), (0.9, False)):
        t = s.ask()
        callback = run.Pruning(t, spec.pruned_on())
        callback.on_log({"step": 4, "epoch": 1.0, "knn_top1": value})
        assert callback.should_stop() is pruned, (pruner, value)
        assert s.trials[t.number].intermediate_values == ({} if pruner == "none" else {1: value})
        if pruned:
            s.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            s.tell(t, value)


def test_an_unknown_pruner_exits_2_in_one_line(tmp_path, capsys):
    code = main(_args(tmp_path, tmp_path / "o", flags=("--pruner", "hyperband")))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["fastclr: error: --pruner 'hyperband': use one of median, halving, none"]
    assert not (tmp_path / "o" / "trials").exists()


# A worker of the two-worker test: `fastclr ARGS` whose first trial starts once both workers own a trial (a
# barrier on the shared storage, so that each surely runs one whatever the machine's speed).
WORKER = """
import sys, time
from fastclr.cli import main
from fastclr.sweep import run

real, first = run.run_trial, [True]

def run_trial(spec, dims, trial, out, name):
    if first.pop() if first else False:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            owners = {t.user_attrs.get("owner", {}).get("pid") for t in trial.study.get_trials(deepcopy=False)}
            if len(owners - {None}) >= 2:
                break
            time.sleep(0.05)
    return real(spec, dims, trial, out, name)

run.run_trial = run_trial
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_workers_share_one_storage_and_run_every_trial_once(tmp_path):
    """Two live processes run the same sweep on one --out and one --storage journal: the study holds trials
    0, 1, 2 once each (each grid point once), every one finished, some run by each worker, all in the named
    storage (no default journal), each in its own folder; trials.csv lists them once."""
    import optuna

    from fastclr.sweep import study

    out, journal = tmp_path / "sweep", tmp_path / "shared" / "study.log"
    fast = ("--pruner", "none", "--sampler", "grid", "--storage", str(journal), "--study-name", "shared")
    fast += ("--set", "eval_max_images=50")
    args = _args(tmp_path, out, trials=3, text="temperature: [0.1, 0.2, 0.5]\n", flags=fast)
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
    cmd = [sys.executable, str(tmp_path / "worker.py"), *args]
    workers = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=1800)
        assert w.returncode == 0, err[-2000:]
    assert journal.is_file() and not (out / study.FILE).exists()
    stored = optuna.load_study(study_name="shared", storage=study.storage(out, str(journal)))
    trials = stored.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    owners = [t.user_attrs["owner"]["pid"] for t in trials]
    assert set(owners) == {w.pid for w in workers}  # both workers ran trials
    assert sorted(t.params["temperature"] for t in trials) == [0.1, 0.2, 0.5]  # each point of the grid once
    assert sorted(t.user_attrs["folder"] for t in trials) == [str(out / "trials" / str(n)) for n in range(3)]
    assert [r["number"] for r in _rows(out)] == ["0", "1", "2"] and {r["state"] for r in _rows(out)} == {"COMPLETE"}


def test_train_knn_tunes_a_labelled_folder_without_a_test_split(tmp_path, capsys):
    """Class folders and nothing held out: each trial reports the leave-one-out kNN over its training images, the
    study maximises it; a folder with a test split, or without labels, is refused before any trial."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    folder = tmp_path / "digits"
    for i in range(120):
        (folder / str(d.target[i])).mkdir(parents=True, exist_ok=True)
        im = np.round(d.images[i] * (255.0 / 16.0)).astype(np.uint8)
        Image.fromarray(np.repeat(im[:, :, None], 3, 2)).save(folder / str(d.target[i]) / f"{i:03d}.png")
    out = tmp_path / "sweep"
    flags = ("--metric", "train_knn", "--set", f"data={folder}", "--set", "batch_size=32")
    assert main(_args(tmp_path, out, trials=2, flags=flags)) == 0
    result = _result(capsys)
    rows = _rows(out)
    assert (
        result["complete"] == 2 and result["direction"] == "maximize" and all(r["metric"] == "train_knn" for r in rows)
    )
    for r in rows:
        scores = json.loads((out / "trials" / r["number"] / "result.json").read_text())["eval"]
        assert float(r["value"]) == pytest.approx(scores["train_knn_top1"]) == pytest.approx(float(r["train_knn"]))
    assert result["best"]["value"] == max(float(r["value"]) for r in rows)
    (tmp_path / "flat").mkdir()
    for f in sorted(folder.rglob("*.png"))[:40]:
        (tmp_path / "flat" / f.name).write_bytes(f.read_bytes())
    split = tmp_path / "split"
    every = sorted(folder.rglob("*.png"))
    for part, files in (("train", every[0::2]), ("test", every[1::2])):
        for f in files:
            (split / part / f.parent.name).mkdir(parents=True, exist_ok=True)
            (split / part / f.parent.name / f.name).write_bytes(f.read_bytes())
    for data, words in ((tmp_path / "flat", "has no labels"), (split, "has a test split; use knn_top1")):
        flags = ("--metric", "train_knn", "--set", f"data={data}")
        assert main(_args(tmp_path, tmp_path / "no", flags=flags)) == 2
        assert words in capsys.readouterr().err
