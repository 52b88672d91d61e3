"""Every row of docs/errors.md: a bad input exits 2 with one line naming what was wrong, no traceback.

Each case builds its input (files, environment) and returns the command line; the CLI runs in
this process (``fastclr.cli.main``) so a case can also fake the environment (free disk space).
Run ``python tests/test_errors.py`` to print the table of docs/errors.md from the real messages.
"""

from __future__ import annotations

import pickle
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fastclr import cli
from fastclr.train import checkpoint

TINY = [
    "--max-steps",
    "1",
    "--set",
    "eval=false",
    "--set",
    "image_size=8",
    "--set",
    "max_images=64",
    "--batch-size",
    "8",
]


@dataclass
class Case:
    what: str  # the bad input, as docs/errors.md names it
    build: Callable  # (tmp_path, monkeypatch) -> argv
    needle: str  # must appear in the one-line message


def pretrain(*args: str) -> Callable:
    return lambda tmp, mp: ["pretrain", "--out", str(tmp / "run"), *args]


def _yaml(text: str) -> Callable:
    def build(tmp, mp):
        (tmp / "c.yaml").write_text(text)
        return ["pretrain", "--out", str(tmp / "run"), "--config", str(tmp / "c.yaml")]

    return build


def _empty_folder(tmp, mp):
    (tmp / "empty").mkdir()
    return ["pretrain", "--out", str(tmp / "run"), "--data", str(tmp / "empty"), *TINY]


def _out_under_a_file(tmp, mp):
    (tmp / "file.txt").write_text("x")
    return ["pretrain", "--out", str(tmp / "file.txt" / "run"), *TINY]


def _full_disk(tmp, mp):
    from fastclr.train import preflight

    mp.setattr(preflight.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    return ["pretrain", "--out", str(tmp / "run"), *TINY]


def _world(size: str, batch: str) -> Callable:
    def build(tmp, mp):
        mp.setenv("WORLD_SIZE", size)
        return ["pretrain", "--out", str(tmp / "run"), "--batch-size", batch]

    return build


def _run_with_checkpoint(tmp: Path, write: Callable[[Path], None]) -> list[str]:
    ckpts = tmp / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    write(ckpts)
    return ["pretrain", "--out", str(tmp / "run"), *TINY]


class _CreatesFile:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _malicious(tmp, mp):
    return _run_with_checkpoint(
        tmp, lambda d: torch.save({"format": "fastclr", "x": _CreatesFile(str(tmp / "pwned"))}, d / "last.pt")
    )


def _all_truncated(tmp, mp):
    def write(d):
        checkpoint.save({"format": "fastclr", "step": 3, "model": {"w": torch.zeros(1000)}}, d / "step-00000003.pt")
        data = (d / "step-00000003.pt").read_bytes()
        (d / "step-00000003.pt").write_bytes(data[: len(data) // 2])
        (d / "last.pt").write_bytes(b"")

    return _run_with_checkpoint(tmp, write)


def _foreign_file(tmp, mp):
    return _run_with_checkpoint(tmp, lambda d: torch.save({"state_dict": {"w": torch.zeros(2)}}, d / "last.pt"))


def _plain_pickle(tmp, mp):
    return _run_with_checkpoint(
        tmp, lambda d: (d / "last.pt").write_bytes(pickle.dumps({"format": "fastclr", "step": 1}, protocol=4))
    )


def _other_arch(tmp, mp):
    return _run_with_checkpoint(
        tmp,
        lambda d: checkpoint.save(
            {"format": "fastclr", "step": 5, "config": {"arch": "resnet18"}, "model": {}}, d / "last.pt"
        ),
    )


def _report_without_matplotlib(tmp, mp):
    (tmp / "run").mkdir()
    (tmp / "run" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    mp.setitem(sys.modules, "matplotlib", None)
    return ["report", str(tmp / "run")]


def _report_no_metrics(tmp, mp):
    (tmp / "run").mkdir()
    return ["report", str(tmp / "run")]


CASES = {
    "unknown flag": Case("`--bogus`", pretrain("--bogus"), "unrecognized arguments: --bogus"),
    "flag type": Case("`--epochs ten`", pretrain("--epochs", "ten"), "invalid int value: 'ten'"),
    "unknown command": Case("`fastclr frobnicate`", lambda t, m: ["frobnicate"], "invalid choice: 'frobnicate'"),
    "unknown key": Case(
        "`--set temprature=0.1`", pretrain("--set", "temprature=0.1"), "unknown config key 'temprature'"
    ),
    "set syntax": Case("`--set temperature` (no `=`)", pretrain("--set", "temperature"), "expected key=value"),
    "int type": Case("`--set epochs=2.5`", pretrain("--set", "epochs=2.5"), "epochs=2.5 is not a valid int"),
    "temperature 0": Case(
        "`--set temperature=0`", pretrain("--set", "temperature=0"), "temperature=0.0 is out of range: must be > 0"
    ),
    "negative lr": Case("`--set lr=-0.1`", pretrain("--set", "lr=-0.1"), "lr=-0.1 is out of range: must be > 0"),
    "nan lr": Case("`--set lr=nan`", pretrain("--set", "lr=nan"), "lr=nan is not a finite number: must be > 0"),
    "batch 1": Case("`--batch-size 1`", pretrain("--batch-size", "1"), "batch_size=1 is out of range: must be >= 2"),
    "one view": Case("`--set views=1`", pretrain("--set", "views=1"), "views=1 is out of range: must be >= 2"),
    "precision": Case(
        "`--set precision=fp16`",
        pretrain("--set", "precision=fp16"),
        "precision='fp16' is out of range: must be auto, bf16 or fp32",
    ),
    "negative steps": Case(
        "`--max-steps -5`", pretrain("--max-steps", "-5"), "max_steps=-5 is out of range: must be >= 0"
    ),
    "checkpoint_every": Case(
        "`--set checkpoint_every=0`",
        pretrain("--set", "checkpoint_every=0"),
        "checkpoint_every=0 is out of range: must be >= 1",
    ),
    "no preset": Case("`--config nosuchpreset`", pretrain("--config", "nosuchpreset"), "is neither a preset"),
    "bad yaml": Case("`--config c.yaml` that is not YAML", _yaml("lr: [0.1\n"), "not valid YAML"),
    "yaml list": Case("`--config c.yaml` holding a list", _yaml("- lr\n- 0.1\n"), "expected a mapping of key: value"),
    "no data": Case("`--data /nonexistent/images`", pretrain("--data", "/nonexistent/images"), "/nonexistent/images"),
    "empty data": Case("`--data EMPTY_FOLDER`", _empty_folder, "no images found"),
    "crop too large": Case(
        "`--set image_size=64` on 8x8 digits",
        pretrain("--set", "image_size=64", "--set", "eval=false"),
        "image_size=64 is too large for the 8x8 images of digits: must be 8 to 32",
    ),
    "crop too small": Case(
        "`--set min_scale=0.01` on 8x8 digits",
        pretrain("--set", "min_scale=0.01", "--set", "eval=false"),
        "min_scale=0.01 crops 0.8 px from the 8x8 images of digits: must be in [0.0625, 1]",
    ),
    "arch too small": Case(
        "`--arch vgg11_bn` on 8x8 images",
        pretrain("--arch", "vgg11_bn", "--set", "cifar_stem=false", *TINY),
        "--arch vgg11_bn cannot take 8x8 images (image_size=8): set image_size=32 or larger",
    ),
    "batch > data": Case(
        "`--batch-size 5000` on 1,437 images",
        pretrain("--batch-size", "5000"),
        "batch_size=5000 is larger than the 1437 training images of digits: must be 2 to 1437",
    ),
    "out under file": Case("`--out file.txt/run` (a file in the path)", _out_under_a_file, "cannot be written"),
    "full disk": Case("an output folder with 1 MiB free", _full_disk, "has 1.0 MiB free: a checkpoint needs"),
    "world split": Case(
        "`WORLD_SIZE=3` with `--batch-size 8`",
        _world("3", "8"),
        "batch_size=8 does not divide over 3 processes: must be a multiple of 3",
    ),
    "world tiny": Case(
        "`WORLD_SIZE=8` with `--batch-size 8`",
        _world("8", "8"),
        "batch_size=8 gives 1 image per process over 8 processes: must be >= 16",
    ),
    "malicious ckpt": Case(
        "`last.pt` whose pickle would create a file", _malicious, "refused, it would import io.open when unpickled"
    ),
    "plain pickle ckpt": Case("`last.pt` written by `pickle.dumps`", _plain_pickle, "refused"),
    "truncated ckpts": Case(
        "every checkpoint truncated or empty",
        _all_truncated,
        "no loadable checkpoint, every file is truncated or corrupt",
    ),
    "foreign ckpt": Case("`last.pt` from another program", _foreign_file, "not a fastclr checkpoint"),
    "other arch": Case(
        "`last.pt` of a resnet18 run, this run resnet_micro",
        _other_arch,
        "arch='resnet_micro' differs from 'resnet18' in checkpoint",
    ),
    "report missing": Case(
        "`fastclr report /nonexistent/run`", lambda t, m: ["report", "/nonexistent/run"], "/nonexistent/run"
    ),
    "report empty": Case("`fastclr report RUN` with no metrics.jsonl", _report_no_metrics, "metrics.jsonl"),
    "report no mpl": Case(
        "`fastclr report RUN` without matplotlib", _report_without_matplotlib, "pip install 'fastclr[report]'"
    ),
    "augment data": Case(
        "`fastclr show-augment --data /nonexistent`",
        lambda t, m: ["show-augment", "--data", "/nonexistent", "--out", str(t / "a.png")],
        "/nonexistent",
    ),
    "augment out": Case(
        "`fastclr show-augment --out views.jpg`",
        lambda t, m: ["show-augment", "--out", str(t / "views.jpg")],
        "must end in .png",
    ),
}


def one_line_error(argv: list[str], capsys) -> str:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fastclr: error: ") or lines[0].startswith("fastclr: ")
    return lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(name, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    line = one_line_error(case.build(tmp_path, monkeypatch), capsys)
    assert case.needle in line
    assert not (tmp_path / "pwned").exists()  # the malicious checkpoint's code never ran
    row = table_row(case, line, str(tmp_path))
    assert row in DOC, f"docs/errors.md does not show the live message (python tests/test_errors.py):\n{row}"


DOC = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()


def table_row(case: Case, message: str, tmp: str) -> str:
    """docs/errors.md's row for ``case``: the message with the temporary folder as TMP."""
    shown = message.replace(tmp, "TMP").replace("|", "\\|")
    return f"| {case.what} | `{shown}` |"


def test_the_docs_table_has_no_other_rows():
    rows = [
        line for line in DOC.splitlines() if line.startswith("| ") and not line.startswith(("| bad input", "| ---"))
    ]
    assert len(rows) == len(CASES), "docs/errors.md has rows no test checks"


if __name__ == "__main__":  # print docs/errors.md's table from the real messages
    import contextlib
    import io
    import tempfile

    print("| bad input | message (stderr, exit 2) |\n| --- | --- |")
    for case in CASES.values():
        with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
            mp.delenv("WORLD_SIZE", raising=False)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                cli.main(case.build(Path(d), mp))
            lines = err.getvalue().strip().splitlines()
            print(table_row(case, lines[-1] if lines else "", d))
