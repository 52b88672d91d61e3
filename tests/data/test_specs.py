"""The one grammar of --data: text specs against text encoders, checked wherever a config is checked."""

import dataclasses

import pytest

import fastclr
from fastclr import config
from fastclr.data import specs
from fastclr.errors import UserError


@pytest.mark.parametrize(
    "data,arch,error",
    [
        ("digits", "resnet18", None),
        ("text:a.txt", "hf:minilm", None),
        ("stsb:DIR", "hf:/models/bert", None),
        ("digits", "hf:minilm", "arch='hf:minilm' is a text encoder but data='digits' is not text"),
        ("/photos", "hf:minilm", "is a text encoder"),
        ("text:a.txt", "resnet18", "data='text:a.txt' is text but arch='resnet18' is an image encoder"),
        ("stsb:DIR", "vit_tiny", "is an image encoder: use --arch hf:minilm or hf:PATH"),
    ],
)
def test_text_data_goes_with_text_encoders(data, arch, error):
    cfg = dataclasses.replace(config.Config(), data=data, arch=arch)
    config.validate(cfg)  # each value alone is fine: the pairing is the data layer's to judge
    if error is None:
        specs.check_modality(cfg)
        return
    with pytest.raises(UserError, match=error):
        specs.check_modality(cfg)
    with pytest.raises(UserError, match=error):  # the API's checked config includes it
        fastclr.load_config("digits", data=data, arch=arch)


def test_text_parts_and_is_text():
    assert specs.is_text("text:x.csv") and specs.is_text("stsb:d") and not specs.is_text("cifar10:text")
    assert specs.text_parts("text:~/x.txt")[0] == "text"
    with pytest.raises(UserError, match="give a path after 'stsb:'"):
        specs.text_parts("stsb:")
