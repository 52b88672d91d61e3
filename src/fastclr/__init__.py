"""fastclr: SimCLR (v1 and v2), faithful and fast.

The losses are plain functions: ``fastclr.nt_xent(z1, z2, temperature=0.5)``.
"""

from fastclr.method.lars import LARS
from fastclr.method.loss import margin_triplet, nt_logistic, nt_xent
from fastclr.method.model import SimCLR

__version__ = "0.1.0"
__all__ = ["nt_xent", "nt_logistic", "margin_triplet", "LARS", "SimCLR", "__version__"]
