"""Phase a of benchmarks/gpu_check.sh (<= 4 minutes on one H100): the CUDA tests, then every command on a CUDA
checkpoint.

1. ``pytest -m cuda`` (sync checks, GPU vs CPU augmentation, GPU JPEG decode, kNN, resume, SyncBatchNorm under
   torchrun); its last lines go to ``$OUT/tests_tail.txt``.
2. A synthetic JPEG folder (``inputs.photo_folder``: 48-96 px images in nested class folders, a few large ones,
   and a flat folder), then, on the device: ``fastclr pretrain`` for 1 epoch (the default command: no
   ``--config``) with its kNN / linear evaluation, and on its checkpoint ``embed`` (the flat folder),
   ``knn``, ``linear`` (SGD and ``--features``), ``finetune`` and ``distill`` (of the fine-tuned model).
3. The text path offline: a tiny random BERT and a handmade STS-B folder (``tests/textkit.py``), ``fastclr
   pretrain`` on it for 3 steps, then ``fastclr sts`` on its checkpoint.

Commands that do not need each other's output run ``JOBS`` at a time. Writes ``$OUT/a.json``.
"""

from __future__ import annotations

import subprocess
import sys

from common import DEVICE, DRY, OUT, PY, ROOT, Phase, need
from inputs import photo_folder

BUDGET_S = 225  # of the 240 s the device call gives phase a (benchmarks/README.md, "On a lent GPU")
# each command's limit (on the GPU, in the dry run), cut to what is left of the budget: a command on the GPU
# takes about 10-30 s, mostly start-up; the CUDA tests about a minute (a hung test fails alone after 90 s)
LIMIT = {"tests": (150, 240), "pretrain": (120, 240), "command": (90, 240), "text": (120, 240)}
TEST_TIMEOUT_S = 90


def limit(kind: str) -> float:
    return LIMIT[kind][1 if DRY else 0]


def cuda_tests(phase: Phase) -> None:
    """``pytest -m cuda`` over the test files that mark CUDA tests. Not over all of tests/: the GPU image lacks
    optional packages that other test files import (optuna for tests/test_sweep.py), and one collection error
    stops pytest before any test runs; ``--continue-on-collection-errors`` keeps a broken file from hiding the
    others (the run then fails, naming it)."""
    grep = subprocess.run(
        ["grep", "-rlE", "--include=*.py", r"mark\.cuda", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    files = sorted(grep.stdout.split())
    phase.notes["cuda_test_files"] = files
    if not files:
        phase.skip("pytest -m cuda", "no test file under tests/ marks a CUDA test", ok=False)
        (OUT / "tests_tail.txt").write_text("no test file under tests/ marks a CUDA test\n")
        return
    argv = [PY, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "--continue-on-collection-errors", *files]
    env = {"PYTEST_TIMEOUT": str(TEST_TIMEOUT_S)}  # read by pytest-timeout where it is installed (the GPU image)
    entry = phase.run("pytest -m cuda", argv, limit("tests"), figure=pytest_figure, want_json=False, env=env)
    log = phase.dir / "logs" / "pytest_-m_cuda.out"
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    (OUT / "tests_tail.txt").write_text("\n".join(lines[-200:]) + "\n")
    if entry["rc"] == 5:  # pytest: no test collected
        entry.update(ok=False, error="no CUDA test was collected")


def pytest_figure(_result, stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return lines[-1].strip("= ") if lines else ""


def pretrain_figure(r: dict, _stdout: str) -> dict:
    e = r["eval"]
    return {
        "steps": r["steps"],
        "images_per_s": round(r["images_per_s"], 1),
        "knn_top1": e["knn_top1"],
        "random_init_knn_top1": e["random_init_knn_top1"],
        "linear_top1": e["linear_top1"],
        "random_init_linear_top1": e["random_init_linear_top1"],
    }


def checks(phase: Phase) -> int:
    phase.order = ["pytest -m cuda", "pretrain (1 epoch)", "embed (flat folder)", "knn", "linear (SGD, 2 epochs)"]
    phase.order += ["linear --features", "finetune (50% labels)", "distill", "text pretrain (3 steps)", "sts"]
    cuda_tests(phase)

    # a few hundred 48-96 px images on the GPU; a few dozen in the dry run
    classes, train, test = (4, 6, 3) if DRY else (8, 40, 10)
    photos = photo_folder(phase.dir / "photos", classes, train, test, large=2, flat=8 if DRY else 24)
    phase.notes["data"] = {k: v for k, v in photos.items() if k.endswith("images")}
    folder, run = photos["labelled"], phase.dir / "run"
    ckpt = str(run / "checkpoints" / "last.pt")
    dev = ["--device", DEVICE]
    batch = "16" if DRY else "64"

    text = phase.dir / "text"
    sys.path.insert(0, str(ROOT / "tests"))

    def image_pretrain():
        args = ["pretrain", "--data", folder, "--out", str(run), "--no-resume", "--epochs", "1", "--batch-size", batch]
        return phase.fastclr(
            "pretrain (1 epoch)", args + dev + ["--set", "workers=2"], limit("pretrain"), pretrain_figure
        )

    def text_pretrain():
        try:
            from textkit import stsb_folder, tiny_bert

            arch = "hf:" + str(tiny_bert(text / "bert"))
            sts = "stsb:" + str(stsb_folder(text / "stsb"))
        except ImportError as e:  # no Transformers: the text path cannot run (a failure on the GPU, which has it)
            phase.skip("text pretrain (3 steps)", f"{e} (pip install 'fastclr[text]')", ok=DRY)
            return phase.skip("sts", "no text checkpoint", ok=DRY)
        except Exception as e:  # the tiny model could not be written (a Transformers API change, say)
            phase.skip("text pretrain (3 steps)", f"tests/textkit.py: {type(e).__name__}: {e}", ok=False)
            return phase.skip("sts", "not run: no text checkpoint", ok=False)
        sets = ["hf_random_init=true", "max_length=16", "optimizer=adamw", "lr=1e-3", "lr_rule=none", "proj_dim=8"]
        sets += ["word_delete=0.1", "warmup_epochs=0", "eval_batch_size=8", "workers=0"]
        args = ["pretrain", "--data", sts, "--arch", arch, "--out", str(text / "run"), "--no-resume", "--epochs", "2"]
        args += ["--max-steps", "3", "--batch-size", "4", *dev, *(x for s in sets for x in ("--set", s))]
        entry = phase.fastclr(
            "text pretrain (3 steps)",
            args,
            limit("text"),
            lambda r, _: {"steps": r["steps"], "sts_spearman": r["eval"]["sts_spearman"]},
        )
        why = need(entry, "text pretrain")
        if why:
            return phase.skip("sts", why, ok=False)
        return phase.fastclr(
            "sts",
            ["sts", "--checkpoint", str(text / "run" / "checkpoints" / "last.pt"), "--split", "dev", *dev],
            limit("command"),
            lambda r, _: {"pairs": r["pairs"], "spearman": r["spearman"]},
        )

    results: dict[str, dict] = {}

    def keep(name, job):
        def go():
            results[name] = job()

        return go

    # the text run does not need the image checkpoint: it runs beside the image pretraining
    phase.side_by_side([keep("pretrain", image_pretrain), keep("text", text_pretrain)])

    why = need(results.get("pretrain"), "pretrain")
    c = limit("command")
    top1 = lambda r, _: {"top1": r["top1"]}  # noqa: E731
    commands = [
        (
            "embed (flat folder)",
            ["embed", "--checkpoint", ckpt, "--data", photos["flat"], "--out", str(phase.dir / "embed.npy")],
            lambda r, _: {"count": r["count"], "dim": r["dim"]},
        ),
        ("knn", ["knn", "--checkpoint", ckpt], lambda r, _: {f"top1 k={k}": v for k, v in r["knn"].items()}),
        ("linear (SGD, 2 epochs)", ["linear", "--checkpoint", ckpt, "--epochs", "2", "--batch-size", batch], top1),
        ("linear --features", ["linear", "--checkpoint", ckpt, "--features"], top1),
    ]
    ft = phase.dir / "finetune"

    def finetune_then_distill():
        args = ["finetune", "--checkpoint", ckpt, "--label-fraction", "0.5", "--epochs", "2", "--batch-size", batch]
        entry = phase.fastclr("finetune (50% labels)", args + ["--out", str(ft), *dev], c, top1)
        reason = need(entry, "finetune")
        if reason:
            return phase.skip("distill", reason, ok=False)
        args = ["distill", "--teacher", str(ft / "finetuned.pt"), "--data", folder, "--student-arch", "resnet_micro"]
        args += ["--epochs", "1", "--batch-size", batch, "--out", str(phase.dir / "distill"), *dev]
        return phase.fastclr("distill", args, c, lambda r, _: {k: r[k] for k in ("student_top1", "teacher_top1")})

    if why:
        for name, _, _ in commands:
            phase.skip(name, why, ok=False)
        phase.skip("finetune (50% labels)", why, ok=False)
        phase.skip("distill", why, ok=False)
    else:
        jobs = [finetune_then_distill]  # the longest chain first
        jobs += [lambda n=n, a=a, f=f: phase.fastclr(n, a + dev, c, f) for n, a, f in commands]
        phase.side_by_side(jobs)
    return phase.finish()


def main() -> int:
    with Phase("a", "CUDA tests, then every command on a CUDA checkpoint", BUDGET_S) as phase:
        return checks(phase)


if __name__ == "__main__":
    sys.exit(main())
