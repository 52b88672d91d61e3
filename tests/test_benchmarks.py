"""Every benchmark script imports what it uses from the package as it is now (a rename that leaves a benchmark
behind fails here, not on the day its figures are wanted) and answers --help."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import ROOT

SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if "__main__" in p.read_text())  # helpers are not run


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_imports_and_answers_help(script, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(script.parent))  # as `python benchmarks/NAME.py` runs it: its helpers importable
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the imports run; main() does not
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as e:
        module.main()
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
