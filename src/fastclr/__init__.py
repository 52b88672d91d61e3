"""fastclr: SimCLR (v1 and v2), faithful and fast, as a library.

Load a trained encoder and embed images::

    import fastclr
    encoder = fastclr.load_encoder("runs/digits/checkpoints/last.pt")
    h, ids = fastclr.embed(encoder, ["a.png", "b.jpg"])      # float32 [2, d], the file paths
    index = fastclr.Index.build(encoder, "photos/")          # similarity search (pip install 'fastclr[search]')

Build your own loop from the parts: :class:`Augment` (the batched keyed views), :class:`SimCLR`
(encoder f and head g), :func:`nt_xent`, :class:`LARS`, :func:`lr_at`; or run the whole recipe
with :func:`pretrain` (the ``fastclr pretrain`` command). The method: Chen et al. 2020, "A Simple
Framework for Contrastive Learning of Visual Representations" (docs/ and the README).
"""

__version__ = "0.1.0"

from fastclr.api import (  # noqa: E402 - the version is set before any submodule reads it
    Augment,
    Config,
    Encoder,
    Index,
    embed,
    knn_eval,
    linear_eval,
    load_config,
    load_encoder,
    load_model,
    pretrain,
)
from fastclr.data.preprocess import Preprocess  # noqa: E402
from fastclr.method.lars import LARS, lars_param_groups  # noqa: E402
from fastclr.method.loss import margin_triplet, nt_logistic, nt_xent  # noqa: E402
from fastclr.method.model import SimCLR  # noqa: E402
from fastclr.method.schedule import lr_at  # noqa: E402

__all__ = [
    "Augment",
    "Config",
    "Encoder",
    "Index",
    "LARS",
    "Preprocess",
    "SimCLR",
    "embed",
    "knn_eval",
    "lars_param_groups",
    "linear_eval",
    "load_config",
    "load_encoder",
    "load_model",
    "lr_at",
    "margin_triplet",
    "nt_logistic",
    "nt_xent",
    "pretrain",
    "__version__",
]
