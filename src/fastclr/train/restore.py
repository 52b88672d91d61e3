"""Where models come from: built from a config, or rebuilt from a checkpoint for the evaluation commands.

Every command after pretraining (``knn``, ``linear``, ``finetune``, ``distill``, ``embed``,
``export``) starts here: :func:`open_checkpoint` reads a checkpoint with
:func:`fastclr.train.checkpoint.load` (``weights_only=True``: a crafted file cannot run code), rebuilds
:class:`fastclr.method.model.SimCLR` from the checkpoint's own config and loads its weights with every
key checked. A fine-tuned or distilled checkpoint (written by :mod:`fastclr.eval.finetune` /
:mod:`fastclr.eval.distill`) holds the same ``model`` entry plus a ``classifier``, so everything that
reads an encoder reads those too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from fastclr import config
from fastclr.data import datasets, evalset
from fastclr.data.loaders import tiers
from fastclr.data.sets import DataSplits, ImageSet
from fastclr.errors import UserError
from fastclr.method.encoder import freeze_patch_embedding
from fastclr.method.model import SimCLR
from fastclr.train import checkpoint, dist
from fastclr.train.precision import pick_device, resolve


@dataclass
class Restored:
    """A model with the config that built it and the raw checkpoint dict (empty for a fresh model)."""

    model: SimCLR
    cfg: config.Config
    state: dict
    source: str  # the checkpoint path, or "random-init"


def build_model(cfg: config.Config) -> SimCLR:
    """A freshly initialised SimCLR network as ``cfg`` describes it (an ``hf:`` arch: a text encoder), its
    ViT patch projection frozen when ``freeze_patch_embed``; the one place a config becomes a model."""
    encoder = None
    if config.is_text(cfg):
        from fastclr.method.text_encoder import build_text_encoder

        encoder = build_text_encoder(
            cfg.arch, cfg.pooling, cfg.hf_random_init, config.arch_kwargs(cfg), cfg.freeze_word_embed
        )
    model = SimCLR(
        cfg.arch,
        cfg.cifar_stem,
        cfg.head_layers,
        cfg.head_hidden or None,
        cfg.proj_dim,
        config.arch_kwargs(cfg),
        encoder,
    )
    if cfg.freeze_patch_embed:
        freeze_patch_embedding(model.encoder)
    return model


def open_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Restored:
    """Load a fastclr checkpoint into a SimCLR network; UserError (one line) if it is not one of ours."""
    state = checkpoint.load(path, map_location="cpu")
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("model"), dict):
        raise UserError(
            f"checkpoint {path}: has no 'config' and 'model' entries; pass OUT/checkpoints/last.pt of a fastclr run"
        )
    cfg = config.from_dict(state["config"])
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise UserError(
            f"checkpoint {path}: weights do not match arch={cfg.arch} (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )
    return Restored(model.to(device), cfg, state, str(path))


def random_init(cfg: config.Config, seed: int, device: torch.device | str = "cpu") -> Restored:
    """The same architecture with random weights: the baseline every protocol is compared to."""
    if config.is_text(cfg):  # a Transformer's random draw, not its file's weights
        cfg = dataclasses.replace(cfg, hf_random_init=True)
    torch.manual_seed(seed)
    return Restored(build_model(cfg).to(device), cfg, {}, "random-init")


def resolve_model(path: str | None, random: bool, seed: int, device: torch.device, init: str | None = None) -> Restored:
    """The model a command works on: the checkpoint's, or (``random``) its architecture re-initialised.

    ``init`` then overwrites the encoder with weights from a torchvision/timm/safetensors file.
    """
    if path is None:
        raise UserError("--checkpoint is required: pass OUT/checkpoints/last.pt of a fastclr pretrain run")
    restored = open_checkpoint(path, device)
    if random:
        restored = random_init(restored.cfg, seed, device)
    if init:
        from fastclr.train.weights import init_encoder

        init_encoder(restored.model.encoder, init)
        restored.source = f"{restored.source}+init:{init}"
    return restored


def open_for_command(
    path: str | None,
    device: str | None,
    random: bool = False,
    seed: int = 0,
    init: str | None = None,
    join: bool = False,
) -> tuple[Restored, torch.device, str]:
    """What every evaluation command starts with: the model on its device, and the precision to use.

    ``join`` first joins torchrun's process group (``fastclr embed``): each rank then takes GPU
    LOCAL_RANK before anything touches CUDA, instead of every rank opening a context on GPU 0.
    """
    restored = resolve_model(path, random, seed, torch.device("cpu"), init)
    dev = pick_device(device or restored.cfg.device)
    if join:
        dev = dist.setup(dev)
    precision = resolve(restored.cfg.precision, dev)  # may query the GPU: after the group chose it
    restored.model.to(dev)
    return restored, dev, precision


def in_memory(images: object, what: str) -> ImageSet:
    """The split as decoded images (``load_data`` gives them); UserError for anything else."""
    if not isinstance(images, ImageSet):
        raise UserError(f"{what}: expected decoded images; load the data with restore.load_data")
    return images


def device_and_precision(cfg: config.Config, device: str | None) -> tuple[torch.device, str]:
    """The device a command runs on (flag, else the checkpoint's setting) and its precision."""
    dev = pick_device(device or cfg.device)
    return dev, resolve(cfg.precision, dev)


def load_data(cfg: config.Config, spec: str | None) -> DataSplits:
    """The data a command evaluates on: ``--data``, else the data the checkpoint was trained on.

    Images of any size: the labelled splits come as evaluation views at the training size (resize +
    centre crop, decoded in batches by loader workers; a memory-mapped scratch file past the
    memory budget, ``data/evalset.py``); the pretraining split is left as listed.
    """
    if config.is_text(cfg):  # tokenised texts (fastclr.data.text.TextSplits, the same fields)
        from fastclr.data import text as text_data
        from fastclr.method.text_encoder import load_tokenizer

        tokenizer = load_tokenizer(cfg.arch)
        return text_data.load(spec or cfg.data, tokenizer, cfg.max_length, column=cfg.text_column)  # type: ignore[return-value]
    data = datasets.load(spec or cfg.data, cfg.image_size, workers=cfg.workers, max_bad_fraction=cfg.max_bad_fraction)
    return evalset.eval_splits(data, cfg.image_size, workers=cfg.workers, limit=tiers.budget(cfg.data_memory_gb))


def labelled_splits(data: DataSplits, command: str) -> tuple[ImageSet, ImageSet]:
    """The labelled train and test splits, or a UserError saying what the data set lacks."""
    if data.train is None or data.train.labels is None:
        raise UserError(
            f"{command}: data set {data.name!r} has no labels; use a folder with one sub-folder per class "
            "(train/<class>/..., test/<class>/...)"
        )
    if data.test is None or data.test.labels is None:
        raise UserError(
            f"{command}: data set {data.name!r} has no labelled test split; put its class folders under train/ and "
            "hold some images out in test/ (or val/) with the same class folders (the pretraining result's "
            "train_knn_top1 scores it without one)"
        )
    return in_memory(data.train, command), in_memory(data.test, command)


def labelled_data(cfg: config.Config, spec: str | None, command: str) -> tuple[DataSplits, ImageSet, ImageSet]:
    """The command's data (:func:`load_data`) with its labelled train and test splits (:func:`labelled_splits`)."""
    data = load_data(cfg, spec)
    return (data, *labelled_splits(data, command))


@dataclass
class Labelled:
    """What an evaluation command on labelled data starts with (:func:`open_labelled`)."""

    restored: Restored
    device: torch.device
    precision: str
    data: DataSplits
    train: ImageSet
    test: ImageSet


def open_labelled(
    command: str,
    path: str | None,
    spec: str | None,
    device: str | None,
    random: bool = False,
    seed: int = 0,
    init: str | None = None,
) -> Labelled:
    """The model on its device with its precision (:func:`open_for_command`), and the labelled data of ``spec``
    (default: the data the checkpoint was trained on)."""
    restored, dev, precision = open_for_command(path, device, random, seed, init)
    return Labelled(restored, dev, precision, *labelled_data(restored.cfg, spec, command))
