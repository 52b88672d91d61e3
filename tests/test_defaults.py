"""Settings chosen from the data when no --config is given: small, medium and large image folders."""

import re

import pytest
from PIL import Image

from fastclr import config, defaults
from fastclr.data.chosen import preset_from_data


def from_data(flags: dict, sets: list[str]) -> config.Config:
    """What ``fastclr pretrain`` builds without --config: the values chosen from the data, flags and --set on top."""
    return config.build_config(None, flags, sets, base=preset_from_data(config.given(flags, sets)))


def _folder(root, side, count=6):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (side + i, side + 2 * i), (i * 20, 0, 0)).save(root / c / f"{i}.jpg")
    return root


@pytest.mark.parametrize(
    "side,size,stem,blur,strength",
    # the median short side (side + 2.5: the folder mixes sizes) within a band; 224 px is a GPU's; strength 0.5 on a CPU
    [(28, 30, True, False, 0.5), (64, 66, False, True, 0.5), (96, 96, False, True, 0.5), (300, 96, False, True, 0.5)],
)
def test_folder_defaults_by_image_size(tmp_path, capsys, side, size, stem, blur, strength):
    data = str(_folder(tmp_path / "imgs", side))
    cfg = from_data({"data": data, "device": "cpu"}, [])
    config.validate(cfg)
    assert (cfg.image_size, cfg.cifar_stem, cfg.blur, cfg.color_strength) == (size, stem, blur, strength)
    assert cfg.flip is True and cfg.min_scale == 0.08 and cfg.arch == "resnet_mini" and cfg.data == data
    assert cfg.budget_minutes == defaults.CPU_BUDGET_MINUTES  # the schedule comes from the budget
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"image_size={size}" in err[0] and "--set" in err[0] and "--config" in err[0]
    assert f"budget_minutes={defaults.CPU_BUDGET_MINUTES}" in err[0]


@pytest.mark.parametrize(
    "count,cpu,gpu", [(2, 2, 2), (12, 8, 8), (120, 64, 64), (256, 256, 256), (300, 256, 256), (5000, 256, 512)]
)
def test_the_batch_is_halved_until_the_images_fill_it(count, cpu, gpu):
    assert defaults.choose(64, gpu=False, count=count)["batch_size"] == cpu
    assert defaults.choose(64, gpu=True, count=count)["batch_size"] == gpu
    assert defaults.choose(64, gpu=False)["batch_size"] == 256  # not counted (shards without an index)


def test_a_folder_smaller_than_a_batch_trains(tmp_path, capsys):
    """120 photos used to stop with 'batch_size=256 is larger than the 120 training images'."""
    from fastclr.train import preflight

    data = str(_folder(tmp_path / "imgs", 64, count=60))
    cfg = from_data({"data": data, "device": "cpu"}, [])
    assert cfg.batch_size == 64 and "batch_size=64" in capsys.readouterr().err
    preflight.against_data(cfg, 120, 64, "imgs")  # the check that refused it
    assert from_data({"data": data, "device": "cpu"}, ["batch_size=100"]).batch_size == 100  # a choice of one's own


def test_flags_and_set_override_the_chosen_values(tmp_path, capsys):
    data = str(_folder(tmp_path / "imgs", 300))
    cfg = from_data({"data": data, "epochs": 3}, ["image_size=64", "data=" + data])
    assert cfg.image_size == 64 and cfg.epochs == 3 and cfg.blur is True
    assert cfg.budget_minutes == 0  # --epochs replaces the budget
    cfg = from_data({"data": data}, ["epochs=5", "budget_minutes=2"])
    assert cfg.epochs == 5 and cfg.budget_minutes == 2  # both given: the budget, bounded by the epochs


@pytest.mark.parametrize(
    ("side", "cpu", "gpu"), [(8, 16, 16), (32, 32, 32), (64, 64, 64), (128, 96, 128), (500, 96, 224)]
)
def test_image_size_is_the_images_own_side_within_a_band(side, cpu, gpu):
    assert defaults.image_size(side, gpu=False) == cpu and defaults.image_size(side, gpu=True) == gpu


def test_gpu_gets_a_standard_resnet():
    assert defaults.choose(300, gpu=True)["arch"] == "resnet50"
    assert defaults.choose(300, gpu=True)["image_size"] == 224 and defaults.choose(300, gpu=False)["image_size"] == 96
    assert defaults.choose(96, gpu=True)["arch"] == defaults.choose(32, gpu=True)["arch"] == "resnet18"
    assert {defaults.band(s) for s in (40, 41, 128, 129)} == {"small", "medium", "large"}


def test_digits_stays_the_default_and_presets_win(tmp_path, capsys):
    assert from_data({}, []).data == "digits"
    assert from_data({}, []).image_size == 8  # the digits preset
    data = str(_folder(tmp_path / "imgs", 300))
    cfg = config.build_config("cifar10_cpu", {"data": data}, [])  # a preset: the data is not looked at
    assert cfg.image_size == 32 and capsys.readouterr().err == ""


@pytest.mark.parametrize("indexed", [True, False])
def test_shards_get_the_defaults_of_their_images(tmp_path, capsys, indexed):
    """Shards of 300 px photos train at the folder's size (96 px on a CPU), whether the side comes
    from the index (``fastclr prepare``) or from the headers of the first samples (a plain glob)."""
    pytest.importorskip("webdataset")
    from fastclr.data.write.shards import write_shards

    write_shards(str(_folder(tmp_path / "imgs", 300)), tmp_path / "sh", shard_size=4)
    if not indexed:
        (tmp_path / "sh" / "index.json").unlink()
    spec = f"shards:{tmp_path / 'sh'}" if indexed else f"shards:{tmp_path / 'sh' / '*.tar'}"
    cfg = from_data({"data": spec, "device": "cpu"}, [])
    assert (cfg.image_size, cfg.cifar_stem, cfg.blur, cfg.data) == (96, False, True, spec)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"large images \(median short side 302(\.5)? px of 12 sampled\)", err[0])
