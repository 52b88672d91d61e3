"""The loaders' contract: each yields one batch type, and each batch type finishes its own views, equal to
the reference draws of ``method/augment.py`` and ``method/text_views.py`` for the same keys."""

import pytest
import torch
from PIL import Image

from fastclr.data.loaders.base import CroppedViews, FinishedViews, RawImages, Tokens, ViewRecipe, finish_views
from fastclr.data.loaders.files import crop_views
from fastclr.data.loaders.tiers import build_loader
from fastclr.data.sets import FileSet, ImageSet
from fastclr.data.text import TextSet
from fastclr.method import augment
from fastclr.method.augment import AugmentConfig
from fastclr.method.text_views import TextViewConfig, make_text_views
from makeimages import pixels

CFG = AugmentConfig(size=16, min_scale=0.2, flip=True, color_strength=0.8, blur=True)
CPU = torch.device("cpu")


def images(n=6, side=20):
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("channels_last", [False, True])
def test_raw_images_draw_each_view_as_augment_does(channels_last):
    x, index = images(), torch.tensor([7, 3, 11, 0, 5, 2])
    recipe = ViewRecipe(seed=4, views=3, aug=CFG, channels_last=channels_last)
    got = RawImages(index, x).views(recipe, epoch=2)
    want = torch.cat([augment.augment(x, index, seed=4, epoch=2, view=v, cfg=CFG) for v in range(3)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert RawImages(index, x).small_views(recipe, 2) is None  # multi-crop off


def test_cropped_views_add_the_pixel_ops_and_finished_ones_are_kept():
    x, index = images(side=40), torch.arange(6) + 20
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in x]
    crops = crop_views(pil, index, seed=4, epoch=1, views=2, cfg=CFG)
    recipe = ViewRecipe(seed=4, views=2, aug=CFG)
    cropped = CroppedViews(index, crops).views(recipe, 1)
    assert cropped.shape == (12, 3, 16, 16) and cropped.dtype == torch.float32
    assert torch.equal(cropped, finish_views(crops, index, seed=4, epoch=1, cfg=CFG))
    assert FinishedViews(index, cropped).views(recipe, 1) is cropped  # nothing left to do
    raw = RawImages(index, x).views(recipe, 1)  # the same keys drawn on whole images: rounding apart
    assert ((cropped - raw) * torch.tensor(augment.STD).view(1, 3, 1, 1)).abs().mean() < 0.02


def test_tokens_draw_text_views_and_no_small_crops():
    tokens = torch.stack([torch.arange(12).repeat(2, 1) for _ in range(4)])  # [4, 2, L]: ids, word numbers
    index, text = torch.tensor([9, 1, 4, 2]), TextViewConfig(word_delete=0.3, span_crop=0.0, word_reorder=0.5)
    recipe = ViewRecipe(seed=2, views=2, aug=text, small_crops=2)
    got = Tokens(index, tokens).views(recipe, 3)
    assert torch.equal(got, make_text_views(tokens, index, 2, 3, 2, text))
    assert Tokens(index, tokens).small_views(recipe, 3) is None
    with pytest.raises(TypeError):
        recipe.image  # noqa: B018 -- a text recipe has no image settings


def test_each_source_gets_the_loader_of_its_batch_type(tmp_path):
    x = images(8)
    memory = build_loader(ImageSet(x, None, [str(i) for i in range(8)]), 4, 0, CPU, views=2, aug=CFG)
    assert {type(b) for b in memory.epoch(0)} == {RawImages}
    tokens = torch.zeros(8, 2, 5, dtype=torch.int64)
    text = build_loader(TextSet(tokens, [""] * 8, None, [""] * 8), 4, 0, CPU, views=2, aug=TextViewConfig(0, 0, 0))
    assert {type(b) for b in text.epoch(0)} == {Tokens}
    files = []
    for i in range(8):
        Image.fromarray(pixels(i, 30, 24)).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    for workers, kind in ((0, CroppedViews), (2, FinishedViews)):  # CPU workers finish the views themselves
        loader = build_loader(FileSet(files, side=24), 4, 0, CPU, views=2, aug=CFG, workers=workers)
        batches = list(loader.epoch(0))
        assert [type(b) for b in batches] == [kind, kind] and all(len(b) == 4 for b in batches)
    with pytest.raises(TypeError, match="AugmentConfig"):
        build_loader(FileSet(files, side=24), 4, 0, CPU, views=2, aug=TextViewConfig(0, 0, 0))
