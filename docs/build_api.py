"""Build the API reference (HTML, from the docstrings) with pdoc; exit 1 on any warning.

    python docs/build_api.py [OUT]          # default OUT: build/api (not committed); open OUT/fastclr.html

The reference documents the names ``fastclr.__all__`` lists (the page ``fastclr.html``) and the
``fastclr.api`` modules that define them. pdoc warns about what it cannot render (a broken
docstring, an unresolvable annotation, a name in ``__all__`` that does not exist); any warning
fails the build, so the reference never goes stale silently. ``.ci/run`` runs this before the tests.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

MODULES = ["fastclr", "fastclr.api", "fastclr.api.models", "fastclr.api.embedding", "fastclr.api.augmentation"]
MODULES += ["fastclr.api.runs", "fastclr.api.index", "fastclr.data.preprocess"]


def build(out: Path, modules: list[str] = MODULES) -> list[str]:
    """Render ``modules`` into ``out``; returns the warnings pdoc raised (empty when the build is clean)."""
    try:
        import pdoc
    except ImportError:
        sys.exit("docs/build_api.py needs pdoc: pip install 'fastclr[docs]'")
    pdoc.render.configure(docformat="google", search=False, show_source=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastclr  # noqa: F401 - imported before recording would hide import-time warnings of other packages

        caught.clear()
        pdoc.pdoc(*modules, output_directory=out)
    return [f"{w.category.__name__}: {w.message}" for w in caught]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "build/api")
    problems = build(target)
    for p in problems:
        print(f"docs/build_api.py: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"API reference: {target / 'fastclr.html'}")
