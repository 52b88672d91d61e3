"""What the phases of ``benchmarks/gpu_check.sh`` share: their settings, commands run under a time limit, the JSON.

Every command runs as its own process group with a wall-clock limit (a hung command is killed with its
children: loader workers, torchrun ranks), its stdout and stderr go to ``$WORK/<phase>/logs/``, and one entry
per command goes into ``$OUT/<phase>.json``: the command line, exit code (124: killed at its limit), seconds,
its key figure and, when it failed, the last lines of its stderr. A failed command fails the phase; the
phase goes on with the commands that do not need its output.

Each phase has a budget (``PHASE_A_SECONDS`` ...): a command's limit is cut to what is left of it, and a
command that cannot start before it is spent fails unrun, so the phase writes its JSON before the device
call's ``timeout_s`` ends it (the shell script adds about 10 s of its own: gpu.txt, the wheels, the table).

The shell script sets the environment: ``OUT``, ``WORK``, ``GPU_CHECK_DEVICE`` (cuda, or cpu for the dry run),
``GPU_CHECK_DRY`` (1: CI-size settings), ``JOBS`` (commands run side by side where they are independent).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("OUT") or "/tmp/fastclr-gpu")
WORK = Path(os.environ.get("WORK") or "/tmp/fastclr-gpu-work")
DRY = os.environ.get("GPU_CHECK_DRY", "0") == "1"
DEVICE = os.environ.get("GPU_CHECK_DEVICE") or ("cpu" if DRY else "cuda")
JOBS = max(1, int(os.environ.get("JOBS") or (2 if DRY else 4)))
PY = sys.executable
ERROR_LINES = 15  # stderr lines of a failed command kept in the JSON
MIN_START_S = 5.0  # a command is not started with less of the phase's budget left

_lock = threading.Lock()


def say(message: str) -> None:
    """Print a line and append it to ``$OUT/log.txt``."""
    with _lock:
        print(message, flush=True)
        with open(OUT / "log.txt", "a") as f:
            f.write(message + "\n")


def last_json(text: str) -> dict | None:
    """The last line of ``text`` that is a JSON object (fastclr prints its result so), or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def shown(argv: list[str]) -> str:
    """A command line as a shell would take it, with ``$WORK`` and paths relative to the repository."""
    line = shlex.join(["python" if argv[0] == PY else argv[0], *argv[1:]])
    return line.replace(str(WORK), "$WORK").replace(str(ROOT) + "/", "")


def fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


class Phase:
    """One phase: a work folder of its own (emptied at the start), a list of command entries, ``$OUT/<name>.json``."""

    def __init__(self, name: str, title: str, budget_s: float):
        """``budget_s``: the phase's seconds on the GPU (``PHASE_<NAME>_SECONDS`` overrides it; a dry run has 900)."""
        self.name = name
        self.budget = float(os.environ.get(f"PHASE_{name.upper()}_SECONDS") or (900 if DRY else budget_s))
        self.title = title
        self.dir = WORK / name
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "logs").mkdir(parents=True)
        self.start = time.monotonic()
        self.entries: list[dict] = []
        self.notes: dict[str, Any] = {}
        self.order: list[str] = []  # the entries' order in the JSON (side-by-side commands end in any order)
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        say(f"[{name}] {title} on {DEVICE}{' (dry run: CI-size settings)' if DRY else ''}, budget {self.budget:.0f} s")

    def __enter__(self) -> Phase:
        return self

    def __exit__(self, kind, value, trace) -> bool:
        """A phase script that breaks (bad data, a bug here) still writes its JSON, with the traceback."""
        if value is not None and not isinstance(value, SystemExit):
            text = "".join(traceback.format_exception(kind, value, trace))
            self._add({"name": "phase script", "rc": None, "seconds": round(self.elapsed(), 1), "ok": False,
                       "error": f"{kind.__name__}: {value}", "stderr_tail": text[-3000:]})  # fmt: skip
            say(text.rstrip())
            self.finish()
        return False

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()

    def _add(self, entry: dict) -> dict:
        with _lock:
            self.entries.append(entry)
        return entry

    def run(
        self,
        name: str,
        argv: list[str],
        timeout: float,
        figure: Callable[[dict | None, str], Any] | None = None,
        want_json: bool = True,
        env: dict[str, str] | None = None,
    ) -> dict:
        """Run ``argv`` (killed with its process group after ``timeout`` s); return and record its entry.

        ``figure(result, stdout)`` gives the key figure from the command's last JSON line (``result``); an
        exception in it fails the entry. ``want_json``: a command that prints no JSON result line failed.
        """
        if self.left() < MIN_START_S:
            return self.skip(name, f"not started: the phase's {self.budget:.0f} s budget is spent", ok=False)
        timeout = min(timeout, self.left())
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        out_log, err_log = self.dir / "logs" / f"{slug}.out", self.dir / "logs" / f"{slug}.err"
        begin = time.monotonic()
        with open(out_log, "w") as out, open(err_log, "w") as err:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=err, cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True
            )
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                rc = 124
        seconds = time.monotonic() - begin
        stdout = out_log.read_text(errors="replace")
        result = last_json(stdout)
        entry: dict[str, Any] = {
            "name": name,
            "cmd": shown(argv),
            "rc": rc,
            "seconds": round(seconds, 1),
        }
        error = ""
        if rc == 124:
            error = f"killed at its limit of {timeout:.0f} s"
        elif rc != 0:
            error = f"exit {rc}"
        elif want_json and result is None:
            error = "no JSON result line on stdout"
        if not error and figure is not None:
            try:
                entry["figure"] = figure(result, stdout)
            except Exception as e:  # a result without the expected keys is a failure too
                error = f"unexpected result: {type(e).__name__}: {e}"
        if result is not None:
            entry["result"] = result
        entry["ok"] = not error
        if error:
            entry["error"] = error
            entry["stderr_tail"] = tail(err_log, ERROR_LINES) or tail(out_log, ERROR_LINES)  # stdout if stderr is empty
        key = entry.get("figure", "")
        if isinstance(key, dict):
            key = ", ".join(f"{k} {fmt(v)}" for k, v in key.items())
        say(f"[{self.name}] {name:24s} {'ok    ' if not error else 'FAILED'} {seconds:6.1f} s  {error or key}")
        if error and entry["stderr_tail"]:
            say("\n".join(f"[{self.name}]   | {line}" for line in entry["stderr_tail"].splitlines()))
        return self._add(entry)

    def fastclr(self, name: str, args: list[str], timeout: float, figure=None) -> dict:
        return self.run(name, [PY, "-m", "fastclr", *args], timeout, figure)

    def skip(self, name: str, reason: str, ok: bool = True) -> dict:
        """An entry for a command not run: ``ok`` False when that is a failure (its input failed, say)."""
        say(f"[{self.name}] {name:24s} {'skipped' if ok else 'FAILED '}         {reason}")
        entry = {"name": name, "rc": None, "seconds": 0.0, "ok": ok, "skipped": reason}
        if not ok:
            entry["error"] = reason
        return self._add(entry)

    def side_by_side(self, jobs: list[Callable[[], Any]]) -> None:
        """Run independent jobs, ``JOBS`` at a time."""
        with ThreadPoolExecutor(max_workers=min(JOBS, len(jobs))) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()

    def finish(self) -> int:
        """Write ``$OUT/<name>.json``; 0 when every command passed."""
        rank = {name: i for i, name in enumerate(self.order)}
        self.entries.sort(key=lambda e: rank.get(e["name"], len(rank)))
        ok = all(e["ok"] for e in self.entries)
        record = {
            "phase": self.name,
            "title": self.title,
            "device": DEVICE,
            "dry_run": DRY,
            "started": self.started,
            "seconds": round(self.elapsed(), 1),
            "budget_s": self.budget,
            "ok": ok,
            **self.notes,
            "commands": self.entries,
        }
        (OUT / f"{self.name}.json").write_text(json.dumps(record, indent=1) + "\n")
        failed = [e["name"] for e in self.entries if not e["ok"]]
        say(f"[{self.name}] {'ok' if ok else 'FAILED: ' + ', '.join(failed)} in {self.elapsed():.0f} s")
        return 0 if ok else 1


def _kill(proc: subprocess.Popen) -> None:
    """SIGTERM to the command's process group, SIGKILL 10 s later if it is still there."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def need(entry: dict | None, what: str) -> str | None:
    """None when ``entry`` passed, else the reason a command that needs its output is not run."""
    if entry is not None and entry["ok"]:
        return None
    return f"not run: {what} failed"
