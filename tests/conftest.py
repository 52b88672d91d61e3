import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.xz"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def cifar_jpegs(tmp_path_factory):
    """The CIFAR-10 JPEG tree from ../shared/data, unpacked once per session (skips where absent)."""
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"CIFAR-10 JPEG archive not found at {CIFAR_ARCHIVE} (a user's checkout has no ../shared)")
    import tarfile

    dest = tmp_path_factory.mktemp("cifar10")
    with tarfile.open(CIFAR_ARCHIVE) as tar:
        tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)
    roots = [p for p in dest.rglob("train") if p.is_dir()]
    return roots[0].parent
