"""Settings chosen from the data when no ``--config`` is given (the config layer's fallback preset).

A folder, list or shards spec is looked at once (``data/survey.py``: the median short side of a sample of
at most 1,000 files, headers only) and falls into one of three bands (the paper's Appendix A for the
augmentation, Appendix B.9 for CIFAR-size images):

- small (<= 40 px, CIFAR-like): the CIFAR stem (3x3 stride-1 conv, no max-pool), no blur.
- medium (<= 128 px, STL-10-like): the ImageNet stem, blur on.
- large (> 128 px, photos): the paper's ImageNet augmentation (blur), 224 px on a GPU.

The training side is the images' own side within its band (:func:`image_size`): 64-px photos train at
64 px, not enlarged to 96 (2.25x the compute for no new pixels). All bands flip and crop down to 8% of
the area.

On a GPU the encoder is a standard ResNet (resnet18; resnet50 for large images, the paper's ImageNet
model) with the paper's colour strengths (0.5 small, 1.0 otherwise) and 100 epochs. On a CPU:

- resnet_mini, batch 256, LARS with the square-root rule (0.075 x sqrt(B)), temperature 0.2 (small
  batches), and at most 96 px (a 224-px step costs more than 15 times a 96-px one there);
- colour strength 0.5 in every band. Measured: on held-out 5-class photos (128 px) the paper's 1.0 gave
  kNN 42.5% against 42.2% for the random-init encoder (no gain), 0.5 gave 53.9% (+11.7), linear +6.9;
  on 20 Tiny-ImageNet classes (32 px, 5 epochs) kNN 23.4% at 0.5 against 20.9% at 1.0 (benchmarks/README.md).
  Strength 1.0 erases the colour cue that a random encoder keeps, and minutes of training on a few
  thousand images do not learn what replaces it;
- a schedule of :data:`CPU_BUDGET_MINUTES` training minutes (``train/budget.py`` times a few real steps,
  then runs the epochs that fit, at most 100), so a laptop without bf16 (about 4x slower a step) gets a
  shorter schedule in the same wall time instead of a run four times as long; ``--epochs`` replaces it.

Any value can be overridden with flags, ``--set key=value`` or a ``--config`` preset, which replaces this
choice entirely.
"""

from __future__ import annotations

SMALL_MAX = 40  # px: the CIFAR band (32x32 images, 64 at most with a little margin)
MEDIUM_MAX = 128  # px: the STL-10 band (96x96)
SMALL_MIN = 16  # px: smaller images are enlarged to this (a 3x3 stem needs a few pixels to crop)
CPU_MAX_SIDE = 96  # px: a CPU's largest training side (a 224-px step costs more than 15x a 96-px one there)
CPU_BUDGET_MINUTES = 7.0  # training minutes of a CPU run; with its evaluation the command ends within about 10

_COMMON = {"flip": True, "min_scale": 0.08, "optimizer": "lars", "weight_decay": 1e-6, "knn_k": 200}
_BANDS = {
    "small": {"cifar_stem": True, "blur": False, "color_strength": 0.5},
    "medium": {"cifar_stem": False, "blur": True, "color_strength": 1.0},
    "large": {"cifar_stem": False, "blur": True, "color_strength": 1.0},
}
# GPU: the presets' schedules (cifar10_resnet18, stl10_resnet18, imagenet_resnet50 at a one-GPU batch).
_GPU = {
    "small": {"arch": "resnet18", "batch_size": 512, "lr": 1.0, "lr_rule": "linear", "temperature": 0.5},
    "medium": {"arch": "resnet18", "batch_size": 512, "lr": 0.3, "lr_rule": "linear", "temperature": 0.5},
    "large": {"arch": "resnet50", "batch_size": 512, "lr": 0.3, "lr_rule": "linear", "temperature": 0.2},
}
_GPU_SCHEDULE = {"epochs": 100, "warmup_epochs": 10}
# CPU: the cifar10_cpu preset's narrow ResNet and square-root rule for small batches, a schedule of
# CPU_BUDGET_MINUTES (``train/budget.py`` times a few steps and runs the epochs that fit; ``--epochs``
# replaces it), and colour strength 0.5 in every band: minutes of training on a few thousand images do
# not learn the cues that replace colour, and strength 1.0 erases the colour that a random encoder keeps
# (benchmarks/README.md, "Defaults that learn on a CPU": kNN no better than random init at 1.0, clearly
# better at 0.5, on photo folders of 64 and 128 px).
_CPU = {
    "arch": "resnet_mini",
    "batch_size": 256,
    "lr": 0.075,
    "lr_rule": "sqrt",
    "temperature": 0.2,
    "color_strength": 0.5,
    "epochs": 100,  # the bound of the budgeted schedule
    "budget_minutes": CPU_BUDGET_MINUTES,
    "warmup_epochs": 1,
}


def image_size(side: float, gpu: bool) -> int:
    """The training side for images whose median short side is ``side``: their own side within its band
    (a 64-px set trains at 64, not enlarged to 96), enlarged to :data:`SMALL_MIN` at the least, 224 for
    large images on a GPU and at most :data:`CPU_MAX_SIDE` on a CPU."""
    own = max(SMALL_MIN, int(round(side)))
    if band(side) == "large":
        return 224 if gpu else CPU_MAX_SIDE
    return own if gpu else min(own, CPU_MAX_SIDE)


def band(side: float) -> str:
    """small, medium or large for a median short side in pixels."""
    return "small" if side <= SMALL_MAX else "medium" if side <= MEDIUM_MAX else "large"


def choose(side: float, gpu: bool, count: int | None = None) -> dict[str, object]:
    """Config values for ``count`` training images (None: not counted) whose median short side is ``side`` px,
    on a GPU or a CPU."""
    b = band(side)
    device: dict[str, object] = {**_GPU[b], **_GPU_SCHEDULE} if gpu else dict(_CPU)
    batch = device["batch_size"]
    if count is not None and isinstance(batch, int):
        device["batch_size"] = fit_batch(batch, count)
    return {**_COMMON, **_BANDS[b], **device, "image_size": image_size(side, gpu)}


def fit_batch(batch: int, count: int) -> int:
    """The band's batch size, halved until a step holds no more than the ``count`` training images (a folder
    smaller than one batch still trains; the learning rate follows the batch through ``lr_rule``)."""
    while batch > 2 and batch > count:
        batch //= 2
    return batch


def describe(spec: str, side: float, sampled: int, gpu: bool, values: dict[str, object]) -> str:
    """The one stderr line that says what was chosen and how to override it."""
    keys = ("image_size", "arch", "cifar_stem", "blur", "color_strength", "batch_size", "budget_minutes", "epochs")
    chosen = ", ".join(f"{k}={values[k]}" for k in keys if k in values)
    if values.get("budget_minutes"):
        chosen = chosen.replace("epochs=", "epochs at most ")
    return (
        f"no --config: {spec} has {band(side)} images (median short side {side:g} px of {sampled} sampled), "
        f"so on this {'GPU' if gpu else 'CPU'}: {chosen}; override with --set KEY=VALUE or --config PRESET"
    )
