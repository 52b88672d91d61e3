"""The data tiers: the memory-mapped loader equals the in-memory one, a worker's death."""

import numpy as np
import pytest
import torch

from fastclr.data.loaders import tiers
from fastclr.data.loaders.base import RawImages
from fastclr.data.loaders.mapped import MappedLoader
from fastclr.data.loaders.memory import InMemoryLoader
from fastclr.data.loaders.workers import death_cause, guarded


@pytest.mark.parametrize("workers", [0, 2])
def test_mapped_loader_yields_the_in_memory_batches(tmp_path, workers):
    images = torch.randint(0, 256, (70, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "train.images.u8"
    path.write_bytes(images.numpy().tobytes())
    ref = InMemoryLoader(images, 16, 3, torch.device("cpu"), rank=1, world_size=2)
    mapped = MappedLoader(path, tuple(images.shape), 16, 3, torch.device("cpu"), workers=workers, rank=1, world_size=2)
    assert len(mapped) == len(ref) == 4
    for epoch, start in ((0, 0), (1, 2)):
        got, want = list(mapped.epoch(epoch, start)), list(ref.epoch(epoch, start))
        assert len(got) == len(want) == 4 - start
        for a, b in zip(got, want, strict=True):
            assert type(a) is type(b) is RawImages  # drawn on the device exactly as in-memory images are
            assert torch.equal(a.index, b.index) and torch.equal(a.rows, b.rows)


@pytest.mark.parametrize(
    "message,cause",
    [
        ("DataLoader worker (pid 123) is killed by signal: Killed. ", "out-of-memory killer"),
        ("DataLoader worker (pid 9) is killed by signal: Segmentation fault. ", "signal Segmentation fault"),
        ("DataLoader worker (pid(s) 4, 5) exited unexpectedly", "exited unexpectedly"),
        ("CUDA error: out of memory", None),
    ],
)
def test_worker_death_cause(message, cause):
    found = death_cause(message)
    assert found is None if cause is None else cause in found


KILLED_WORKER = """
import os, signal, sys, torch
from fastclr.data.loaders.mapped import MappedLoader
from fastclr.errors import UserError
path = sys.argv[1]
torch.zeros(64, 3, 4, 4, dtype=torch.uint8).numpy().tofile(path)
loader = MappedLoader(path, (64, 3, 4, 4), 8, 0, torch.device("cpu"), workers=1, resume="fastclr pretrain --out R")
batches = loader.epoch(0)
next(batches)
for w in loader.loader._iterator._workers:  # the OOM killer's signal
    os.kill(w.pid, signal.SIGKILL)
try:
    list(batches)
except UserError as e:
    print(e, flush=True)

"""


def test_a_killed_worker_ends_with_one_line_and_the_resume_command(tmp_path):
    """In a child process: torch's SIGCHLD handler would otherwise fire inside whatever test runs next."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", KILLED_WORKER, str(tmp_path / "x.u8")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 1, done.stderr[-2000:]
    assert "out-of-memory killer" in lines[0] and "resume with: fastclr pretrain --out R" in lines[0]


def test_other_errors_pass_through():
    def boom():
        yield 1
        raise RuntimeError("not a worker")

    with pytest.raises(RuntimeError, match="not a worker"):
        list(guarded(boom(), "x"))


def test_tier_choice_and_budget():
    assert tiers.folder_tier(1000, 32, 32, tiers.decoded_bytes(1000, 32)) == tiers.MEMORY
    assert tiers.folder_tier(1001, 32, 32, tiers.decoded_bytes(1000, 32)) == tiers.FILES
    assert tiers.folder_tier(10, 32, 160, 10**12) == tiers.FILES  # larger than S: crops from full resolution
    assert tiers.budget(2.0) == 2 * tiers.GB and 0 < tiers.budget() <= tiers.ram_bytes()
    assert "tier mapped" in tiers.describe(tiers.MAPPED, 10, 32, 10**9, 2)
    assert np.isclose(tiers.decoded_bytes(2, 10), 600)
