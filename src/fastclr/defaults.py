"""Settings chosen from the data when no ``--config`` is given (the config layer's fallback preset).

A folder, list or shards spec is looked at once (``data/survey.py``: the median short side of a sample of
at most 1,000 files, headers only) and falls into one of three bands, each the setting of the paper
for images of that size (the paper's Appendix A for the augmentation, Appendix B.9 for CIFAR-size images):

- small (<= 40 px, CIFAR-like): 32 px, the CIFAR stem (3x3 stride-1 conv, no max-pool), no blur,
  colour strength 0.5.
- medium (<= 128 px, STL-10-like): 96 px, the ImageNet stem, blur on, colour strength 1.0.
- large (> 128 px, photos): 224 px, the paper's ImageNet augmentation (blur, strength 1.0).

All bands flip and crop down to 8% of the area. On a GPU the encoder is a standard ResNet
(resnet18; resnet50 for large images, the paper's ImageNet model); on a CPU it is resnet_mini with
a shorter schedule, and large images train at 96 px instead of 224 (a 224-px step costs more than
15 times a 96-px one there), so a laptop run ends in minutes to an hour, not a day. Any value can be
overridden with flags, ``--set key=value`` or a ``--config`` preset, which replaces this choice entirely.
"""

from __future__ import annotations

SMALL_MAX = 40  # px: the CIFAR band (32x32 images, 64 at most with a little margin)
MEDIUM_MAX = 128  # px: the STL-10 band (96x96)

_COMMON = {"flip": True, "min_scale": 0.08, "optimizer": "lars", "weight_decay": 1e-6, "knn_k": 200}
_BANDS = {
    "small": {"image_size": 32, "cifar_stem": True, "blur": False, "color_strength": 0.5},
    "medium": {"image_size": 96, "cifar_stem": False, "blur": True, "color_strength": 1.0},
    "large": {"image_size": 224, "cifar_stem": False, "blur": True, "color_strength": 1.0},
}
# GPU: the presets' schedules (cifar10_resnet18, stl10_resnet18, imagenet_resnet50 at a one-GPU batch).
_GPU = {
    "small": {"arch": "resnet18", "batch_size": 512, "lr": 1.0, "lr_rule": "linear", "temperature": 0.5},
    "medium": {"arch": "resnet18", "batch_size": 512, "lr": 0.3, "lr_rule": "linear", "temperature": 0.5},
    "large": {"arch": "resnet50", "batch_size": 512, "lr": 0.3, "lr_rule": "linear", "temperature": 0.2},
}
_GPU_SCHEDULE = {"epochs": 100, "warmup_epochs": 10}
# CPU: the cifar10_cpu preset's narrow ResNet and square-root rule for small batches.
_CPU = {"arch": "resnet_mini", "batch_size": 256, "lr": 0.075, "lr_rule": "sqrt", "temperature": 0.2}
_CPU_SCHEDULE = {"epochs": 20, "warmup_epochs": 1}
_CPU_SIZE = {"large": {"image_size": 96}}  # the medium band's size: 224 px is a GPU's


def band(side: float) -> str:
    """small, medium or large for a median short side in pixels."""
    return "small" if side <= SMALL_MAX else "medium" if side <= MEDIUM_MAX else "large"


def choose(side: float, gpu: bool) -> dict[str, object]:
    """Config values for images whose median short side is ``side`` px, on a GPU or a CPU."""
    b = band(side)
    device = {**_GPU[b], **_GPU_SCHEDULE} if gpu else {**_CPU, **_CPU_SCHEDULE, **_CPU_SIZE.get(b, {})}
    return {**_COMMON, **_BANDS[b], **device}


def describe(spec: str, side: float, sampled: int, gpu: bool, values: dict[str, object]) -> str:
    """The one stderr line that says what was chosen and how to override it."""
    keys = ("image_size", "arch", "cifar_stem", "blur", "color_strength", "batch_size", "epochs")
    chosen = ", ".join(f"{k}={values[k]}" for k in keys)
    return (
        f"no --config: {spec} has {band(side)} images (median short side {side:g} px of {sampled} sampled), "
        f"so on this {'GPU' if gpu else 'CPU'}: {chosen}; override with --set KEY=VALUE or --config PRESET"
    )
