"""The Python API gives what the commands give: load_encoder on every checkpoint and export kind equals
``fastclr embed``, embed on a spec, files, a tensor and PIL images agrees, Augment equals the training
views, pretrain() equals ``fastclr pretrain``; and every public name is documented and typed."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import runpy
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastclr
from conftest import ROOT
from evalkit import brute_force_knn_top1, cli, digit_folder, last_json, make_checkpoint
from fastclr.data import datasets
from fastclr.data.loaders.base import RawImages
from fastclr.errors import UserError
from fastclr.eval import embed as embed_files
from fastclr.eval.probe import linear_probe
from fastclr.train.step import augment_config, view_recipe

# --- the public surface -------------------------------------------------------------------------


def undocumented(obj: object, name: str) -> list[str]:
    """What a public name lacks: a docstring, or a type hint on a parameter or return (methods included)."""
    problems = []
    own = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__  # not inherited from a base
    if not (own or "").strip() or own.startswith(f"{name}("):  # a dataclass's generated signature is no docstring
        problems.append(f"{name}: no docstring")
    if inspect.isclass(obj):
        members = [("__init__", obj.__init__)] if "__init__" in vars(obj) else []
        members += [(m, f) for m, f in vars(obj).items() if not m.startswith("_") and inspect.isfunction(f)]
        members += [(m, f.__func__) for m, f in vars(obj).items() if isinstance(f, (classmethod, staticmethod))]
        for member, fn in members:
            if member != "__init__" and not (inspect.getdoc(fn) or "").strip():
                problems.append(f"{name}.{member}: no docstring")
            problems += missing_hints(fn, f"{name}.{member}", need_return=member != "__init__")
    elif callable(obj):
        problems += missing_hints(obj, name, need_return=True)
    return problems


def missing_hints(fn: typing.Callable, name: str, need_return: bool) -> list[str]:
    hints = typing.get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]
    out = [f"{name}({p.name}): no type hint" for p in params if p.name not in hints]
    if need_return and "return" not in hints:
        out.append(f"{name}: no return type")
    return out


def test_all_lists_exactly_the_public_names():
    assert len(fastclr.__all__) == len(set(fastclr.__all__))
    public = {n for n, v in vars(fastclr).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)} | {
        "__version__"
    }
    assert set(fastclr.__all__) == public
    for old in ("nt_xent", "nt_logistic", "margin_triplet", "LARS", "SimCLR"):  # the names before the API
        assert old in fastclr.__all__


def test_every_public_name_has_a_docstring_and_type_hints():
    problems = [p for n in fastclr.__all__ if n != "__version__" for p in undocumented(getattr(fastclr, n), n)]
    assert not problems, problems


def test_the_documentation_check_catches_what_is_missing():
    def bare(x, y: int):
        return x

    def typed(x: int) -> int:
        """Documented."""
        return x

    class Thing:
        """Documented."""

        def method(self, a: int):
            return a

    @dataclasses.dataclass
    class Settings:
        size: int = 3

    assert undocumented(bare, "bare") == ["bare: no docstring", "bare(x): no type hint", "bare: no return type"]
    assert undocumented(typed, "typed") == []
    assert undocumented(Thing, "Thing") == ["Thing.method: no docstring", "Thing.method: no return type"]
    assert undocumented(Settings, "Settings") == ["Settings: no docstring"]


@pytest.mark.slow
def test_api_reference_builds_without_warnings(tmp_path):
    build = runpy.run_path(str(ROOT / "docs" / "build_api.py"), run_name="not_main")["build"]
    assert build(tmp_path / "api") == []
    page = (tmp_path / "api" / "fastclr.html").read_text()
    assert all(f'id="{name}"' in page for name in fastclr.__all__)
    (tmp_path / "broken.py").write_text('"""A module whose __all__ names what it lacks."""\n__all__ = ["missing"]\n')
    sys.path.insert(0, str(tmp_path))
    try:
        assert build(tmp_path / "broken_docs", ["broken"])  # the check can fail: pdoc warns, the build reports it
    finally:
        sys.path.remove(str(tmp_path))


# --- load_encoder and embed ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A labelled digit folder (8x8 PNGs) and one file of every kind: pretraining checkpoint,
    fine-tuned and distilled checkpoints, safetensors and torchvision exports."""
    root = tmp_path_factory.mktemp("api")
    folder = digit_folder(root / "data", 5, 2)
    ckpt, _ = make_checkpoint(root / "last.pt", str(folder))
    r18, _ = make_checkpoint(root / "r18.pt", str(folder), arch="resnet18")
    last_json(cli("finetune", "--checkpoint", str(ckpt), "--label-fraction", "1", "--epochs", "1", "--out", str(root)))
    last_json(cli("distill", "--teacher", str(root / "finetuned.pt"), "--data", str(folder), "--epochs", "1"))
    last_json(cli("export", "--checkpoint", str(ckpt), "--format", "safetensors", "--out", str(root / "e.safetensors")))
    last_json(cli("export", "--checkpoint", str(r18), "--format", "torchvision", "--out", str(root / "tv.pt")))
    files = {
        "pretrain": ckpt,
        "finetune": root / "finetuned.pt",
        "distill": root / "distill_resnet_mini" / "student.pt",
        "safetensors": root / "e.safetensors",
        "torchvision": root / "tv.pt",
    }
    return folder, files, {"safetensors": ckpt, "torchvision": r18}


def cli_embed(checkpoint, data, out, *flags) -> tuple[np.ndarray, list[str]]:
    last_json(cli("embed", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out), *flags))
    return embed_files.read(out)


@pytest.mark.parametrize("kind", ["pretrain", "finetune", "distill", "safetensors", "torchvision"])
def test_load_encoder_gives_the_features_of_fastclr_embed(runs, kind, tmp_path):
    folder, files, exported_from = runs
    encoder = fastclr.load_encoder(files[kind])
    assert isinstance(encoder, fastclr.Encoder) and not encoder.training and encoder.image_size == 8
    want, want_ids = cli_embed(exported_from.get(kind, files[kind]), folder, tmp_path / "e.npy", "--batch-size", "16")
    got, ids = fastclr.embed(encoder, str(folder), batch_size=16)
    assert ids == want_ids and len(ids) == 50
    np.testing.assert_array_equal(got, want)


def test_projection_equals_fastclr_embed_and_exports_have_no_head(runs, tmp_path):
    folder, files, _ = runs
    want, _ = cli_embed(files["pretrain"], folder, tmp_path / "z.npy", "--projection", "--split", "test")
    got, ids = fastclr.embed(fastclr.load_encoder(files["pretrain"]), str(folder), projection=True, split="test")
    assert got.shape == (20, 128) and ids[0].endswith("test/0/000.png")
    np.testing.assert_array_equal(got, want)
    with pytest.raises(UserError, match="no projection head"):
        fastclr.embed(fastclr.load_encoder(files["safetensors"]), str(folder), projection=True)


def test_spec_files_tensor_and_pil_images_agree(runs):
    folder, files, _ = runs
    encoder = fastclr.load_encoder(files["pretrain"])
    from_spec, ids = fastclr.embed(encoder, str(folder), batch_size=7)
    paths = [f for f in ids]
    from_files, file_ids = fastclr.embed(encoder, paths, batch_size=16)
    pixels = datasets.load(str(folder), 8).pretrain.images  # uint8 [50, 3, 8, 8]
    from_tensor, tensor_ids = fastclr.embed(encoder, pixels, batch_size=50)
    from_pil, _ = fastclr.embed(encoder, (Image.open(p) for p in paths), batch_size=9)
    assert file_ids == ids and tensor_ids == [str(i) for i in range(50)]
    for other in (from_files, from_tensor, from_pil):
        np.testing.assert_allclose(other, from_spec, rtol=0, atol=1e-5)  # batch sizes differ: float rounding only
    with torch.no_grad():
        direct = encoder(encoder.preprocess([Image.open(p) for p in paths[:3]]))
    np.testing.assert_allclose(direct.numpy(), from_spec[:3], atol=1e-5)


def test_preprocess_of_a_pil_image_equals_the_file_decoded_as_a_data_set(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 24), (17, 33)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    pre = fastclr.Preprocess(16)
    decoded = datasets.load(str(tmp_path), 16).train  # a flat folder: decoded at 16 px
    assert decoded is None
    from_files = pre.pixels(paths)
    from_pil = pre.pixels([Image.open(p) for p in paths])
    assert from_files.shape == (2, 3, 16, 16) and torch.equal(from_pil, from_files)
    x = pre(Image.open(paths[0]).convert("L"))  # grey becomes RGB; one image gives a batch of one
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32


def test_bad_files_are_skipped_with_their_ids_left_out(runs, tmp_path):
    folder, files, _ = runs
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    good = sorted((folder / "test" / "3").glob("*.png"))
    h, ids = fastclr.embed(fastclr.load_encoder(files["pretrain"]), [good[0], bad, good[1]])
    assert ids == [str(good[0]), str(good[1])] and h.shape[0] == 2


def test_load_encoder_refuses_pickled_code_and_strangers(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "fastclr", "model": Payload()}))
    with pytest.raises(UserError, match="refused"):
        fastclr.load_encoder(evil)
    with pytest.raises(UserError):
        fastclr.load_model(evil)
    with pytest.raises(UserError, match="onnxruntime"):
        fastclr.load_encoder(tmp_path / "e.onnx")


def test_load_model_is_the_checkpoints_network(runs):
    _, files, _ = runs
    model = fastclr.load_model(files["pretrain"])
    encoder = fastclr.load_encoder(files["pretrain"])
    assert isinstance(model, fastclr.SimCLR) and not model.training
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        h, z = model(x)
        assert torch.equal(encoder(x), h) and torch.equal(encoder.project(h), z)


def test_knn_and_linear_eval_equal_the_commands(runs):
    """The API and the commands agree, and both equal what the encoder's embeddings give: kNN by the
    hand-written vote, the L-BFGS probe fitted on those embeddings (same accuracies, same chosen L2)."""
    folder, files, _ = runs
    ckpt = str(files["pretrain"])
    encoder = fastclr.load_encoder(ckpt)
    split = {}
    for name in ("train", "test"):
        f, ids = fastclr.embed(encoder, str(folder), split=name)
        split[name] = (torch.from_numpy(f), torch.tensor([int(Path(i).parent.name) for i in ids]))  # folder = digit
    assert [len(split[n][0]) for n in ("train", "test")] == [50, 20]
    knn = fastclr.knn_eval(ckpt, k=(5, 20))
    assert knn == last_json(cli("knn", "--checkpoint", ckpt, "--k", "5,20"))
    for k in (5, 20):
        want = brute_force_knn_top1(*split["train"], *split["test"], num_classes=10, k=k, temperature=0.1)
        assert knn["knn"][str(k)] == pytest.approx(want, abs=1e-6), k
    lin = fastclr.linear_eval(ckpt, features=True)
    assert lin == last_json(cli("linear", "--checkpoint", ckpt, "--features"))
    want = linear_probe(*split["train"], *split["test"], 10, seed=0)
    assert (lin["top1"], lin["top5"], lin["l2"]) == (
        pytest.approx(want["top1"], abs=1e-6),
        pytest.approx(want["top5"], abs=1e-6),
        pytest.approx(want["l2"]),
    )


# --- Augment ------------------------------------------------------------------------------------


def test_augment_equals_the_training_views_for_the_same_keys():
    cfg = fastclr.load_config("cifar10_cpu", image_size=16, seed=3, blur=True)
    images = torch.randint(0, 256, (6, 3, 20, 24), dtype=torch.uint8)
    index = torch.tensor([4, 9, 0, 17, 2, 30])
    want = RawImages(index, images).views(view_recipe(cfg), 5)
    aug = fastclr.Augment.from_config(cfg)
    assert torch.equal(aug.views(images, index, epoch=5, count=cfg.views), want)
    assert torch.equal(aug(images, index, epoch=5, view=1), want[6:])
    assert not torch.equal(aug(images, index, epoch=6), want[:6])  # a new epoch draws new views


def test_augment_defaults_and_presets():
    assert fastclr.Augment().config == augment_config(fastclr.Config(image_size=32))
    digits, preset = fastclr.Augment.from_config("digits"), fastclr.load_config("digits")
    assert (digits.config.size, digits.config.flip, digits.config.min_scale) == (preset.image_size, False, 0.3)
    x = fastclr.Augment(8)(torch.zeros(3, 1, 8, 8, dtype=torch.uint8))
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32


# --- configs and pretraining --------------------------------------------------------------------


def test_load_config_applies_overrides_and_refuses_unknown_keys():
    cfg = fastclr.load_config("digits", epochs=3, temperature="0.3")
    assert (cfg.epochs, cfg.temperature, cfg.batch_size) == (3, 0.3, 128)
    with pytest.raises(UserError, match="unknown config key"):
        fastclr.load_config("digits", epochz=3)
    with pytest.raises(UserError, match="out of range"):
        fastclr.load_config("digits", temperature=-1.0)


def test_pretrain_equals_the_command(tmp_path):
    flags = {"epochs": 1, "max_steps": 3, "batch_size": 64, "device": "cpu"}
    sets = ["eval=false", "precision=fp32", "log_every=1"]
    args = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()] + [a for s in sets for a in ("--set", s)]
    want = last_json(cli("pretrain", "--out", str(tmp_path / "cli"), *args))
    got = fastclr.pretrain(out=str(tmp_path / "api"), eval=False, precision="fp32", log_every=1, **flags)
    for result in (want, got):  # everything but the folder and the timings
        for key in [k for k in result if k == "out" or k.endswith("images_per_s")]:
            del result[key]
    assert got == want and got["steps"] == 3
    a = torch.load(tmp_path / "cli" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "api" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = fastclr.pretrain(fastclr.load_config(str(tmp_path / "api" / "config.yaml")), max_steps=3)
    assert again["steps"] == 3  # a finished run resumes and returns at once
