"""Text pretraining through the project's loop: a tiny random BERT trains, resumes exactly, evaluates STS;
the commands (sts, embed, export) and the bad-input exits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastclr import cli, config
from fastclr.eval.sts import sts_command
from fastclr.pipeline import pretrain_and_evaluate as pretrain
from fastclr.train import checkpoint, restore
from textkit import SENTENCES, stsb_folder

STS_OFFSETS = (1, 2, 3)  # no pair of a sentence with itself: 24 distinct cosines, so rankings can be compared


def _cfg(tiny_arch: str, data: str, out, **kw) -> config.Config:
    values = dict(
        data=data,
        arch=tiny_arch,
        hf_random_init=True,
        max_length=16,
        batch_size=4,
        epochs=2,
        warmup_epochs=0.5,
        optimizer="adamw",
        lr=1e-3,
        lr_rule="none",
        weight_decay=0.0,
        temperature=0.05,
        proj_dim=8,
        word_delete=0.1,
        precision="fp32",
        device="cpu",  # bit-exact resume: the GPU's embedding backward adds with atomics, in any order
        channels_last=False,
        workers=0,
        log_every=1,
        checkpoint_every=1,
        eval=False,
        out=str(out),
    )
    values.update(kw)
    return config.Config(**values)


def hand_embeddings(model, texts: list[str], max_length: int = 16) -> torch.Tensor:
    """h of each text recomputed by hand: the tokenizer with its own special tokens and padding, the backbone's
    last hidden states mean-pooled over the real tokens (float64 [N, d])."""
    enc = model.encoder
    batch = enc.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length)
    ids, mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])
    with torch.no_grad():
        hidden = enc.backbone(input_ids=ids, attention_mask=mask).last_hidden_state.double()
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def sts_reference(model, folder, split: str, max_length: int = 16) -> float:
    """Spearman x 100 recomputed by hand: the STS file read here, both sentences embedded by
    :func:`hand_embeddings`, cosine of each pair, scipy's Spearman against the gold scores."""
    from scipy.stats import spearmanr

    rows = [line.split("\t") for line in (folder / f"sts-{split}.csv").read_text().splitlines()]
    gold = [float(r[4]) for r in rows]
    first, second = (hand_embeddings(model, [r[side] for r in rows], max_length) for side in (5, 6))
    cos = torch.nn.functional.cosine_similarity(first, second, dim=1)
    gaps = cos.sort().values.diff()
    assert gaps.min() > 1e-5, "cosines this close could rank differently in float32 (the library's)"
    return 100.0 * float(spearmanr(cos.numpy(), gold).statistic)


def test_three_steps_resume_exactly_and_evaluate_sts(tiny_arch, tmp_path):
    folder = stsb_folder(tmp_path / "sts", offsets=STS_OFFSETS)
    data = f"stsb:{folder}"
    whole = pretrain(_cfg(tiny_arch, data, tmp_path / "a", max_steps=3))
    pretrain(_cfg(tiny_arch, data, tmp_path / "b", max_steps=2))
    resumed = pretrain(_cfg(tiny_arch, data, tmp_path / "b", max_steps=3))  # continues at step 2
    assert whole["steps"] == resumed["steps"] == 3
    a = checkpoint.load(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # dropout masks and word deletions included
    done = pretrain(_cfg(tiny_arch, data, tmp_path / "a", max_steps=3, eval=True, eval_batch_size=5))
    scores = done["eval"]
    assert set(scores) == {"sts_spearman", "start_sts_spearman"}
    # the baseline is the run's own starting weights: the seed's random draw of the architecture
    ckpt = str(tmp_path / "a" / "checkpoints" / "last.pt")
    start = sts_command(ckpt, data, "test", random_init=True, batch_size=5, seed=0)
    assert scores["start_sts_spearman"] == pytest.approx(start["spearman"], abs=1e-6)
    restored = restore.open_checkpoint(ckpt)
    trained = restored.model.eval()
    assert scores["sts_spearman"] == pytest.approx(sts_reference(trained, folder, "test"), abs=1e-6)
    baseline = restore.random_init(restored.cfg, restored.cfg.seed).model.eval()  # the run's starting weights
    assert scores["start_sts_spearman"] == pytest.approx(sts_reference(baseline, folder, "test"), abs=1e-6)
    assert scores["sts_spearman"] != scores["start_sts_spearman"]  # three steps moved the ranking


def test_commands_on_a_text_checkpoint(tiny_arch, tmp_path, capsys):
    folder = stsb_folder(tmp_path / "sts", offsets=STS_OFFSETS)
    data = f"stsb:{folder}"
    pretrain(_cfg(tiny_arch, data, tmp_path / "run", max_steps=3))  # after 2 the 24 cosines still rank as at the start
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.pt")

    def run(*argv: str) -> dict:
        assert cli.main(list(argv)) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    got = run("sts", "--checkpoint", ckpt, "--split", "dev")
    restored = restore.open_checkpoint(ckpt)
    trained = restored.model.eval()
    assert got["pairs"] == 24 and got["spearman"] == pytest.approx(sts_reference(trained, folder, "dev"), abs=1e-6)
    base = run("sts", "--checkpoint", ckpt, "--random-init")  # on sts-test, the architecture drawn from --seed 0
    baseline = restore.random_init(restored.cfg, 0).model.eval()
    assert base["encoder"] == "random-init" and base["spearman"] != got["spearman"]
    assert base["spearman"] == pytest.approx(sts_reference(baseline, folder, "test"), abs=1e-6)
    emb = run("embed", "--checkpoint", ckpt, "--out", str(tmp_path / "e.npy"), "--batch-size", "3")
    rows = np.load(tmp_path / "e.npy")
    ids = json.loads((tmp_path / "e.ids.json").read_text())
    assert emb["count"] == len(ids) == rows.shape[0] and ids[:2] == ["stsb:0", "stsb:1"]
    # row i is the embedding of text i, whatever the batching
    from fastclr.data.text import tokenize

    model = trained
    first = tokenize(model.encoder.tokenizer, [SENTENCES[0]], 16)[0][:, 0]
    with torch.no_grad():
        assert np.allclose(rows[0], model.encode(first)[0].numpy(), atol=1e-5)
    out = run("export", "--checkpoint", ckpt, "--format", "onnx", "--out", str(tmp_path / "x" / "enc.onnx"))
    assert out["max_abs_diff"] <= 1e-4 and (tmp_path / "x" / "tokenizer_config.json").is_file()


def test_bad_text_input_exits_2_with_one_line(tiny_arch, tmp_path, capsys):
    junk = tmp_path / "junk.txt"
    junk.write_bytes(bytes(range(256)) * 40)
    argv = ["pretrain", "--data", f"text:{junk}", "--set", f"arch={tiny_arch}", "--out", str(tmp_path / "r")]
    assert cli.main(argv + ["--set", "hf_random_init=true", "--set", "batch_size=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fastclr: error:") and "max_bad_fraction" in err[-1]
    assert (tmp_path / "r" / "skipped.txt").is_file()
    assert cli.main(["pretrain", "--data", "digits", "--set", f"arch={tiny_arch}", "--out", str(tmp_path / "s")]) == 2
    assert "text encoder" in capsys.readouterr().err
    assert cli.main(["pretrain", "--data", f"text:{junk}", "--out", str(tmp_path / "s")]) == 2
    assert "image encoder" in capsys.readouterr().err


def test_a_run_from_random_weights_says_what_to_expect(tiny_arch, tmp_path, capsys):
    data = f"stsb:{stsb_folder(tmp_path / 'sts')}"
    pretrain(_cfg(tiny_arch, data, tmp_path / "r", max_steps=1))
    lines = [line for line in capsys.readouterr().err.splitlines() if "hf_random_init=true" in line]
    assert len(lines) == 1 and lines[0].startswith("fastclr: warning: ")
    pretrain(_cfg(tiny_arch, data, tmp_path / "w", max_steps=1, hf_random_init=False))
    assert "hf_random_init=true" not in capsys.readouterr().err


CPU = torch.device("cpu")


TOPICS = {"animal": {"dog", "cat", "cats", "bird"}, "person": {"man", "woman", "child", "people"}}


def _topic(sentence: str) -> str:
    """The label of a sentence: what it is about (animal, person, else thing)."""
    words = set(sentence.lower().rstrip(".").split())
    return next((topic for topic, names in TOPICS.items() if words & names), "thing")


TEST_SENTENCES = [
    "A cat runs in the street.",
    "The bird sleeps on the river.",
    "A woman walks along the beach.",
    "The child is playing the guitar.",
    "A car drives in the park.",
    "The man reads food.",
]


def test_labelled_texts_are_evaluated_by_knn_and_the_probe_on_the_encoders_h(tiny_arch, tmp_path):
    """text:train.csv with a label column and test.csv beside it: the end-of-run kNN and linear probe of the
    trained encoder and of its starting weights equal the hand-written kNN vote and the probe on h recomputed
    by hand from the checkpoint (and from the seed's random draw)."""
    from evalkit import brute_force_knn_top1
    from fastclr.data.text import tokenize
    from fastclr.eval.probe import linear_probe
    from fastclr.eval.sts import encode_tokens

    for name, texts in (("train", SENTENCES), ("test", TEST_SENTENCES)):
        (tmp_path / f"{name}.csv").write_text("text,label\n" + "".join(f'"{t}",{_topic(t)}\n' for t in texts))
    data = f"text:{tmp_path / 'train.csv'}"
    done = pretrain(_cfg(tiny_arch, data, tmp_path / "run", max_steps=3, eval=True, knn_k=3, eval_batch_size=5))
    scores = done["eval"]
    assert set(scores) == {"knn_top1", "linear_top1", "linear_top5", "start_knn_top1", "start_linear_top1"}
    classes = sorted({_topic(t) for t in SENTENCES})
    train_y = torch.tensor([classes.index(_topic(t)) for t in SENTENCES])
    test_y = torch.tensor([classes.index(_topic(t)) for t in TEST_SENTENCES])
    assert classes == ["animal", "person", "thing"] and sorted(set(test_y.tolist())) == [0, 1, 2]
    restored = restore.open_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    cfg = restored.cfg
    for prefix, model in (("", restored.model), ("start_", restore.random_init(cfg, cfg.seed).model)):
        model.eval()
        train_h, test_h = hand_embeddings(model, SENTENCES), hand_embeddings(model, TEST_SENTENCES)
        knn = brute_force_knn_top1(train_h, train_y, test_h, test_y, 3, cfg.knn_k, cfg.knn_temperature)
        assert scores[f"{prefix}knn_top1"] == pytest.approx(knn, abs=1e-6), prefix
        # the probe: 12 texts in 32 dimensions are separable, so its result hangs on the last bits of h; it is
        # refitted on the library's h, which equals the hand-computed h to float32 rounding
        ours = [
            encode_tokens(model.encode, tokenize(model.encoder.tokenizer, t, 16)[0], CPU)
            for t in (SENTENCES, TEST_SENTENCES)
        ]
        assert all(torch.allclose(a.double(), b, atol=1e-5) for a, b in zip(ours, (train_h, test_h), strict=True))
        probe = linear_probe(ours[0], train_y, ours[1], test_y, 3, seed=cfg.seed)
        assert scores[f"{prefix}linear_top1"] == pytest.approx(probe["top1"], abs=1e-6), prefix
        if not prefix:
            assert scores["linear_top5"] == pytest.approx(probe["top5"]) == 1.0  # 3 classes: always in the top 5
