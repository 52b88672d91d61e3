"""The ``fastclr`` command line: a thin layer that parses flags and calls the library.

Every command prints its results as the LAST line on stdout, one JSON object; progress and logs
go to stderr. A user's mistake exits 2 with one line and no traceback.

The library's defaults are the only defaults: a flag left out is left out of the call (argparse's
``SUPPRESS``), and ``--help`` shows the default read from the library function's signature. Each
command names its function with a lazy import (:class:`Command`), so go-to-definition follows it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastclr import __version__
from fastclr.config import FIELDS, describe_fields, flag_fields, preset_names
from fastclr.data.specs import SPEC_HELP
from fastclr.errors import UserError
from fastclr.sweep.objective import HELP as METRIC_HELP

DEVICE_HELP = "auto (default: the checkpoint's setting), cpu, cuda"
CKPT_HELP = "a fastclr checkpoint: OUT/checkpoints/last.pt of `fastclr pretrain` (or OUT/finetuned.pt of finetune)"
EVAL_SPEC_HELP = "data spec (default: the data the checkpoint was trained on); needs class labels and a test split"
PRETRAIN_FLAGS = flag_fields()  # the config fields with a flag of their own (config.py, ``flag=HELP``)
_TYPES = {"int": int, "float": float, "str": str}


@dataclass
class Command:
    """A command's library function (:func:`target`, imported when the command runs) and the flags it takes:
    each parameter gets the flag of its name (``renamed``: parameter -> flag for the others)."""

    name: str
    renamed: dict[str, str] = field(default_factory=dict)

    def __call__(self, args: argparse.Namespace) -> Any:
        given = {param: getattr(args, dest) for param, dest in self.renamed.items() if hasattr(args, dest)}
        return call_with_flags(target(self.name), args, **given)

    def default(self, dest: str) -> Any:
        """The library's default of the parameter flag ``dest`` feeds (``inspect.Parameter.empty``: none)."""
        param = {flag: p for p, flag in self.renamed.items()}.get(dest, dest)
        found = inspect.signature(target(self.name)).parameters.get(param)
        return inspect.Parameter.empty if found is None else found.default

    def description(self) -> str:
        """The library function's docstring up to its Args: the command's --help."""
        text = inspect.cleandoc(target(self.name).__doc__ or "").split("\nArgs:")[0].split("\nReturns:")[0]
        return re.sub(r"^``fastclr [a-z-]+``: ", "", text).replace("``", "").replace(":func:", "")

    def param_help(self, dest: str) -> str:
        """The entry of the parameter ``dest`` feeds under Args: in the library function's docstring ('' if none)."""
        param = {flag: p for p, flag in self.renamed.items()}.get(dest, dest)
        doc = inspect.cleandoc(target(self.name).__doc__ or "")
        found = re.search(rf"^    {param}: (.*(?:\n {{8}}.*)*)", doc, re.M)  # the entry and its indented lines
        return " ".join(found.group(1).split()).replace("%", "%%") if found else ""


def target(name: str) -> Callable[..., Any]:
    """The library function behind command ``name``, imported only when a command runs (or shows --help)."""
    from fastclr.api import index as api_index
    from fastclr.api import serve
    from fastclr.data.write import command as write
    from fastclr.eval import dedup, distill, embed, evaluate, explain, export, finetune, index, linear, report, sts
    from fastclr.sweep import run as sweep

    commands: dict[str, Callable[..., Any]] = {
        "knn": evaluate.run_knn, "linear": linear.command, "finetune": finetune.command, "distill": distill.command,
        "embed": embed.command, "export": export.command, "sts": sts.sts_command, "report": report.build,
        "show-augment": report.run_show_augment, "sweep": sweep.command, "dedup": dedup.command,
        "serve": serve.serve, "prepare": write.command, "index": index.command, "search": api_index.search_command,
        "explain": explain.command,
    }  # fmt: skip
    return commands[name]


def call_with_flags(function: Callable[..., Any], args: argparse.Namespace, **given: Any) -> Any:
    """``function`` called with ``given`` and, for each other parameter, the flag of the same name when it was
    given; a parameter no given flag names keeps the library's default. The library checks the values."""
    for name in inspect.signature(function).parameters:
        if name not in given and hasattr(args, name):
            given[name] = getattr(args, name)
    return function(**given)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage dumps, and the library's defaults in --help."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")

    def _get_formatter(self) -> argparse.HelpFormatter:
        return Help(self.prog, self.get_default("func"))

    def format_help(self) -> str:
        command = self.get_default("func")
        if isinstance(command, Command) and self.description is None:
            self.description = command.description()  # the library's docstring, read only for --help
            for action in self._actions:  # a flag declared without help: its parameter's entry under Args:
                action.help = action.help or command.param_help(action.dest) or None
        return super().format_help()


class Help(argparse.RawDescriptionHelpFormatter):
    """Adds "(default: X)" to a flag's help, X read from the command's library function."""

    def __init__(self, prog: str, command: Any = None):
        super().__init__(prog)
        self.command = command if isinstance(command, Command) else None

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if self.command is None or not action.option_strings or "default" in text or action.required:
            return text
        value = self.command.default(action.dest)
        if value is inspect.Parameter.empty or value is None or isinstance(value, bool):
            return text
        shown = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
        return f"{text} (default: {shown.replace('%', '%%')})".strip()


def command(sub, name: str, help: str, run: Any = None, flags: str = "", **kw) -> argparse.ArgumentParser:
    """A sub-command whose flags default to "not given"; ``run`` is its :class:`Command` or function. ``flags``, in one
    line: ``out!`` required, ``+x`` a switch, ``#k`` int, ``%t`` float, ``*q`` one or more, ``INDEX`` positional."""
    p = sub.add_parser(name, help=help, argument_default=argparse.SUPPRESS, **kw)
    if run is not None:
        p.set_defaults(func=run)
    for word in flags.split():
        f, kind = word.strip("!+#%*"), {"+": "store_true", "#": int, "%": float, "*": "+"}.get(word[0])
        how = {"action": kind} if kind == "store_true" else {"nargs": kind} if kind == "+" else {"type": kind}
        names = [f.lower()] if f.isupper() else ["-" * min(len(f), 2) + f]
        p.add_argument(*names, **({"metavar": f} if f.isupper() else {"required": word.endswith("!")}), **how)
    return p


def int_list(text: str) -> list[int]:
    """``20,200`` -> [20, 200] (an argparse type)."""
    try:
        return sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers separated by commas, e.g. 20,200") from None


def _set_flag(p, help: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def _sgd_flags(p, epochs_help: str, lr_help: str) -> None:
    """The supervised recipe's schedule: --epochs, --batch-size, --lr."""
    p.add_argument("--epochs", type=int, help=epochs_help)
    p.add_argument("--batch-size", type=int, help="images a step")
    p.add_argument("--lr", type=float, help=lr_help)


def _eval_flags(p, data_help: str = EVAL_SPEC_HELP, random_init: bool = True) -> None:
    """Flags every evaluation command shares."""
    p.add_argument("--checkpoint", required=True, help=CKPT_HELP)
    p.add_argument("--data", default=None, help=data_help)
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--seed", type=int, help="seed of the command's random draws")
    if random_init:
        p.add_argument("--random-init", action="store_true", help="evaluate the same architecture with random "
                       "weights: the baseline to compare against")  # fmt: skip


def add_pretrain(sub) -> None:
    p = command(sub, "pretrain", "SimCLR pretraining, then kNN and linear evaluation against a random-init encoder",
                run_pretrain, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Pretrain an encoder with SimCLR. Runs on scikit-learn's digits with no arguments. "
                "For 32x32 images use --config cifar10_resnet18 (GPU) or cifar10_cpu (a laptop CPU).",
                epilog="config keys for --set KEY=VALUE (defaults before the preset; src/fastclr/config.py explains "
                "each):\n" + describe_fields())  # fmt: skip
    p.add_argument("--config", help=f"preset name ({', '.join(preset_names())}) or a YAML file")
    for name, help in PRETRAIN_FLAGS.items():  # the config fields with a flag of their own, help beside them
        kind = str(FIELDS[name].type)
        kw: dict[str, Any] = {"action": "store_const", "const": True} if kind == "bool" else {"type": _TYPES[kind]}
        p.add_argument("--" + name.replace("_", "-"), help=SPEC_HELP if name == "data" else help, **kw)
    _set_flag(p, "set any config field, e.g. --set temperature=0.2 (repeatable)")
    p.add_argument("--no-resume", action="store_true", help="start over at step 0, deleting OUT/checkpoints (default: "
                   "continue from OUT/checkpoints/last.pt with the run's saved config.yaml as the base, so `fastclr "
                   "pretrain --out DIR` resumes a stopped run)")  # fmt: skip


def run_pretrain(args: argparse.Namespace) -> dict:
    """The flags given override the config (those left out leave it as it is)."""
    from fastclr import pipeline

    flags = {k: getattr(args, k, None) for k in PRETRAIN_FLAGS}
    return pipeline.run(getattr(args, "config", None), flags, args.set, resume=not getattr(args, "no_resume", False))


def add_prepare(sub) -> None:
    p = command(sub, "prepare", "decode a data set once into a memory-mapped cache (train on it with --data "
                "prepared:DIR)", Command("prepare"))  # fmt: skip
    p.add_argument("spec", help=SPEC_HELP)
    p.add_argument("--size", type=int, help="side of the cached images (the training image_size); --format shards: "
                   "re-encode with the short side at SIZE (default: keep the image bytes)")  # fmt: skip
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--format", choices=("cache", "shards"), help="cache: decoded uint8 arrays (--data prepared:DIR, "
                   "one machine); shards: tar shards of encoded images (--data shards:DIR, clusters)")  # fmt: skip
    p.add_argument("--shard-size", type=int, help="samples per shard (--format shards)")
    p.add_argument("--download", action="store_true", help="download a missing cifar10/cifar100/stl10 (needs internet)")
    p.add_argument("--workers", type=int, help="CPU processes that decode (0: this process)")
    p.add_argument("--max-bad-fraction", type=float, help="stop when more of the files than this cannot be decoded")


def add_knn(sub) -> None:
    p = command(sub, "knn", "weighted kNN accuracy of h (L2-normalised), train split -> test split", Command("knn"))
    _eval_flags(p)
    p.add_argument("--k", type=int_list, dest="ks", metavar="K[,K...]", help="neighbour counts, comma separated")
    p.add_argument("--temperature", type=float, help="T of the vote weights exp(sim / T)")
    p.add_argument("--batch-size", type=int, help="test images compared with the bank at a time (bounds memory)")


def add_linear(sub) -> None:
    p = command(sub, "linear", "linear evaluation: a linear classifier on the frozen encoder's h (paper protocol), "
                "top-1/top-5", Command("linear"))  # fmt: skip
    _eval_flags(p)
    p.add_argument("--features", action="store_true", help="L-BFGS on cached features instead of SGD on views")
    _sgd_flags(p, "SGD epochs (paper: 90; 10-30 is enough for a CPU check)", "base learning rate, scaled by B/256, "
               "cosine-decayed")  # fmt: skip
    p.add_argument("--min-scale", type=float, help="smallest training crop area fraction (for 8x8 digits use 0.3)")
    p.add_argument("--no-flip", action="store_false", dest="flip", help="no horizontal flip in training (digits)")
    p.add_argument("--crop-proportion", type=float, dest="crop", help="centre-crop proportion of the test view "
                   "(default: 0.875 from 96 px up, else 1: the whole image)")  # fmt: skip


def add_finetune(sub) -> None:
    p = command(sub, "finetune", "semi-supervised fine-tuning of the whole encoder on a class-balanced fraction of the "
                "labels", Command("finetune", {"fraction": "label_fraction"}))  # fmt: skip
    _eval_flags(p)
    p.add_argument("--label-fraction", type=float, required=True, help="fraction of the train labels, in (0, 1]: "
                   "0.01 and 0.1 in the papers")  # fmt: skip
    p.add_argument("--from-head-layer", type=int, help="0: classify h (v1); 1: classify the head's first layer "
                   "(v2, best with head_layers=3)")  # fmt: skip
    _sgd_flags(p, "default 60 for fractions up to 1%%, else 30 (the paper's)", "base learning rate, scaled by B/256")
    p.add_argument("--init", help="start the encoder from this torchvision/timm state dict or .safetensors file")
    p.add_argument("--out", help="folder for labels.txt and finetuned.pt (default: RUN/finetune_F by the checkpoint)")


def add_distill(sub) -> None:
    p = command(sub, "distill", "SimCLRv2 distillation: a (smaller) student learns a fine-tuned teacher's softened "
                "predictions", Command("distill", {"teacher_path": "teacher"}))  # fmt: skip
    p.add_argument("--teacher", required=True, help="OUT/finetuned.pt written by `fastclr finetune`")
    p.add_argument("--data", required=True, help=SPEC_HELP)
    p.add_argument("--student-arch", help="student encoder (default: the teacher's); resnet_micro is half of "
                   "resnet_mini")  # fmt: skip
    p.add_argument("--temperature", type=float, help="tau of both softmaxes (SimCLRv2: 1.0)")
    p.add_argument("--alpha", type=float, help="weight of the labelled cross-entropy, in [0, 1] (0: distillation only)")
    _sgd_flags(p, "SGD epochs", "base learning rate, scaled by B/256")
    p.add_argument("--device", help="auto (default: the teacher's setting), cpu, cuda")
    p.add_argument("--seed", type=int, help="seed of the student's weights and the data order")
    p.add_argument("--out", help="folder for student.pt (default: next to the teacher)")


def add_embed(sub) -> None:
    p = command(sub, "embed", "embeddings (h, or z with --projection) of every image, in dataset order, with their "
                "ids", Command("embed"))  # fmt: skip
    _eval_flags(p, data_help=SPEC_HELP, random_init=False)
    p.add_argument("--out", required=True, help="FILE.npy (+ FILE.ids.json) or FILE.parquet (needs pyarrow)")
    p.add_argument("--projection", action="store_true", help="z = g(h) instead of h")
    p.add_argument("--split", choices=("pretrain", "train", "test"), help="which images: every pretraining image "
                   "(the default), or the labelled train / test split")  # fmt: skip
    p.add_argument("--batch-size", type=int, help="images embedded at a time")


def add_export(sub) -> None:
    p = command(sub, "export", "export the encoder alone: safetensors, torchvision state dict, ONNX or TorchScript",
                Command("export", {"fmt": "format"}))  # fmt: skip
    p.add_argument("--checkpoint", required=True, help=CKPT_HELP)
    p.add_argument("--format", required=True, choices=("safetensors", "torchvision", "onnx", "torchscript"),
                   help="torchvision: loads into the plain constructor with strict=True (ResNets)")  # fmt: skip
    p.add_argument("--out", required=True, help="output file (FILE.json describes the expected input)")


def add_sts(sub) -> None:
    p = command(sub, "sts", "STS-B Spearman x 100 of a text encoder: cosine of the two sentences' h against the gold "
                "score", Command("sts"))  # fmt: skip
    p.add_argument("--checkpoint", default=None, help="a fastclr checkpoint of a text run (OUT/checkpoints/last.pt)")
    p.add_argument("--arch", help="instead of --checkpoint: an encoder's own weights, hf:minilm or hf:PATH")
    p.add_argument("--data", default=None, help="stsb:DIR, the STS Benchmark folder (default: the checkpoint's data)")
    p.add_argument("--split", choices=("train", "dev", "test"), help="the pairs to score")
    p.add_argument("--random-init", action="store_true", help="the same architecture, random weights")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--seed", type=int, help="the random draw of --random-init")
    p.add_argument("--batch-size", type=int, help="sentences encoded at a time")


def add_report(sub) -> None:
    p = command(sub, "report", "one self-contained HTML page of a run: curves, accuracy over time, view pairs, "
                "embedding map, retrievals", Command("report", {"method": "map"}))  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a fastclr pretrain run")
    p.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--map", choices=("pca", "tsne"), help="2-D map of the test representations: pca (instant) or "
                   "tsne (slower, clusters clearer)")  # fmt: skip
    p.add_argument("--device", help="device for the representations (cpu is enough for a report)")


def add_show_augment(sub) -> None:
    p = command(sub, "show-augment", "draw augmented view pairs of a data set to a PNG (check a preset before "
                "training)", Command("show-augment", {"preset": "config", "sets": "set"}))  # fmt: skip
    p.add_argument("--data", default="digits", help=SPEC_HELP)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--config", default=None, help="preset name or YAML file whose augmentation to use (default: "
                   "the one pretrain would choose for --data)")  # fmt: skip
    p.add_argument("--count", type=int, help="images to show (1 to 64)")
    p.add_argument("--epoch", type=int, help="the epoch whose random draws to show")
    _set_flag(p, "set any config field, e.g. --set color_strength=1.0")


def add_sweep(sub) -> None:
    p = command(sub, "sweep", "hyper-parameter search with optuna: each trial a pretraining run, pruned on its "
                "metric's monitor", Command("sweep", {"sets": "set"}))  # fmt: skip
    p.add_argument("--config", help="base preset name or YAML file (default: digits)")
    p.add_argument("--data", help=SPEC_HELP)
    p.add_argument("--space", required=True, help="YAML file: config field -> range, choices or fixed value")
    p.add_argument("--trials", type=int, required=True, help="trials the study should hold (rerun with more to extend)")
    p.add_argument("--metric", help=METRIC_HELP)
    p.add_argument("--pruner", help="median, halving (successive halving) or none; prunes on the kNN monitor "
                   "(knn_every) for knn_top1 / linear_top1, the label-free monitor (quality_every) for the label-free "
                   "metrics; never for probe_knn or train_knn")  # fmt: skip
    p.add_argument("--sampler", help="tpe (optuna's TPE) or grid (every point of a space of choices once, no "
                   "baseline trial)")  # fmt: skip
    p.add_argument("--out", help="study folder")
    p.add_argument("--storage", help="a database URL (sqlite:///FILE, postgresql://...) or journal file shared by "
                   "workers")  # fmt: skip
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="do not spend trial 0 on the base "
                   "config's own values (by default it does, to compare the best with it)")  # fmt: skip
    p.add_argument("--study-name", help="default: the name of --out")
    p.add_argument("--sampler-seed", type=int, help="seed of the TPE sampler (reproducible search)")
    _set_flag(p, "set a config field for every trial (repeatable)")


def add_search(sub) -> None:  # each flag's help: its parameter's entry under Args: in the library's docstring
    command(sub, "index", "embed a data set into a similarity-search index (faiss), or --update it", Command("index"),
            "checkpoint data out! +projection +update #batch-size device")  # fmt: skip
    command(sub, "search", "nearest indexed images of files, folders or ids", Command("search"), "INDEX *query! #k")
    command(sub, "dedup", "groups of near-duplicate images of an index (CSV)", Command("dedup"), "INDEX %threshold out")
    command(sub, "explain", "which regions of image A make it similar to image B, as a PNG", Command("explain"),
            "checkpoint! A B out! method +projection device")  # fmt: skip
    command(sub, "serve", "HTTP embedding and search service with a web page", Command("serve"),
            "INDEX host #port token %max-upload-mb")  # fmt: skip


COMMANDS = (add_pretrain, add_knn, add_linear, add_finetune, add_distill, add_embed, add_export, add_sts, add_prepare,
            add_report, add_show_augment, add_sweep, add_search)  # fmt: skip


def build_parser() -> Parser:
    parser = Parser(prog="fastclr", description="SimCLR: contrastive self-supervised learning of image "
                    "representations.")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"fastclr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in COMMANDS:
        add(sub)
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
