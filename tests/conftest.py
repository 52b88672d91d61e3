import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.xz"

torch.set_num_threads(min(2, os.cpu_count() or 1))

pytest_plugins = ["skipkit"]  # a skip of an installed extra fails the run; the summary counts the skips


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip on machines without a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (bit-exact comparisons use the same kernels; no fight over the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory):
    """A small class-balanced subset of the CIFAR-10 JPEGs from ../shared/data: train/ and test/ folders
    with 30 and 10 images per class (skips where the archive is absent, as in a user's checkout)."""
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"CIFAR-10 JPEG archive not found at {CIFAR_ARCHIVE} (a user's checkout has no ../shared)")
    import tarfile
    from collections import Counter

    dest = tmp_path_factory.mktemp("cifar10_subset")
    want = {"train": 30, "test": 10}
    classes = 10
    seen: Counter = Counter()
    with tarfile.open(CIFAR_ARCHIVE, "r|xz") as tar:  # a stream: members in archive order, no index kept
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] not in want:
                continue
            split, cls = parts[-3], parts[-2]
            if seen[split, cls] >= want[split]:
                continue
            seen[split, cls] += 1
            target = dest / split / cls / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            if sum(seen.values()) == classes * sum(want.values()):
                break  # every class of both splits is full: the rest of the archive is not decompressed
    assert sorted(seen.values()) == sorted(n for n in want.values() for _ in range(classes)), seen
    return dest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Listing caches and scratch files of the tests go to a temporary folder, not ~/.cache."""
    os.environ["FASTCLR_CACHE"] = str(tmp_path_factory.mktemp("fastclr_cache"))
    yield


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> str:
    """``hf:FOLDER`` of a tiny random BertModel with its fast tokenizer (tests/textkit.py)."""
    pytest.importorskip("transformers", reason="the text tests need Transformers (pip install 'fastclr[text]')")
    from textkit import tiny_bert

    return "hf:" + str(tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="session")
def tokenizer(tiny_arch):
    """The fast tokenizer of ``tiny_arch``."""
    from fastclr.method.text_encoder import load_tokenizer

    return load_tokenizer(tiny_arch)
