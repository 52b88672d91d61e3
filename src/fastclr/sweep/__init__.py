"""Hyper-parameter search over SimCLR's config (``fastclr sweep``): see :mod:`fastclr.sweep.run`."""
