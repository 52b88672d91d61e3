"""Data specs, the one grammar of ``--data``: what each form names, parsed in one place.

Images: ``digits``, ``cifar10[:ROOT]``, ``cifar100[:ROOT]``, ``stl10[:ROOT]``, ``prepared:DIR``, ``shards:SPEC``,
a folder, or a ``.csv`` / ``.txt`` list (:func:`parse`). Texts: ``text:FILE`` and ``stsb:DIR``
(:func:`text_parts`), read by :mod:`fastclr.data.text`.
"""

from __future__ import annotations

from pathlib import Path

from fastclr import config
from fastclr.config import Config
from fastclr.data.sources import standard
from fastclr.errors import UserError

LIST_SUFFIXES = (".csv", ".txt")
TEXT_KINDS = ("text", "stsb")

SPEC_HELP = (  # every form of a data spec, as `fastclr pretrain --help` shows it
    "data spec: 'digits' (scikit-learn's 8x8 digits, no download; the default); cifar10[:ROOT], cifar100[:ROOT], "
    "stl10[:ROOT] (torchvision's format; ROOT defaults to $FASTCLR_DATA or ~/.cache/fastclr/data; add --download "
    "to fetch them); prepared:DIR (a cache from fastclr prepare: no decoding, the fastest); shards:SPEC (tar "
    "shards for clusters and object stores: a folder from fastclr prepare --format shards, a brace pattern "
    "train-{000000..001023}.tar, a glob or pipe:COMMAND URLs; pip install 'fastclr[shards]'); a folder: class "
    "sub-folders are labels, train/ with test/ (or val/) sub-folders give the evaluation split, a flat "
    "folder of images is unlabeled (pretraining only); or a .csv/.txt list of 'path[,label]' lines. Files that "
    "cannot be decoded are skipped and listed in OUT/skipped.txt (more than max_bad_fraction=0.01 stops the run). "
    "Text (with --arch hf:minilm or hf:PATH): text:FILE (.txt one text a line; .csv/.tsv/.jsonl with the column "
    "text_column, optional label), stsb:DIR (STS Benchmark: pretrain on sts-train + sts-dev sentences, STS-test "
    "Spearman at the end); empty, binary or over-long lines are skipped the same way"
)


def is_text(spec: str) -> bool:
    """Whether ``spec`` names texts (``text:FILE``, ``stsb:DIR``) rather than images."""
    return spec.partition(":")[0] in TEXT_KINDS


def check_modality(cfg: Config) -> None:
    """Text encoders (``arch hf:...``) go with text data, image encoders with images: UserError otherwise."""
    if config.is_text(cfg) and not is_text(cfg.data):
        raise UserError(
            f"arch={cfg.arch!r} is a text encoder but data={cfg.data!r} is not text: use --data text:FILE or stsb:DIR"
        )
    if is_text(cfg.data) and not config.is_text(cfg):
        raise UserError(
            f"data={cfg.data!r} is text but arch={cfg.arch!r} is an image encoder: use --arch hf:minilm or hf:PATH"
        )


def text_parts(spec: str) -> tuple[str, Path]:
    """A text spec as (kind, path): ``text:FILE`` -> ("text", FILE), ``stsb:DIR`` -> ("stsb", DIR)."""
    kind, _, rest = spec.partition(":")
    if kind not in TEXT_KINDS:
        raise UserError(f"--data {spec!r}: not a text spec; use text:FILE or stsb:DIR")
    if not rest:
        raise UserError(f"--data {spec!r}: give a path after '{kind}:' (text:FILE or stsb:DIR)")
    return kind, Path(rest).expanduser()


def parse(spec: str) -> tuple[str, Path | None]:
    """Split a spec into its kind and path: ('digits', None), ('cifar10', ROOT), ('prepared', DIR),
    ('folder', PATH) or ('list', PATH). Raises UserError for anything else."""
    name, _, rest = spec.partition(":")
    if spec == "digits":
        return "digits", None
    if name in standard.STANDARD:
        return name, Path(rest).expanduser() if rest else standard.default_root()
    if spec == "imagenet":  # the imagenet_resnet50 preset's placeholder: the data set has no public download
        raise UserError(
            "--data imagenet: ImageNet has no automatic download; point --data at your copy, a folder with train/ "
            "and val/ class sub-folders (e.g. --data /data/imagenet)"
        )
    if name == "prepared":
        if not rest:
            raise UserError("--data prepared:DIR needs the folder that `fastclr prepare` wrote")
        return "prepared", Path(rest).expanduser()
    if name == "shards":
        if not rest:
            raise UserError("--data shards:SPEC needs a folder of .tar shards, a brace pattern, a glob or pipe: URLs")
        return "shards", Path(rest)  # the pattern as given: shards.load_shards reads it
    path = Path(spec).expanduser()
    if path.is_dir():
        return "folder", path
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return "list", path
    if path.is_file():
        raise UserError(
            f"--data {spec}: a single file is not a data set; give a folder of images or a .csv/.txt list of "
            "'path[,label]' lines"
        )
    raise UserError(
        f"--data {spec!r}: not a known data set or an existing folder or list; use digits, cifar10[:ROOT], "
        "cifar100[:ROOT], stl10[:ROOT], prepared:DIR, shards:SPEC, a folder of images or a .csv/.txt list"
    )
