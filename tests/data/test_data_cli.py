"""The data commands as a user runs them: a folder with bad files, the bad-file limit, prepare."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from fastclr.cli import main
from makeimages import write_bad, write_good


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "fastclr", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


def last_json(r):
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_pretrain_on_folder_with_bad_files(tmp_path):
    write_good(tmp_path / "imgs", 150, size=12)
    reasons = write_bad(tmp_path / "imgs")
    out = tmp_path / "run"
    r = run(
        "pretrain",
        "--data",
        str(tmp_path / "imgs"),
        "--max-steps",
        "2",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--set",
        "max_bad_fraction=0.1",
        "--set",
        "workers=0",
    )
    assert r.returncode == 0, r.stderr
    assert last_json(r)["skipped"] == len(reasons) and last_json(r)["steps"] == 2
    listed = {
        line.split("\t")[0].rsplit("/", 1)[-1]: line.split("\t")[1]
        for line in (out / "skipped.txt").read_text().splitlines()[1:]
    }
    assert set(listed) == set(reasons) and all(why in listed[n] for n, why in reasons.items())


def test_too_many_bad_files_exit_2_before_training(tmp_path):
    write_good(tmp_path / "imgs", 30, size=12)
    reasons = write_bad(tmp_path / "imgs")
    out = tmp_path / "run"
    r = run("pretrain", "--data", str(tmp_path / "imgs"), "--out", str(out), "--set", "workers=0")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("fastclr: error:")]
    assert len(errors) == 1 and "max_bad_fraction=0.01" in errors[0] and "skipped.txt" in errors[0]
    assert len((out / "skipped.txt").read_text().splitlines()) == 1 + len(reasons)
    assert not (out / "checkpoints" / "last.pt").exists()  # stopped before training


def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_good(tmp_path / "d" / "train" / "cat", 2)
    write_good(tmp_path / "d" / "test" / "dog", 2)
    (tmp_path / "l.csv").write_text("missing.jpg\n")
    for data, needle in (
        (str(tmp_path / "empty"), "no images found"),
        (str(tmp_path / "d"), "are not among the train split's"),
        (str(tmp_path / "l.csv"), "listed files do not exist"),
        ("cifar11", "not a known data set"),
        (f"cifar10:{tmp_path / 'none'}", "--download"),
    ):
        code = main(["pretrain", "--data", data, "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and needle in err, err


@pytest.mark.slow
def test_prepare_then_pretrain_on_the_cache(tmp_path):
    for c in ("a", "b"):
        write_good(tmp_path / "d" / "train" / c, 40, size=12, start=0 if c == "a" else 500)
        write_good(tmp_path / "d" / "test" / c, 10, size=12, start=900 if c == "a" else 950)
    r = run("prepare", str(tmp_path / "d"), "--size", "16", "--out", str(tmp_path / "cache"), "--workers", "0")
    assert r.returncode == 0, r.stderr
    res = last_json(r)
    assert (
        res["count"] == 100 and res["skipped"] == 0 and res["size"] == 16 and res["splits"] == {"train": 80, "test": 20}
    )
    r = run(
        "pretrain",
        "--data",
        f"prepared:{tmp_path / 'cache'}",
        "--max-steps",
        "2",
        "--batch-size",
        "32",
        "--out",
        str(tmp_path / "run"),
        "--set",
        "eval=false",
    )
    assert r.returncode == 0, r.stderr
    assert last_json(r)["steps"] == 2 and last_json(r)["skipped"] == 0
