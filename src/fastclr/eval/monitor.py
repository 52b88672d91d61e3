"""Monitors during pretraining: a periodic kNN evaluation and an online linear probe.

* kNN monitor (not in the paper, used by every library): weighted kNN on L2-normalised h of the
  labelled train split -> test split, every ``knn_every`` epochs.
* Label-free monitor: RankMe, alignment, uniformity and view agreement (:mod:`fastclr.eval.quality`)
  of the held-aside images every ``quality_every`` epochs; labels or not. It reads the encoder in
  eval mode, without gradients, on views keyed apart from the training ones: the run's weights,
  BN statistics and random generators are the same with it as without it.
* Online probe: the reference code's "linear eval while pretraining" (google-research/simclr
  tf2 ``model.py``: a supervised head on ``tf.stop_gradient(h)`` trained jointly). A linear layer on
  h.detach() of every view, with the batch's labels, its own SGD optimiser and cross-entropy; it
  cannot change the encoder. Loss and accuracy accumulate on the device (no host sync per step)
  and are read once per epoch. Under torchrun there is one probe over the global batch: every
  rank gathers all ranks' h and labels into the single-process order and takes the same step, so
  its loss, accuracy and state (saved by rank 0, reloaded by every rank) equal one process's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastclr.data.sets import ImageSet, count_classes
from fastclr.eval import quality
from fastclr.eval.evaluate import FeatureSettings, evaluate
from fastclr.method.augment import AugmentConfig
from fastclr.train import dist
from fastclr.train.callbacks import Callback, LoopState, OnRepresentations
from fastclr.train.step import augment_config

MONITORED = ("rankme", "alignment", "uniformity", "view_agreement")  # the label-free figures in metrics.jsonl


def global_batch(x: torch.Tensor, views: int) -> torch.Tensor:
    """Every rank's rows of ``x`` [V*b, ...] (view-major) in the single-process order [V*k*b, ...].

    The gather is rank-major; the single-process batch is view-major over the global batch
    (docs/distributed.md), so the rows are put back as [V, k, b] (no gradient; one process: x).
    """
    k = dist.world_size()
    if k == 1:
        return x
    b = x.shape[0] // views
    with torch.no_grad():
        every = dist.gather(x.detach().contiguous())  # [k*V*b, ...], rank-major
    return every.view(k, views, b, *x.shape[1:]).transpose(0, 1).reshape(k * views * b, *x.shape[1:])


class OnlineProbe:
    """A linear classifier on detached h, trained alongside pretraining.

    Args:
        dim: width d of h; num_classes: outputs.
        lr: SGD learning rate (momentum 0.9, Nesterov, no weight decay; constant: it only monitors).
    """

    def __init__(self, dim: int, num_classes: int, device: torch.device, lr: float = 0.1):
        self.fc = nn.Linear(dim, num_classes).to(device)
        self.opt = torch.optim.SGD(self.fc.parameters(), lr=lr, momentum=0.9, nesterov=True)
        self._reset(device)

    def _reset(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.count = 0

    def update(self, h: torch.Tensor, labels: torch.Tensor, views: int = 1) -> None:
        """One step on the global batch: this rank's h [V*b, d] (detached here), labels int64 [V*b].

        Rows are view-major (``views`` blocks of b); under torchrun every rank's rows are gathered
        first (:func:`global_batch`), so all ranks take the single-process step.
        """
        h, labels = global_batch(h.detach().float(), views), global_batch(labels, views)
        logits = self.fc(h)
        loss = F.cross_entropy(logits, labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss_sum += loss.detach() * labels.shape[0]
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.count += labels.shape[0]

    def read(self) -> dict[str, float]:
        """Mean loss and top-1 accuracy since the last read (on the augmented training views); resets."""
        if self.count == 0:
            return {}
        out = {
            "online_probe_loss": float(self.loss_sum) / self.count,
            "online_probe_top1": float(self.correct) / self.count,
        }
        self._reset(self.loss_sum.device)
        return out

    def state_dict(self) -> dict:
        return {"fc": self.fc.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.fc.load_state_dict(state["fc"])
        self.opt.load_state_dict(state["opt"])


class Monitors(Callback):
    """The monitors as a pretraining callback: the online probe learns from every step's h
    (``on_batch``), both report at each epoch's end (``on_epoch_end``) into metrics.jsonl.

    Args:
        cfg: the run's config (knn_every, online_probe, views, kNN settings).
        feature_dim: width d of h.
        data: the run's DataSplits (the kNN monitor needs labelled train and test splits).
        labels: int64 [N] labels of the pretraining images (the online probe needs them), or None.
        held: the held-aside images of the label-free monitor (``quality_every``), or None.
    """

    def __init__(
        self,
        cfg,
        feature_dim: int,
        data,
        labels: torch.Tensor | None,
        device: torch.device,
        precision: str,
        warn=None,
        held: ImageSet | None = None,
    ):
        self.cfg, self.device, self.precision, self.held = cfg, device, precision, held
        self.labels = labels.to(device) if labels is not None else None
        labelled = (
            data.train is not None
            and data.test is not None
            and data.train.labels is not None
            and isinstance(data.train, ImageSet)
            and isinstance(data.test, ImageSet)
        )
        self.train: ImageSet | None = data.train if labelled else None
        self.test: ImageSet | None = data.test if labelled else None
        if cfg.knn_every and not labelled and warn:
            warn("knn_every is set but the data set has no labelled train and test splits: no kNN monitor")
        if cfg.online_probe and self.labels is None and warn:
            warn("online_probe is set but the pretraining images have no labels: no online probe")
        if cfg.quality_every and held is None and warn and dist.is_main():
            warn("quality_every is set but there are no held-aside images (a text run?): no label-free monitor")
        self.probe = None
        if cfg.online_probe and self.labels is not None:
            classes = count_classes(self.train.classes if self.train is not None else None, self.labels)
            self.probe = OnlineProbe(feature_dim, classes, device)

    def on_batch(self, index: torch.Tensor) -> OnRepresentations | None:
        """The step's ``on_h`` (labels of the batch, repeated for every view), or None."""
        probe, labels = self.probe, self.labels
        if probe is None or labels is None:
            return None
        y = labels[index.to(self.device)].repeat(self.cfg.views)  # views are view-major: [V*b]
        return lambda h: probe.update(h, y, self.cfg.views)

    def on_epoch_end(self, state: LoopState) -> None:
        """Log the epoch's monitor values to metrics.jsonl (nothing when nothing is due)."""
        record = self.epoch_end(state.model, round(state.epoch))
        if record:
            state.log({"step": state.step, "epoch": state.epoch, **record})

    def epoch_end(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """The monitor values after ``epoch`` epochs (empty when nothing is due)."""
        record: dict[str, float] = {}
        if self.probe is not None:
            record.update(self.probe.read())
        due = self.cfg.knn_every and epoch % self.cfg.knn_every == 0
        # rank 0 alone: it writes metrics.jsonl, and the other ranks' copies of the same encoder add nothing
        if due and dist.is_main() and self.train is not None and self.test is not None:
            settings = FeatureSettings(self.cfg.image_size, self.device, self.cfg.eval_batch_size, self.precision)
            scores = evaluate(
                model,
                self.train,
                self.test,
                settings,
                knn_k=(self.cfg.knn_k,),
                knn_temperature=self.cfg.knn_temperature,
                linear=False,
            )
            record["knn_top1"] = scores.knn[self.cfg.knn_k]
        if self.cfg.quality_every and epoch % self.cfg.quality_every == 0 and dist.is_main():
            record.update(self.label_free(model))
        return record

    def label_free(self, model: nn.Module) -> dict[str, float]:
        """The label-free figures of ``model`` on the held-aside images (empty without them)."""
        aug = augment_config(self.cfg)
        if self.held is None or len(self.held) < 2 or not isinstance(aug, AugmentConfig):
            return {}
        settings = FeatureSettings(self.cfg.image_size, self.device, self.cfg.eval_batch_size, self.precision)
        figures = quality.measure(model, self.held.images, aug, settings, self.cfg.seed + quality.VIEW_SEED)
        return {key: figures[key] for key in MONITORED}

    def state_dict(self) -> dict:
        return {"online_probe": self.probe.state_dict()} if self.probe is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.probe is not None and "online_probe" in state:
            self.probe.load_state_dict(state["online_probe"])
