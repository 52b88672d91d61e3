"""Run a function on k local processes joined by gloo, as torchrun would (for the distributed tests)."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    from fastclr.train import dist

    dist.setup(torch.device("cpu"))
    try:
        fn(*args)
    finally:
        dist.cleanup()


def run_ranks(world: int, fn, *args) -> None:
    """Call ``fn(*args)`` on ``world`` spawned processes inside one gloo group; raises if any fails."""
    mp.spawn(_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)
