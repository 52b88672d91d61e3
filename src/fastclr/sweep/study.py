"""The optuna study of a sweep: its storage, its trial count, and trials whose process died.

Storage: ``DIR/study.journal`` (optuna's journal file: appends only, safe for several processes on
one file system) unless ``--storage`` names a database (``sqlite:///FILE``, ``postgresql://...``) or
another journal file. Every process that runs the same sweep command against the same storage
works on the same study: each takes the next trial until the study holds ``--trials`` of them.

A trial is owned by one process, recorded in its user attributes (host, pid, a heartbeat every
``BEAT_S`` seconds). A RUNNING trial whose owner is gone (its pid no longer exists on this host, or
its heartbeat is older than ``STALE_S``: a killed node) is taken over by the next process that
starts: the same trial number, the same parameters, the same run folder, so its pretraining
resumes from its newest checkpoint. A trial is thus never counted twice and never lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastclr import log as fastclr_log
from fastclr.errors import UserError

BEAT_S = 30.0  # heartbeat period of a running trial
STALE_S = 300.0  # a RUNNING trial without a heartbeat for this long is taken over (another host's kill)
FILE = "study.journal"


def log(msg: str) -> None:
    """A line of the sweep's own on stderr (the one logger, :mod:`fastclr.log`)."""
    fastclr_log.info(f"sweep: {msg}")


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError("fastclr sweep needs optuna: pip install 'fastclr[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage(out: Path, url: str | None) -> Any:
    """The study's storage: a journal file in ``out`` by default, or the database / journal ``url`` names."""
    optuna = import_optuna()
    if url and "://" in url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as e:  # noqa: BLE001 - sqlalchemy's many errors (driver, connection)
            raise UserError(f"--storage {url}: cannot open ({str(e).splitlines()[0][:120]})") from None
    path = Path(url) if url else out / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    journal = optuna.storages.journal
    return journal.JournalStorage(journal.JournalFileBackend(str(path)))


def me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def is_stale(trial: Any, now: float | None = None) -> bool:
    """A RUNNING trial whose owning process is gone (dead pid on this host, or no heartbeat for STALE_S)."""
    owner = trial.user_attrs.get("owner") or {}
    beat = float(trial.user_attrs.get("heartbeat", 0.0))
    if owner.get("host") == socket.gethostname() and owner.get("pid") != os.getpid():
        return not _alive(int(owner.get("pid", -1)))
    return (now or time.time()) - beat > STALE_S


@contextlib.contextmanager
def claim_lock(out: Path) -> Iterator[None]:
    """Serialises taking over and creating trials among the processes that share ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".claim.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def own(trial: Any) -> None:
    trial.set_user_attr("owner", me())
    trial.set_user_attr("heartbeat", time.time())


def next_trial(study: Any, out: Path, total: int, first: dict[str, Any] | None = None) -> Any | None:
    """The trial this process runs next: a stale one taken over, else a new one while the study has
    fewer than ``total`` trials; None when there is nothing left to do. ``first``: the parameters of
    trial 0 (the base config's), queued once while the study is empty."""
    optuna = import_optuna()
    running = optuna.trial.TrialState.RUNNING
    with claim_lock(out):
        trials = study.get_trials(deepcopy=False)
        if first and not trials:
            study.enqueue_trial(first, user_attrs={"baseline": True})
        for frozen in trials:
            if frozen.state == running and is_stale(frozen):
                trial = optuna.trial.Trial(study, frozen._trial_id)  # the same trial: number, params, folder
                own(trial)
                return trial
        if len(trials) >= total:
            return None
        trial = study.ask()
        own(trial)
        return trial


class Heartbeat:
    """Refreshes a trial's heartbeat every BEAT_S seconds from a daemon thread while training runs."""

    def __init__(self, trial: Any):
        self.trial, self.stop = trial, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(BEAT_S):
            with contextlib.suppress(Exception):  # a storage hiccup must not kill training
                self.trial.set_user_attr("heartbeat", time.time())

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
