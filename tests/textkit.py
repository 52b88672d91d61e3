"""A tiny random BERT (config, weights and a fast tokenizer) in a folder, and small text files, for the text tests."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

WORDS = (
    "a man is playing guitar the woman cooks food dog runs in park cat sleeps on sofa child reads book "
    "two people walk along beach bird flies over river car drives down street"
).split()
SENTENCES = [
    "A man is playing the guitar.",
    "The woman cooks food.",
    "A dog runs in the park.",
    "A cat sleeps on the sofa.",
    "A child reads a book.",
    "Two people walk along the beach.",
    "A bird flies over the river.",
    "A car drives down the street.",
    "The man is playing a guitar in the park.",
    "A woman reads a book on the sofa.",
    "The dog sleeps.",
    "Two cats walk in the street.",
]


def tiny_bert(folder: Path, weights: bool = True) -> Path:
    """Write a 2-layer, 32-wide BertModel with a WordPiece vocabulary of WORDS into ``folder``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "##s", "##ing"] + sorted(set(WORDS))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # Transformers 5 names the argument ``vocab``, 4.x ``vocab_file``
    key = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    BertTokenizerFast(**{key: str(folder / "vocab.txt")}, do_lower_case=True).save_pretrained(str(folder))
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    cfg.save_pretrained(str(folder))
    if weights:
        torch.manual_seed(0)
        BertModel(cfg).save_pretrained(str(folder), safe_serialization=True)
    return folder


def stsb_folder(folder: Path, offsets: tuple[int, ...] = (0, 1, 2)) -> Path:
    """A handmade STS-B-format folder: tab-separated genre, file, year, id, score, sentence 1, sentence 2.

    Pair (i, k): sentences i and i + k (``offsets``), gold score 5 - k; offset 0 pairs a sentence with itself
    (cosine 1 up to rounding: ties that float noise breaks), offsets 1-3 give distinct pairs only."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [(SENTENCES[i], SENTENCES[(i + k) % len(SENTENCES)], 5.0 - k) for k in offsets for i in range(8)]
    for split in ("train", "dev", "test"):
        lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s:.3f}\t{a}\t{b}" for i, (a, b, s) in enumerate(pairs)]
        (folder / f"sts-{split}.csv").write_text("\n".join(lines) + "\n")
    return folder
