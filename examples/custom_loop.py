"""SimCLR in your own training loop, from fastclr's parts, on scikit-learn's 8x8 digits (no download).

    python examples/custom_loop.py               # 40 epochs, the digits preset's settings
    python examples/custom_loop.py --epochs 5    # a quick look

The parts: ``fastclr.Augment`` (the paper's views, batched and keyed on (seed, epoch, index, view)),
``fastclr.SimCLR`` (encoder f, head g), ``fastclr.nt_xent`` (eq. 1), ``fastclr.LARS`` with
``fastclr.lars_param_groups`` and ``fastclr.lr_at`` (warm-up then cosine, per step). The settings
are the ``digits`` preset's. Prints kNN top-1 on the held-out digits for the trained encoder and
for the same network at random initialisation.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import fastclr


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [1797, 3, 8, 8] and int64 [1797] labels."""
    d = load_digits()
    pixels = torch.from_numpy(np.round(d.images * 255 / 16).astype(np.uint8))
    return pixels[:, None].expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(d.target)


def train(images: torch.Tensor, epochs: int, batch_size: int = 128, seed: int = 0) -> tuple[fastclr.SimCLR, list]:
    """The loop: views, forward, NT-Xent, LARS step with the scheduled learning rate."""
    torch.manual_seed(seed)
    model = fastclr.SimCLR("resnet_micro", cifar_stem=True)
    aug = fastclr.Augment(8, flip=False, min_scale=0.3, seed=seed)  # digits must not be mirrored
    peak = 0.075 * batch_size**0.5  # the paper's square-root rule for small batches (Appendix B.1)
    optimizer = fastclr.LARS(fastclr.lars_param_groups(model, weight_decay=1e-6), lr=peak)
    steps_per_epoch = len(images) // batch_size
    total, warmup = epochs * steps_per_epoch, 2 * steps_per_epoch
    losses = []
    model.train()
    for step in range(total):
        epoch, i = divmod(step, steps_per_epoch)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed * 10_000 + epoch))
        index = order[i * batch_size : (i + 1) * batch_size]  # [B] dataset indices: they key the views
        for group in optimizer.param_groups:
            group["lr"] = fastclr.lr_at(step, peak, warmup, total)
        x = aug.views(images[index], index, epoch=epoch)  # [2B, 3, 8, 8], view-major
        _, z = model(x)  # one forward pass: BN sees both views
        loss = fastclr.nt_xent(*z.chunk(2), temperature=0.2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), losses


def knn_top1(model: fastclr.SimCLR, images: torch.Tensor, labels: torch.Tensor, k: int = 20) -> float:
    """Cosine kNN (majority of k neighbours) of the last 360 digits against the first 1437, on h."""
    h, _ = fastclr.embed(model, images, image_size=8)
    h = F.normalize(torch.from_numpy(h), dim=1)
    bank, query = h[:1437], h[1437:]
    nearest = (query @ bank.T).topk(k, dim=1).indices  # [360, k]
    votes = F.one_hot(labels[:1437][nearest], 10).sum(1)
    return float((votes.argmax(1) == labels[1437:]).float().mean())


def main(epochs: int = 40, pretrain_images: int = 1437, batch_size: int = 128) -> dict:
    images, labels = digits()
    torch.manual_seed(0)  # train()'s seed: the baseline is the trained network's own starting weights
    baseline = fastclr.SimCLR("resnet_micro", cifar_stem=True).eval()  # random init: the bar to clear
    model, losses = train(images[:pretrain_images], epochs, batch_size)  # the training digits only, no labels
    result = {
        "epochs": epochs,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "knn_top1": knn_top1(model, images, labels),
        "random_init_knn_top1": knn_top1(baseline, images, labels),
    }
    print(result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    main(parser.parse_args().epochs)
