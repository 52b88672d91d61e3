"""The CLI contract: last stdout line is one JSON object; user mistakes exit 2 with one line."""

import argparse
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from evalkit import run_knn_reference


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fastclr", *args], capture_output=True, text=True, cwd=cwd or ROOT, timeout=600
    )


def test_pretrain_smoke(tmp_path):
    out = tmp_path / "run"
    r = run("pretrain", "--max-steps", "2", "--out", str(out), "--set", "log_every=1")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["steps"] == 2 and result["out"] == str(out)
    for key in ("epochs", "final_loss", "images_per_s"):
        assert key in result
    for key in ("knn_top1", "linear_top1", "linear_top5", "random_init_knn_top1", "random_init_linear_top1"):
        assert key in result["eval"]
    # the reported kNN is that of the saved weights (and of the reseeded random-init encoder), by a hand-written vote
    assert result["eval"]["knn_top1"] == pytest.approx(run_knn_reference(out), abs=1e-6)
    assert result["eval"]["random_init_knn_top1"] == pytest.approx(run_knn_reference(out, baseline=True), abs=1e-6)
    assert result["eval"]["linear_top1"] <= result["eval"]["linear_top5"]
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last.pt").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "loss" in m][:2] == [1, 2]

    import torch

    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["format"] == "fastclr" and state["step"] == 2


@pytest.mark.parametrize(
    "args,needle",
    [
        (["pretrain", "--bogus"], "unrecognized arguments"),
        (["pretrain", "--set", "temprature=0.1"], "unknown config key"),
        (["pretrain", "--epochs", "zero"], "invalid int value"),
        (["pretrain", "--data", "/nonexistent/images"], "/nonexistent/images"),
        (["pretrain", "--config", "nosuchpreset"], "nosuchpreset"),
        (["pretrain", "--arch", "resnet9000", "--max-steps", "1"], "resnet9000"),
        (["pretrain", "--set", "temperature=-1"], "temperature=-1"),
        (["pretrain", "--batch-size", "5000", "--max-steps", "1"], "batch_size=5000"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path, args, needle):
    r = run(*args, "--out", str(tmp_path / "o")) if args[0] == "pretrain" else run(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("fastclr: error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr


def test_python_one_liner_matches_the_formula():
    code = (
        "import fastclr, torch; torch.manual_seed(0); "
        "print(fastclr.nt_xent(torch.randn(8,16), torch.randn(8,16)).item())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    a, b = torch.randn(8, 16), torch.randn(8, 16)
    z = F.normalize(torch.cat([a, b]).double(), dim=1)
    sim = z @ z.T / 0.5
    sim.fill_diagonal_(float("-inf"))
    pos = torch.cat([torch.arange(8, 16), torch.arange(8)])
    expected = -(sim[torch.arange(16), pos] - sim.logsumexp(1)).mean()
    assert float(r.stdout) == pytest.approx(float(expected), rel=1e-5)


def test_rerun_of_a_finished_run_reports_its_last_loss_as_strict_json(tmp_path):
    out = tmp_path / "run"
    first = run("pretrain", "--max-steps", "3", "--out", str(out), "--set", "log_every=1", "--set", "eval=false")
    again = run("pretrain", "--max-steps", "3", "--out", str(out), "--set", "eval=false")
    assert first.returncode == 0 and again.returncode == 0, again.stderr
    line = again.stdout.strip().splitlines()[-1]
    assert "NaN" not in line
    a, b = json.loads(first.stdout.strip().splitlines()[-1]), json.loads(line)
    assert b["steps"] == 3 and b["final_loss"] == a["final_loss"]


def _commands():
    """Each sub-command bound to a library function: (name, its parser, its Command)."""
    from fastclr.cli import Command, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, p, p.get_default("func")) for name, p in sub.choices.items()
            if isinstance(p.get_default("func"), Command)]  # fmt: skip


UNUSED_FLAGS = {"embed": {"seed"}}  # accepted like every evaluation command's, but nothing is drawn at random


@pytest.mark.parametrize("name", [n for n, _, _ in _commands()])
def test_every_flag_reaches_a_parameter_of_the_library_function(name):
    """A flag whose name matches no parameter would be dropped without a word: each one must arrive, and each
    parameter without a default must come from a flag that is required or has a default of its own."""
    import inspect

    from fastclr.cli import target

    _, parser, command = next(c for c in _commands() if c[0] == name)
    params = inspect.signature(target(command.name)).parameters
    to_param = {flag: param for param, flag in command.renamed.items()}
    dests = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert not {to_param.get(d, d) for d in dests} - set(params) - UNUSED_FLAGS.get(name, set())
    for param, p in params.items():
        if p.default is inspect.Parameter.empty:
            flag = dests[command.renamed.get(param, param)]
            assert flag.required or not flag.option_strings or flag.default is not argparse.SUPPRESS, param


def test_flags_left_out_take_the_library_defaults(monkeypatch, capsys):
    """No default is written twice: a flag not given is not passed, and --help shows the library's default."""
    import inspect

    import fastclr.cli as cli_module
    from fastclr.eval.evaluate import run_knn

    seen = {}

    def fake(**kw):
        seen.update(kw)
        return {"ok": 1}

    fake.__signature__ = inspect.signature(run_knn)  # the real parameters, recorded instead of run
    monkeypatch.setattr(cli_module, "target", lambda name: fake)
    assert cli_module.main(["knn", "--checkpoint", "C", "--k", "5,1"]) == 0
    assert seen == {"checkpoint": "C", "data": None, "ks": [1, 5]}  # temperature, batch size...: the library's
    monkeypatch.undo()
    with pytest.raises(SystemExit):
        cli_module.main(["knn", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: 20,200)" in shown and f"(default: {run_knn.__kwdefaults__['temperature']})" in shown
    assert "DINO" in shown  # the description is the library function's docstring
