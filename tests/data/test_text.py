"""Text data: formats, the bad-line policy, STS-B's reader and the tokenised layout."""

from __future__ import annotations

import json

import pytest
import torch

from fastclr.data.text import load, read_stsb, tokenize
from fastclr.errors import UserError
from textkit import SENTENCES, stsb_folder


def test_txt_skips_empty_and_binary_lines_and_lists_them(tmp_path, tokenizer):
    lines = SENTENCES * 10 + ["", "\x00\x01\x02junk"]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    data = load(f"text:{path}", tokenizer, 16, max_bad_fraction=0.05, out_dir=tmp_path / "run")
    assert len(data.pretrain) == len(SENTENCES) * 10
    assert data.pretrain.texts[: len(SENTENCES)] == SENTENCES
    skipped = (tmp_path / "run" / "skipped.txt").read_text().splitlines()[1:]
    assert [s.split("\t")[0] for s in skipped] == [f"{path}:{len(lines) - 1}", f"{path}:{len(lines)}"]
    assert data.train is None and data.test is None  # no labels, no evaluation splits


def test_too_many_bad_lines_stop_the_run(tmp_path, tokenizer):
    path = tmp_path / "junk.txt"
    path.write_bytes(bytes(range(256)) * 20 + b"\n\n\nA man is playing.\n")
    with pytest.raises(UserError, match="max_bad_fraction"):
        load(f"text:{path}", tokenizer, 16, out_dir=tmp_path / "run")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="no usable text"):
        load(f"text:{empty}", tokenizer, 16)


def test_csv_jsonl_columns_and_labelled_splits(tmp_path, tokenizer):
    rows = [(s, "animal" if ("dog" in s or "cat" in s or "bird" in s) else "other") for s in SENTENCES]
    (tmp_path / "train.csv").write_text("sentence,label\n" + "".join(f'"{s}",{y}\n' for s, y in rows))
    (tmp_path / "test.jsonl").write_text("")  # a sibling of another format is not the test split
    (tmp_path / "test.csv").write_text("sentence,label\n" + "".join(f'"{s}",{y}\n' for s, y in rows[:4]))
    data = load(f"text:{tmp_path / 'train.csv'}", tokenizer, 16, column="sentence")
    assert data.train is not None and data.test is not None
    assert data.train.classes == ["animal", "other"]
    assert data.test.labels.tolist() == data.train.labels[:4].tolist()
    with pytest.raises(UserError, match="text_column"):
        load(f"text:{tmp_path / 'train.csv'}", tokenizer, 16)
    jl = tmp_path / "corpus.jsonl"
    jl.write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    assert load(f"text:{jl}", tokenizer, 16).pretrain.texts == SENTENCES


def test_stsb_reader_and_pretraining_sentences(tmp_path, tokenizer):
    folder = stsb_folder(tmp_path / "sts")
    with open(folder / "sts-test.csv", "a") as f:  # extra fields after the second sentence are ignored
        f.write("main-news\theadlines\t2016\t0281\t5\tA dog runs.\tA dog runs in the park.\tsource\tsource\n")
    pairs = read_stsb(folder)
    assert pairs["test"].second[-1] == "A dog runs in the park." and pairs["test"].scores[-1] == 5.0
    data = load(f"stsb:{folder}", tokenizer, 16)
    expected = list(dict.fromkeys(pairs["train"].first + pairs["train"].second + pairs["dev"].first))
    assert data.pretrain.texts == expected  # distinct train + dev sentences, first-seen order; test unused
    with pytest.raises(UserError, match="sts-test.csv"):
        (folder / "sts-test.csv").unlink()
        load(f"stsb:{folder}", tokenizer, 16)


def test_tokens_layout_and_truncation(tokenizer):
    tokens, cut = tokenize(tokenizer, ["a man", "a man is playing the guitar in the park"], 6)
    assert tokens.shape == (2, 2, 4) and cut == 1
    assert tokens[0, 0, 2:].tolist() == [-1, -1] and tokens[0, 1].tolist() == [0, 1, -1, -1]
    ref = tokenizer("a man is playing the guitar", add_special_tokens=False)["input_ids"][:4]
    assert tokens[1, 0].tolist() == ref
    assert torch.all(tokens[1, 1] >= 0)
