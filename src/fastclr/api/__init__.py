"""The Python API: load, embed, search, augment, pretrain and evaluate from code (re-exported as ``fastclr.*``).

Each name here is a thin, typed layer over the library below it (:mod:`fastclr.method`,
:mod:`fastclr.data`, :mod:`fastclr.train`, :mod:`fastclr.eval`, :mod:`fastclr.pipeline`), the same
code the ``fastclr`` commands run, so a result from Python equals the command's.
"""

from fastclr.api.augmentation import Augment
from fastclr.api.embedding import embed
from fastclr.api.index import Index
from fastclr.api.models import Encoder, load_encoder, load_model
from fastclr.api.runs import Config, knn_eval, linear_eval, load_config, pretrain

__all__ = [
    "Augment",
    "Config",
    "Encoder",
    "Index",
    "embed",
    "knn_eval",
    "linear_eval",
    "load_config",
    "load_encoder",
    "load_model",
    "pretrain",
]
