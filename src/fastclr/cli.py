"""The ``fastclr`` command line: a thin layer that parses flags and calls the library.

Every command prints its results as the LAST line on stdout, one JSON object; progress and logs
go to stderr. A user's mistake exits 2 with one line and no traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import UserError

DATA_HELP = (
    "data spec: 'digits' (scikit-learn's 8x8 digits, no download; the default), or a folder: class "
    "sub-folders are labels, train/ with test/ (or val/) sub-folders give the evaluation split, a flat "
    "folder of images is unlabeled (pretraining only)"
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage dumps."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def add_pretrain(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="SimCLR pretraining, then kNN and linear evaluation against a random-init encoder",
        description="Pretrain an encoder with SimCLR. Runs on scikit-learn's digits with no arguments. "
        "For 32x32 images use --config cifar10_resnet18 (GPU) or cifar10_cpu (a laptop CPU).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="preset name (digits, cifar10_resnet18, cifar10_cpu, stl10_resnet18, imagenet_resnet50) or a YAML file")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--out", help="run folder: config.yaml, metrics.jsonl, checkpoints/last.pt, result.json")
    p.add_argument("--arch", help="encoder: resnet_mini (CPU demos), resnet18/34/50/101/152, wide_resnet50_2, or any torchvision model")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size", help="global batch B (the learning-rate rules use it)")
    p.add_argument("--max-steps", type=int, dest="max_steps", help="stop after S steps (the schedule still spans --epochs)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default: cuda if available), cpu, cuda")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set any config field, e.g. --set temperature=0.2 (repeatable)")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args) -> dict:
    from .config import build_config
    from .train import pretrain

    flags = {k: getattr(args, k) for k in ("data", "out", "arch", "epochs", "batch_size", "max_steps", "seed", "device")}
    cfg = build_config(args.config, flags, args.set)
    if args.out is None and not any(s.startswith("out=") for s in args.set):
        from pathlib import Path

        cfg.out = str(Path("runs") / Path(args.config or "digits").stem)  # one folder per preset
    return pretrain(cfg)


def build_parser() -> Parser:
    parser = Parser(prog="fastclr", description="SimCLR: contrastive self-supervised learning of image representations.")
    parser.add_argument("--version", action="version", version=f"fastclr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    add_pretrain(sub)
    return parser


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
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
