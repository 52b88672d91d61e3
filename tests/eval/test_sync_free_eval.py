"""The evaluation paths keep their work on the device until the figure is read (tests/synckit.py).

extract, the kNN vote, supervised prediction and the supervised training loop never synchronise with
the host before their final number; the linear probe's L-BFGS is host-driven by design (its line
search and stopping tests read the loss and gradient each iteration), so its synchronisations are
counted and bounded by its iterations, never by the number of images.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastclr.eval import supervised
from fastclr.eval.features import extract
from fastclr.eval.knn import knn_predict, topk_accuracy
from fastclr.eval.probe import L2_GRID, linear_probe
from fastclr.method import augment
from fastclr.method.model import SimCLR
from synckit import HostSyncs, NoHostSync

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SimCLR("resnet_micro", True).eval()


def images(n: int, side: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_extract_and_the_knn_vote_never_wait_on_the_host(model):
    extract(model.encode, images(4), 8, CPU)  # warm-up: constants made once
    labels = torch.arange(30) % 3
    with NoHostSync() as mode:
        train = extract(model.encode, images(30), 8, CPU, batch_size=7)  # resized: a different side
        test = extract(model.encode, images(10, 8, 1), 8, CPU, batch_size=7)
        votes = knn_predict(train, labels, test, 3, k=5, batch_size=4, bank_chunk=8)
    assert mode.ops > 100 and votes.shape == (10, 3)
    assert 0 <= topk_accuracy(votes, labels[:10]) <= 1  # the figure: read after the block


def test_prediction_copies_its_logits_once(model):
    head = torch.nn.Linear(model.feature_dim, 4)
    with NoHostSync():
        logits = supervised.predict(lambda x: head(model.encode(x)), images(20), 8, CPU, batch_size=6)
    assert logits.shape == (20, 4)


def test_the_supervised_loop_reads_its_loss_only_at_the_end(model):
    head = torch.nn.Linear(model.feature_dim, 3)
    labels = torch.arange(24) % 3
    aug = augment.AugmentConfig(size=8, color_strength=0.0, color_p=0.0, gray_p=0.0, blur=False)

    def fit() -> float:
        return supervised.fit(lambda x: head(model.encode(x)), list(head.parameters()), images(24),
                              lambda logits, index, x: F.cross_entropy(logits, labels[index]),
                              aug=aug, epochs=2, batch_size=8, lr=0.1, seed=0, device=CPU)  # fmt: skip

    fit()  # warm-up: the augmentation's constants reach the device once
    mode = HostSyncs()
    with mode:
        fit()
    assert sum(mode.syncs.values()) == 1, mode.syncs  # the returned loss, read once


@pytest.mark.parametrize("n", [60, 240])
def test_the_probe_synchronises_per_iteration_not_per_image(n):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = torch.randn(n, 6, generator=g) + 2 * F.one_hot(y, 6).float()
    mode = HostSyncs()
    with mode:
        out = linear_probe(x, y, x[:30], y[:30], 3)
    assert 0.5 < out["top1"] <= 1
    assert set(mode.syncs) <= {"_local_scalar_dense", "nonzero"}, mode.syncs
    # L-BFGS: a few reads per iteration, at most 200 iterations per fit, one fit per grid value and the refit
    assert sum(mode.syncs.values()) <= 12 * 200 * (len(L2_GRID) + 1), mode.syncs
