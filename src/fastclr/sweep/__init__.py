"""Hyper-parameter search over SimCLR's config (``fastclr sweep``): see :mod:`fastclr.sweep.run`."""

from fastclr.sweep.run import SweepSpec, sweep

__all__ = ["SweepSpec", "sweep"]
