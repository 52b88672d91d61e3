"""The method learns: the default pretraining on digits (40 epochs of 11 steps) gives an encoder whose
kNN and linear-probe accuracies beat those of the random-init encoder of the same architecture by real
margins, not by noise."""

import pytest
import torch

from fastclr import config
from fastclr.pipeline import pretrain_and_evaluate


@pytest.mark.slow
def test_pretraining_on_digits_beats_the_random_init_encoder(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    try:
        cfg = config.build_config("digits", {"out": str(tmp_path / "run")}, [])  # the README's run: ~50 s on 2 cores
        result = pretrain_and_evaluate(cfg)
    finally:
        torch.set_num_threads(threads)
    ev = result["eval"]
    assert result["steps"] == 40 * 11  # 1437 images, batch 128, 40 epochs
    # the README's run gains about 0.15 in both (0.964 vs 0.806 kNN, 0.978 vs 0.831 linear): half of it at least
    assert ev["knn_top1"] >= ev["random_init_knn_top1"] + 0.08, ev
    assert ev["linear_top1"] >= ev["random_init_linear_top1"] + 0.05, ev
    # label-free: the README's run has RankMe 55.1 vs 28.6 and view agreement 0.14 vs 0.02
    ours, base = ev["label_free"], ev["random_init_label_free"]
    assert ours["rankme"] >= 1.3 * base["rankme"] and ours["view_agreement"] >= base["view_agreement"] + 0.05, ev
