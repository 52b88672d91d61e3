"""Features stay on the device they were computed on; evaluation may take every core for a moment."""

from __future__ import annotations

import torch

from fastclr.eval.features import all_threads, cores, extract


def test_features_stay_on_the_compute_device():
    """Meta tensors stand in for a GPU: nothing is copied back to the CPU."""
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    layer = torch.nn.Conv2d(3, 4, 8).to("meta")
    h = extract(lambda x: layer(x).flatten(1), images, 8, torch.device("meta"), batch_size=4)
    assert h.device.type == "meta" and h.shape == (10, 4) and h.dtype == torch.float32
    cpu = extract(lambda x: x.mean((2, 3)), images, 8, torch.device("cpu"), batch_size=4)
    assert cpu.device.type == "cpu" and cpu.shape == (10, 3)


def test_all_threads_uses_every_core_then_restores():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what torchrun's OMP_NUM_THREADS=1 leaves
    try:
        with all_threads() as n:
            assert n == torch.get_num_threads() == max(1, cores())
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
