"""Text pretraining through the project's loop: a tiny random BERT trains, resumes exactly, evaluates STS;
the commands (sts, embed, export) and the bad-input exits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastclr import cli, config
from fastclr.pipeline import pretrain_and_evaluate as pretrain
from fastclr.text.sts import sts_command
from fastclr.train import checkpoint
from textkit import SENTENCES, stsb_folder


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


def test_three_steps_resume_exactly_and_evaluate_sts(tiny_arch, tmp_path):
    data = f"stsb:{stsb_folder(tmp_path / 'sts')}"
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
    assert -100 <= scores["sts_spearman"] <= 100


def test_commands_on_a_text_checkpoint(tiny_arch, tmp_path, capsys):
    folder = stsb_folder(tmp_path / "sts")
    data = f"stsb:{folder}"
    pretrain(_cfg(tiny_arch, data, tmp_path / "run", max_steps=3))  # after 2 the 24 cosines still rank as at the start
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.pt")

    def run(*argv: str) -> dict:
        assert cli.main(list(argv)) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    got = run("sts", "--checkpoint", ckpt, "--split", "dev")
    assert got["pairs"] == 24 and -100 <= got["spearman"] <= 100
    base = run("sts", "--checkpoint", ckpt, "--random-init")
    assert base["encoder"] == "random-init" and base["spearman"] != got["spearman"]
    emb = run("embed", "--checkpoint", ckpt, "--out", str(tmp_path / "e.npy"), "--batch-size", "3")
    rows = np.load(tmp_path / "e.npy")
    ids = json.loads((tmp_path / "e.ids.json").read_text())
    assert emb["count"] == len(ids) == rows.shape[0] and ids[:2] == ["stsb:0", "stsb:1"]
    # row i is the embedding of text i, whatever the batching
    from fastclr.text.data import tokenize
    from fastclr.train import restore

    restored = restore.load_model(ckpt)
    model = restored.model.eval()
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
