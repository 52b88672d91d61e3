"""Run configuration: one typed dataclass, YAML presets for defaults, flags and --set on top.

Derived values (scaled learning rate, steps per epoch) are computed by the training code and
never written back here; ``OUT/config.yaml`` holds exactly what the user resolved.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fastclr.errors import UserError


@dataclass
class Config:
    """Every setting of a run, with its default and the reason beside it (the paper's section where it is one).

    Build one with :func:`fastclr.load_config` (a preset in ``fastclr/configs`` or a YAML file, then
    keyword overrides) or ``Config(field=value, ...)``; :func:`fastclr.pretrain` takes it. A run writes
    the resolved values to ``OUT/config.yaml``; derived values (the scaled learning rate, steps per
    epoch) are computed by the training code and never written back here.
    """

    # data
    data: str = "digits"  # data spec: digits, a folder, ... (see `fastclr pretrain --help`)
    image_size: int = 16  # side of the training views in pixels
    max_images: int = 0  # use only this many training images (0: all); a seeded class-balanced subset
    download: bool = False  # fetch a missing cifar10 / cifar100 / stl10 into its ROOT (needs internet)
    max_bad_fraction: float = 0.01  # stop before training when more of a folder's files than this cannot be decoded
    workers: int = 4  # CPU processes that decode images (folders, lists, the large-image stream); 0: the main process
    data_memory_gb: float = (
        0.0  # decoded images a run may hold (data/tiers.py); 0: a quarter of RAM and of the GPU's memory
    )
    decode: str = "auto"  # where shard JPEGs are decoded (data/gpu_decode.py): auto (the CPU for now), cpu or gpu
    text_column: str = "text"  # text data (text:FILE .csv/.tsv/.jsonl): the column holding the texts
    max_length: int = 32  # text: tokens per text, [CLS] and [SEP] included; longer texts are truncated
    # model
    # encoder: resnet_mini (CPU demos), resnet18 ... resnet152, resnet50x2/x4, torchvision models, timm:NAME
    arch: str = "resnet_mini"
    # YAML mapping for the torchvision/timm constructor, e.g. "{img_size: 32, patch_size: 4}"; hf: config.json fields
    arch_kwargs: str = ""
    freeze_patch_embed: bool = False  # ViTs: keep the random patch projection fixed (MoCo v3 section 4.2)
    # start the encoder from a torchvision/timm state dict or .safetensors file ("": random init); keys checked exactly
    init: str = ""
    cifar_stem: bool = True  # 3x3 stride-1 first conv and no max-pool: right for images of 64 px or less
    head_layers: int = 2  # 2 for SimCLR v1, 3 for v2
    head_hidden: int = 0  # hidden width of the head (0: the encoder's width d, as the paper)
    proj_dim: int = 128  # width of z
    pooling: str = "mean"  # text encoders (arch hf:PATH / hf:minilm): mean of the token states, or cls
    hf_random_init: bool = False  # text encoders: keep the architecture, draw fresh weights (the baseline)
    freeze_word_embed: bool = False  # text encoders: keep the token embeddings fixed (for random weights)
    # augmentation (Chen et al. 2020, Appendix A)
    min_scale: float = 0.08  # smallest crop area fraction
    color_strength: float = 0.5  # s: 0.5 for CIFAR, 1.0 for ImageNet
    blur: bool = False  # Gaussian blur: ImageNet-size images only
    flip: bool = True  # horizontal flip: off for digits and text
    views: int = 2  # views per image; every other view of an image is a positive
    # multi-crop (Caron et al. 2020, SwAV section 3.2): extra low-resolution views, each a positive of every other
    small_crops: int = 0  # low-resolution views added to the `views` full-size ones (0: off)
    small_crop_size: int = 0  # their side in pixels (0: 3/7 of image_size, SwAV's 96 of 224, at least 8)
    small_crop_min_scale: float = 0.05  # their crop area fraction is uniform in [min, max]
    small_crop_max_scale: float = 0.14
    # text views (dropout noise alone when all are 0, as unsupervised SimCSE)
    word_delete: float = 0.0  # each word of a text view is deleted with this probability
    span_crop: float = 0.0  # fraction of a text's words cut away, keeping one contiguous span
    word_reorder: float = 0.0  # probability that a text view's words are shuffled
    # loss
    loss: str = "nt_xent"  # nt_xent | nt_logistic | margin_triplet
    temperature: float = 0.5  # 0.5 for CIFAR (0.2 small batches), 0.1 for ImageNet at batch 4096
    margin: float = 1.0  # margin of the triplet loss
    max_negatives: int = 0  # cap on negatives per anchor (0: the whole batch), an ablation
    # optimisation (paper section 2.2, Appendix B.1)
    optimizer: str = "lars"  # lars | sgd | adamw
    lr: float = 0.3  # base learning rate before lr_rule
    lr_rule: str = "linear"  # linear: lr * B/256; sqrt: lr * sqrt(B); none
    weight_decay: float = 1e-6  # 1e-6 (v1), 1e-4 (v2)
    momentum: float = 0.9
    trust_coefficient: float = 0.001  # LARS eta
    warmup_epochs: float = 10.0  # linear warm-up, then cosine decay to zero
    epochs: int = 100
    # training minutes: time a few steps first, then run the epochs that fit (0: off, `epochs` as given)
    budget_minutes: float = 0.0
    batch_size: int = 256  # global batch B (the paper's), split across processes
    max_steps: int = 0  # stop after this many steps (0: run all epochs); the schedule still spans all epochs
    seed: int = 0
    # execution
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 where supported) | bf16 | fp32
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (off by default until measured to pay on the device at hand)
    log_every: int = 10  # steps between metrics.jsonl lines (the only host syncs of the step)
    # steps between checkpoints (also at the end, on SIGTERM/SIGINT, and at an epoch's end per checkpoint_minutes)
    checkpoint_every: int = 500
    # an epoch's end writes a checkpoint when this many minutes passed since the last one (0: at every epoch's
    # end); a 100-epoch CIFAR run on a GPU would otherwise write 100 checkpoints
    checkpoint_minutes: float = 5.0
    keep_checkpoints: int = 3  # newest checkpoints kept in OUT/checkpoints (last.pt is the newest)
    sync_bn: bool = True  # global BN over all processes when k > 1 (paper section 2.2); off: per-process BN
    chunk_size: int = 0  # gradient cache: forward this many views at a time (0: the whole batch); BN is then per chunk
    # evaluation at the end of pretraining (paper section 4, Appendix B.5; kNN: Wu et al. 2018)
    eval: bool = True
    knn_k: int = 200
    knn_temperature: float = 0.1
    eval_batch_size: int = 512
    eval_max_images: int = 10000  # train images in the end-of-run kNN bank and probe: seeded, class-balanced (0: all)
    knn_every: int = 0  # kNN monitor every N epochs during pretraining, into metrics.jsonl (0: off; needs labels)
    # label-free figures (RankMe, alignment, uniformity, view agreement) every N epochs into metrics.jsonl (0: off)
    quality_every: int = 0
    # a CSV of path,label for a few images (5-20 a class): few-shot kNN of the trained and random-init encoders
    probe_labels: str = ""
    # linear classifier on detached h trained alongside (the reference's "linear eval while pretraining")
    online_probe: bool = False
    # output
    out: str = "runs/fastclr"
    trackers: str = (
        "auto"  # any of tensorboard,wandb,mlflow (comma list or [a,b]); auto: TensorBoard if installed; none
    )
    tracker_project: str = "fastclr"  # W&B project and MLflow experiment
    tracker_group: str = ""  # W&B group and MLflow tag "group" (a sweep groups its trials under the study's name)
    tracker_dir: str = ""  # folder of W&B's offline runs and the MLflow file store ("": OUT); MLFLOW_TRACKING_URI wins


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
PRESETS_DIR = "configs"


def preset_names() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files("fastclr").joinpath(PRESETS_DIR).iterdir() if p.name.endswith(".yaml")
    )


def _field_type(name: str) -> type:
    hints = typing.get_type_hints(Config)
    return hints[name]


def parse_value(name: str, raw: Any) -> Any:
    """Convert a raw value (YAML or a --set string) to the field's type, or raise UserError."""
    if name not in FIELDS:
        raise UserError(f"unknown config key {name!r}; valid keys: {', '.join(FIELDS)}")
    kind = _field_type(name)
    if kind is str and isinstance(raw, list):  # a YAML list (trackers): stored as a comma list
        return ",".join(str(v) for v in raw)
    if kind is str and isinstance(raw, dict):  # a YAML mapping (arch_kwargs): stored as its flow-style YAML
        return yaml.safe_dump(raw, default_flow_style=True, sort_keys=True).strip()
    if isinstance(raw, str) and kind is not str:
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UserError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            raise TypeError
        if kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise TypeError
            return int(raw)
        if kind is float:
            if isinstance(raw, bool):
                raise TypeError
            return float(raw)
        if kind is str:
            return str(raw)
    except (TypeError, ValueError):
        pass
    raise UserError(f"{name}={raw!r} is not a valid {kind.__name__}")


def read_preset(name_or_file: str) -> dict:
    """Load a preset by name (shipped in fastclr/configs) or from a YAML file path."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"--config {name_or_file}: no such file")
        text = path.read_text()
    else:
        ref = resources.files("fastclr").joinpath(PRESETS_DIR).joinpath(f"{name_or_file}.yaml")
        if not ref.is_file():
            raise UserError(
                f"--config {name_or_file!r} is neither a preset ({', '.join(preset_names())}) nor a YAML file"
            )
        text = ref.read_text()
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"--config {name_or_file}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"--config {name_or_file}: expected a mapping of key: value")
    return values


def build_config(preset: str | None, overrides: dict[str, object], sets: list[str], from_data: bool = False) -> Config:
    """Defaults, then the preset, then explicit flags, then --set key=value (last wins).

    Args:
        from_data: with no preset, base the values on the data (``defaults.py``) when the data is a
            folder, a list or shards of images; the CLI's behaviour without --config. Otherwise the digits preset.
    """
    values: dict[str, Any] = {}
    chosen: dict[str, object] = {}
    for item in sets:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        chosen[key.strip()] = parse_value(key.strip(), raw)
    for key, flag in overrides.items():
        if flag is not None:
            chosen.setdefault(key, parse_value(key, flag))
    base = read_preset(preset or "digits")
    if preset is None and from_data:
        base = _data_defaults(str(chosen.get("data", "digits")), str(chosen.get("device", "auto"))) or base
        if "epochs" in chosen and "budget_minutes" not in chosen:
            base = {k: v for k, v in base.items() if k != "budget_minutes"}  # --epochs replaces the budget
    for k, v in base.items():
        values[k] = parse_value(k, v)
    for k, v in overrides.items():
        if v is not None:
            values[k] = parse_value(k, v)
    for item in sets:
        k, v = item.split("=", 1)
        values[k.strip()] = parse_value(k.strip(), v)
    return Config(**values)


def _data_defaults(spec: str, device: str) -> dict[str, object] | None:
    """Values chosen from a folder, list or shards spec's images (None for any other spec); says so on stderr."""
    import sys

    import torch

    from fastclr import defaults
    from fastclr.data import datasets

    found = datasets.median_side(spec)
    if found is None:
        return None
    side, sampled = found
    gpu = device != "cpu" and torch.cuda.is_available()
    values = {"data": spec, **defaults.choose(side, gpu)}
    print(f"fastclr: {defaults.describe(spec, side, sampled, gpu, values)}", file=sys.stderr, flush=True)
    return values


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(values: dict) -> Config:
    """Rebuild a Config from a checkpoint's dict, ignoring keys this version does not know."""
    return Config(**{k: v for k, v in values.items() if k in FIELDS})


def save(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


_RANGES: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("image_size", lambda v: v >= 8, ">= 8"),
    ("max_images", lambda v: v >= 0, ">= 0"),
    ("max_bad_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("workers", lambda v: 0 <= v <= 256, "0 to 256"),
    ("head_layers", lambda v: 1 <= v <= 4, "1 to 4"),
    ("head_hidden", lambda v: v >= 0, ">= 0"),
    ("proj_dim", lambda v: v >= 1, ">= 1"),
    ("min_scale", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("color_strength", lambda v: 0 <= v <= 2, "in [0, 2]"),
    ("views", lambda v: v >= 2, ">= 2"),
    ("small_crops", lambda v: 0 <= v <= 16, "0 to 16"),
    ("small_crop_size", lambda v: v == 0 or v >= 8, "0 (automatic) or >= 8"),
    ("small_crop_min_scale", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("small_crop_max_scale", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("loss", lambda v: v in ("nt_xent", "nt_logistic", "margin_triplet"), "nt_xent, nt_logistic or margin_triplet"),
    ("temperature", lambda v: v > 0, "> 0"),
    ("margin", lambda v: v >= 0, ">= 0"),
    ("max_negatives", lambda v: v >= 0, ">= 0"),
    ("optimizer", lambda v: v in ("lars", "sgd", "adamw"), "lars, sgd or adamw"),
    ("lr", lambda v: v > 0, "> 0"),
    ("lr_rule", lambda v: v in ("linear", "sqrt", "none"), "linear, sqrt or none"),
    ("weight_decay", lambda v: v >= 0, ">= 0"),
    ("momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("trust_coefficient", lambda v: v > 0, "> 0"),
    ("warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("epochs", lambda v: v >= 1, ">= 1"),
    ("budget_minutes", lambda v: v >= 0, ">= 0 (0: off)"),
    ("batch_size", lambda v: v >= 2, ">= 2"),
    ("max_steps", lambda v: v >= 0, ">= 0"),
    ("device", lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"), "auto, cpu or cuda"),
    ("precision", lambda v: v in ("auto", "bf16", "fp32"), "auto, bf16 or fp32"),
    ("log_every", lambda v: v >= 1, ">= 1"),
    ("checkpoint_every", lambda v: v >= 1, ">= 1"),
    ("checkpoint_minutes", lambda v: v >= 0, ">= 0 (0: at every epoch's end)"),
    ("keep_checkpoints", lambda v: v >= 1, ">= 1"),
    ("seed", lambda v: v >= 0, ">= 0"),
    ("chunk_size", lambda v: v == 0 or v >= 2, "0 (off) or >= 2 (BN needs 2 views per chunk)"),
    ("knn_k", lambda v: v >= 1, ">= 1"),
    ("knn_temperature", lambda v: v > 0, "> 0"),
    ("eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("eval_max_images", lambda v: v >= 0, ">= 0 (0: all)"),
    ("data_memory_gb", lambda v: v >= 0, ">= 0 (0: automatic)"),
    ("decode", lambda v: v in ("auto", "cpu", "gpu"), "auto, cpu or gpu"),
    ("knn_every", lambda v: v >= 0, ">= 0 (0: off)"),
    ("quality_every", lambda v: v >= 0, ">= 0 (0: off)"),
    ("max_length", lambda v: 3 <= v <= 4096, "3 to 4096 (special tokens included)"),
    ("pooling", lambda v: v in ("mean", "cls"), "mean or cls"),
    ("word_delete", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("span_crop", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("word_reorder", lambda v: 0 <= v <= 1, "in [0, 1]"),
]


def arch_kwargs(cfg: Config) -> dict:
    """``cfg.arch_kwargs`` as a dict ({} when empty); UserError unless it is a YAML mapping."""
    if not cfg.arch_kwargs.strip():
        return {}
    try:
        value = yaml.safe_load(cfg.arch_kwargs)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise UserError(
            f"arch_kwargs={cfg.arch_kwargs!r}: expected a YAML mapping, e.g. '{{img_size: 32, patch_size: 4}}'"
        )
    return value


def is_text(cfg: Config) -> bool:
    """A text run: a Hugging Face encoder (``arch hf:...``) on text data (``text:FILE``, ``stsb:DIR``)."""
    return cfg.arch.startswith("hf:")


def validate(cfg: Config) -> None:
    """Check every value against its valid range; raise UserError naming field, value and range."""
    for name, ok, valid in _RANGES:
        value = getattr(cfg, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name}={value!r} is not a finite number: must be {valid}")
        if not ok(value):
            raise UserError(f"{name}={value!r} is out of range: must be {valid}")
    arch_kwargs(cfg)
    if cfg.small_crop_min_scale > cfg.small_crop_max_scale:
        raise UserError(
            f"small_crop_min_scale={cfg.small_crop_min_scale} exceeds small_crop_max_scale={cfg.small_crop_max_scale}"
        )
    if cfg.small_crops and is_text(cfg):
        raise UserError(f"small_crops={cfg.small_crops} crops images; text runs take small_crops=0")
    if cfg.min_scale > 1.0:
        raise UserError(f"min_scale={cfg.min_scale} must be <= 1")
    _validate_modality(cfg)
    if cfg.loss == "margin_triplet" and cfg.batch_size > 1024:
        raise UserError(
            f"loss=margin_triplet builds a batch^3 hinge tensor; use batch_size <= 1024, not {cfg.batch_size}"
        )


def _validate_modality(cfg: Config) -> None:
    """Text encoders go with text data, image encoders with images."""
    text_data = cfg.data.startswith(("text:", "stsb:"))
    if is_text(cfg) and not text_data:
        raise UserError(
            f"arch={cfg.arch!r} is a text encoder but data={cfg.data!r} is not text: use --data text:FILE or stsb:DIR"
        )
    if text_data and not is_text(cfg):
        raise UserError(
            f"data={cfg.data!r} is text but arch={cfg.arch!r} is an image encoder: use --arch hf:minilm or hf:PATH"
        )


def describe_fields() -> str:
    """The config keys for --help, wrapped: ``name=default`` (the preset may change the default)."""
    import textwrap

    items = " ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(Config))
    return textwrap.fill(items, width=100, initial_indent="  ", subsequent_indent="  ")
