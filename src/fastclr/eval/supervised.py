"""The supervised loop shared by linear evaluation, fine-tuning and distillation.

All three follow the same recipe (SimCLR v1 Appendix B.6; SimCLRv2 arXiv 2006.10029 section 2 and
Appendix): random crop and horizontal flip only (no colour distortion, no blur), SGD with Nesterov
momentum 0.9, no weight decay, learning rate ``lr * B / 256`` decayed by a cosine without
warm-up, per step. Each caller supplies the forward pass, the parameters to train and the loss.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastclr.data.sets import ImageSet
from fastclr.eval.features import to_device
from fastclr.eval.knn import topk_accuracy
from fastclr.method import augment as _augment
from fastclr.method.augment import AugmentConfig, augment
from fastclr.method.rng import keyed_generator
from fastclr.method.schedule import lr_at
from fastclr.train.precision import autocast

PAPER_MIN_SCALE = 0.08  # random resized crop area 0.08-1 (paper Appendix A, reference code's linear eval)
CROP_PROPORTION = 0.875  # evaluation centre crop of ImageNet-size images (reference code: 224 of 256)
CROP_MIN_SIDE = 96  # smaller images (CIFAR) are evaluated whole, as in the reference code


def crop_flip(size: int, min_scale: float = PAPER_MIN_SCALE, flip: bool = True) -> AugmentConfig:
    """Crop and flip only: the augmentation of every supervised protocol (no colour, no blur).

    The defaults are the paper's (area 0.08-1, ratio 3/4-4/3, flip p = 0.5), whatever the pretraining used.
    """
    return AugmentConfig(size=size, min_scale=min_scale, flip=flip, color_strength=0.0, gray_p=0.0, blur=False)


def crop_proportion(size: int) -> float:
    """The evaluation view's centre-crop proportion: 0.875 for images of 96 px and more, else 1 (whole image)."""
    return CROP_PROPORTION if size >= CROP_MIN_SIDE else 1.0


def cropped_eval_view(images: torch.Tensor, size: int, crop: float = 1.0) -> torch.Tensor:
    """The evaluation view: short side resized to size / crop, centre crop size x size, normalised.

    With crop 0.875 and size 224 this is the reference code's resize to 256, centre crop 224.
    Args:
        images: uint8 [N, 3, H, W]. Returns: float32 [N, 3, size, size].
    """
    if crop >= 1.0:
        return _augment.eval_view(images, size)
    outer = max(size, round(size / crop))
    x = _augment.eval_view(images, outer)  # [N, 3, outer, outer]; normalisation is per pixel, so crop after
    lo = (outer - size) // 2
    return x[..., lo : lo + size, lo : lo + size]


def batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """The epoch's shuffled index batches; the last one may be smaller (small labelled subsets)."""
    perm = torch.randperm(n, generator=keyed_generator(seed, epoch, 0x5EED5))
    return list(perm.split(batch_size))


SHOW_EVERY = 50  # steps between the progress bar's loss readings (each one a host synchronisation)


def fit(
    forward: Callable[[torch.Tensor], torch.Tensor],
    params: list[torch.nn.Parameter],
    images: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    aug: AugmentConfig,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device | str,
    precision: str = "fp32",
    desc: str = "train",
) -> float:
    """Train ``params`` with Nesterov SGD on crop-and-flip views of ``images``.

    Args:
        forward: views [b, 3, S, S] -> logits [b, C].
        params: what the optimizer updates (everything else stays as the caller froze it).
        images: uint8 [N, 3, H, W] (any device).
        loss_fn: (logits [b, C], index int64 [b] into ``images``, views) -> scalar loss.
        lr: base learning rate, scaled by batch_size / 256 (the reference code's linear rule).
    Returns:
        the last step's loss.
    """
    from tqdm import tqdm

    device = torch.device(device)
    batch_size = min(batch_size, images.shape[0])
    peak = lr * batch_size / 256
    opt = torch.optim.SGD(params, lr=peak, momentum=0.9, nesterov=True, weight_decay=0.0)
    steps_per_epoch = -(-images.shape[0] // batch_size)
    total = epochs * steps_per_epoch
    step, last = 0, None
    bar = tqdm(total=total, file=sys.stderr, desc=desc, leave=False, disable=None, dynamic_ncols=True)
    for epoch in range(epochs):
        for index in batches(images.shape[0], batch_size, seed, epoch):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, peak, 0, total)
            batch, on_device = to_device(images[index.to(images.device)], device), to_device(index, device)
            x = augment(batch, on_device, seed=seed, epoch=epoch, view=0, cfg=aug)
            with autocast(device, precision):
                logits = forward(x)
            loss = loss_fn(logits.float(), on_device, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, last = step + 1, loss.detach()
            bar.update(1)
            if step % SHOW_EVERY == 0:  # reading the loss waits for the device: not every step
                bar.set_postfix(loss=f"{float(last):.4f}", refresh=False)
    bar.close()
    return float("nan") if last is None else float(last)


@torch.no_grad()
def predict(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    size: int,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 512,
    crop: float = 1.0,
) -> torch.Tensor:
    """Logits [N, C] (float32, CPU) of the evaluation view (:func:`cropped_eval_view`) of every image.

    The logits stay on the device until the last batch: one copy to the host, not one per batch.
    """
    device = torch.device(device)
    out = []
    for lo in range(0, images.shape[0], batch_size):
        x = cropped_eval_view(to_device(images[lo : lo + batch_size], device), size, crop)
        with autocast(device, precision):
            out.append(forward(x).float())
    return torch.cat(out).cpu()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top1 and top5 (fractions) of logits [N, C] against int64 labels [N]."""
    labels = labels.to(logits.device)
    return {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5)}


def cross_entropy(labels: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The :func:`fit` loss of the labelled protocols: cross-entropy of the logits against ``labels[index]``."""
    return lambda logits, index, _views: F.cross_entropy(logits, labels[index])


@dataclass(frozen=True)
class Recipe:
    """The settings of one run of the supervised recipe (the module docstring): the training views, epochs,
    batch size B, base learning rate (scaled by B/256), seed, and where and in what precision it runs."""

    aug: AugmentConfig
    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    device: torch.device | str = "cpu"
    precision: str = "fp32"

    def fit(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        params: list[torch.nn.Parameter],
        images: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        desc: str,
    ) -> float:
        """:func:`fit` with these settings; returns the last step's loss."""
        return fit(
            forward,
            params,
            images,
            loss_fn,
            aug=self.aug,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            device=self.device,
            precision=self.precision,
            desc=desc,
        )

    def test(
        self, forward: Callable[[torch.Tensor], torch.Tensor], test: ImageSet, crop: float = 1.0
    ) -> dict[str, float]:
        """top1 and top5 (fractions) of ``forward`` on the evaluation views (:func:`cropped_eval_view`) of ``test``."""
        assert test.labels is not None, "the supervised protocols test on a labelled split"
        logits = predict(forward, test.images, self.aug.size, torch.device(self.device), self.precision, crop=crop)
        return accuracy(logits, test.labels)
