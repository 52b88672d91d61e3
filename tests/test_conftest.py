"""The test run's own checks (tests/skipkit.py, loaded by conftest.py): a skip that blames an installed
module or extra fails the run, a skip for a missing one or for other reasons (no GPU) stays a skip, and
the summary counts the skips."""

from __future__ import annotations

import re
import sys

import pytest

import skipkit
from conftest import ROOT

pytest_plugins = ["pytester"]

BROKEN = """raise ModuleNotFoundError("No module named 'a_dependency_it_lacks'", name="a_dependency_it_lacks")\n"""


def test_the_extras_table_is_pyprojects():
    """Every extra of pyproject.toml is in skipkit.EXTRAS with an import name for each of its distributions."""
    if sys.version_info < (3, 11):
        pytest.skip("reads pyproject.toml with tomllib (Python 3.11+)")
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    own = set(extras) - {"all", "dev"}  # those two only gather the others (and the linters)
    assert own == set(skipkit.EXTRAS)
    for name in own:
        dists = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].replace("-", "_").lower() for r in extras[name]}
        modules = {skipkit.IMPORT_NAMES.get(d, d) for d in dists}  # faiss-cpu imports as faiss
        assert modules == set(skipkit.EXTRAS[name]), name


def test_blamed_modules_read_importorskip_and_install_hints():
    assert skipkit.blamed_modules("could not import 'optuna': No module named 'optuna'") == ["optuna"]
    assert skipkit.blamed_modules("module 'timm' has __version__ '0.1', required is: '0.9'") == ["timm"]
    hint = "the text tests need Transformers (pip install 'fastclr[text]')"
    assert skipkit.blamed_modules(hint) == list(skipkit.EXTRAS["text"])
    assert skipkit.blamed_modules("needs a CUDA GPU") == []
    assert skipkit.broken_extra("could not import 'json': it broke") is not None  # installed: a failure
    assert skipkit.broken_extra("could not import 'no_such_module_xyz': No module named 'no_such_module_xyz'") is None


@pytest.fixture
def suite(pytester, monkeypatch):
    """A scratch test suite with the plugin, an importable-but-broken package and a fake extra whose module
    (json) is installed."""
    monkeypatch.setitem(skipkit.EXTRAS, "fakeextra", ("json",))
    pytester.makeconftest('pytest_plugins = ["skipkit"]\n')
    pytester.syspathinsert()
    pkg = pytester.mkpydir("brokenpkg")
    (pkg / "__init__.py").write_text(BROKEN)
    return pytester


def test_skips_of_missing_modules_and_gpus_stay_skips(suite):
    suite.makepyfile(
        test_fine="""
        import pytest

        def test_missing():
            pytest.importorskip("no_such_module_xyz")

        def test_missing_extra():
            pytest.skip("pip install 'fastclr[nosuchextra]'")

        @pytest.mark.skip(reason="needs a CUDA GPU")
        def test_gpu():
            pass

        def test_runs():
            assert True
        """
    )
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=3)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*skipped: 3*", "*1  needs a CUDA GPU*"])
    assert "installed extra" not in result.stdout.str()


def test_a_skip_of_an_installed_but_broken_module_fails(suite):
    suite.makepyfile(
        test_broken="""
        import pytest

        def test_broken_import():
            pytest.importorskip("brokenpkg")

        @pytest.fixture
        def needs_extra():
            pytest.skip("this needs pip install 'fastclr[fakeextra]'")

        def test_installed_extra(needs_extra):
            pass

        def test_gpu():
            pytest.skip("needs a CUDA GPU")
        """
    )
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, errors=1, skipped=1)  # the fixture's skip fails at setup: an error
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "skipped although brokenpkg is installed" in out and "skipped although json is installed" in out
    result.stdout.fnmatch_lines(["*skipped: 1*", "*2 skip(s) of an installed extra: the run fails*"])


def test_a_module_skipped_at_collection_for_a_broken_module_fails_the_session(suite):
    suite.makepyfile(
        test_module_level="""
        import pytest

        pytest.importorskip("brokenpkg")

        def test_never_runs():
            pass
        """,
        test_other="""
        def test_passes():
            pass
        """,
    )
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)  # the other module still runs
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped: 1*", "*test_module_level.py: skipped although brokenpkg is installed*"])
