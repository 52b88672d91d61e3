"""SimCLRv2 distillation: a student learns a fine-tuned teacher's softened predictions.

SimCLRv2 (arXiv 2006.10029) section 2, eq. 2: on unlabeled images x the student minimises
    - sum_x sum_y P_T(y | x; tau) log P_S(y | x; tau),
with P(y | x; tau) = softmax(logits / tau); tau = 1 by default. Eq. 2 may mix in the ordinary
cross-entropy on the labelled examples; here ``alpha`` weighs that labelled term:
    L = (1 - alpha) * L_distill + alpha * L_labelled   (alpha = 0: pure distillation, the default).
The teacher sees exactly the student's augmented view (crop and flip only) and stays in eval
mode; the student (the same or a smaller architecture) starts from random weights and trains
with the supervised recipe of :mod:`fastclr.eval.supervised`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fastclr import config, log
from fastclr.data.sets import ImageSet
from fastclr.errors import UserError, require_fraction, require_positive
from fastclr.eval import supervised
from fastclr.eval.finetune import Classifier, load_classifier, save_classifier
from fastclr.train import restore


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Mean over the batch of -sum_y P_T(y|x; tau) log P_S(y|x; tau). Both logits [b, C]."""
    target = F.softmax(teacher_logits.float() / temperature, dim=1)
    return -(target * F.log_softmax(student_logits.float() / temperature, dim=1)).sum(1).mean()


def distill(
    teacher: Classifier,
    student: Classifier,
    images: torch.Tensor,
    recipe: supervised.Recipe,
    *,
    labels: torch.Tensor | None = None,
    alpha: float = 0.0,
    temperature: float = 1.0,
) -> float:
    """Train ``student`` on ``images`` (uint8 [N, 3, H, W]) against ``teacher``.

    Args:
        labels: int64 [N] with -1 for unlabeled images; used only when alpha > 0.
        alpha: weight of the labelled cross-entropy (rows with label -1 do not count).
    Returns:
        the last step's loss.
    """
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student.train()
    y = labels.to(recipe.device) if labels is not None else None

    def loss_fn(logits: torch.Tensor, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(x).float()  # [b, C], the same view the student sees
        loss = distillation_loss(logits, target, temperature)
        if alpha > 0 and y is not None:
            yb = y[index]
            sup = labelled_cross_entropy(logits, yb)
            loss = (1 - alpha) * loss + alpha * sup
        return loss

    return recipe.fit(student, student.trainable(), images, loss_fn, desc="distill")


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the rows with a label (>= 0); 0 when none has one.

    Written as a masked mean, not by selecting the labelled rows: no host synchronisation on a GPU.
    """
    known = (labels >= 0).float()
    per_row = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
    return (per_row * known).sum() / known.sum().clamp_min(1)


def check_settings(temperature: float, alpha: float, epochs: int, batch_size: int, lr: float) -> None:
    """UserError (one line naming the flag) for a setting of :func:`command` out of its range."""
    require_positive(epochs=epochs, batch_size=batch_size, lr=lr)
    if temperature <= 0:
        raise UserError(f"--temperature {temperature}: must be > 0 (1.0 in SimCLRv2)")
    require_fraction("alpha", alpha, zero=True, hint=" (0: distillation only)")


def teacher_labels(train: ImageSet, pool: ImageSet, label_ids: list[str]) -> torch.Tensor:
    """int64 [len(pool)]: the label of each image of ``pool`` the teacher was fine-tuned on, -1 for the others."""
    assert train.labels is not None  # restore.labelled_splits checked it
    known = {i: int(y) for i, y in zip(train.ids, train.labels.tolist())}
    chosen = set(label_ids)
    return torch.tensor([known[i] if i in chosen and i in known else -1 for i in pool.ids], dtype=torch.int64)


def new_student(
    tcfg: config.Config, arch: str | None, num_classes: int, seed: int, device: torch.device
) -> tuple[Classifier, config.Config]:
    """A randomly initialised classifier (seeded) of ``arch`` (default: the teacher's), with its config."""
    scfg = config.from_dict({**config.to_dict(tcfg), "arch": arch or tcfg.arch})
    torch.manual_seed(seed)
    return Classifier(restore.build_model(scfg), num_classes, 0).to(device), scfg


def command(
    teacher_path: str,
    data: str,
    *,
    student_arch: str | None = None,
    temperature: float = 1.0,
    alpha: float = 0.0,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 0.1,
    seed: int = 0,
    device: str | None = None,
    out: str | None = None,
) -> dict:
    """``fastclr distill``: a fresh student learns the teacher on every image of ``data``; both tested.

    The student starts from random weights and learns P_T(y|x; tau) on every image of ``data``
    (SimCLRv2 eq. 2, tau = ``temperature``); ``alpha`` mixes in the cross-entropy of the teacher's
    labelled images.
    """
    check_settings(temperature, alpha, epochs, batch_size, lr)
    teacher, tcfg, tstate = load_classifier(teacher_path)
    dev, precision = restore.device_and_precision(tcfg, device)
    splits, train, test = restore.labelled_data(tcfg, data, "distill")
    # every decoded image, labelled or not
    pool = splits.pretrain if isinstance(splits.pretrain, type(train)) else train
    labels = teacher_labels(train, pool, tstate.get("label_ids", [])) if alpha > 0 else None
    student, scfg = new_student(tcfg, student_arch, teacher.fc.out_features, seed, dev)
    teacher.to(dev)
    log.info(
        f"distill: teacher {tcfg.arch} -> student {scfg.arch}, {len(pool)} images, tau {temperature}, alpha {alpha}, "
        f"{epochs} epochs, {dev} {precision}"
    )
    aug = supervised.crop_flip(tcfg.image_size, tcfg.min_scale, tcfg.flip)
    recipe = supervised.Recipe(aug, epochs, batch_size, lr, seed, dev, precision)
    distill(teacher, student, pool.images, recipe, labels=labels, alpha=alpha, temperature=temperature)
    student.eval()
    s_acc, t_acc = recipe.test(student, test), recipe.test(teacher, test)
    ckpt = (Path(out) if out else Path(teacher_path).parent / f"distill_{scfg.arch}") / "student.pt"
    save_classifier(ckpt, student, scfg, train.classes, {"teacher": str(teacher_path), **s_acc})
    return {
        "student_top1": s_acc["top1"],
        "teacher_top1": t_acc["top1"],
        "student_top5": s_acc["top5"],
        "teacher_top5": t_acc["top5"],
        "student_arch": scfg.arch,
        "teacher_arch": tcfg.arch,
        "student_params": trainable_count(student),
        "teacher_params": trainable_count(teacher),
        "checkpoint": str(ckpt),
    }


def trainable_count(clf: Classifier) -> int:
    """Parameters a classifier uses (:meth:`Classifier.trainable`): what the student saves over the teacher."""
    return sum(p.numel() for p in clf.trainable())
