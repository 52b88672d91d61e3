"""The one bad-file policy: a file (or text line) that cannot be used is skipped with a warning, listed
with its reason in ``OUT/skipped.txt``, counted in the result's ``skipped``, and the run stops (exit 2)
once more than ``max_bad_fraction`` of those read are bad.

Two ways to meet them, one tally (:class:`BadFiles`):

- a set read whole at the start (folders decoded into memory, ``fastclr prepare``, text files):
  :func:`settle` takes all its bad files at once, says how many, and applies the fraction to the whole set;
- files read by the loader workers while training (``loaders/files.py``, ``loaders/shards.py``,
  ``evalset.py``), which are not checked up front (that would mean decoding the whole set before
  training): each batch reports what it met (the file is replaced in its batch, ``loaders/files.py`` says
  by what), and the fraction applies to the files read so far, once at least ``MIN_SEEN`` of them (or all,
  for a smaller set) have been read.
"""

from __future__ import annotations

from pathlib import Path

from fastclr import log
from fastclr.errors import UserError

MIN_SEEN = 1000  # files read before the fraction is trusted
_WARN_FIRST = 10  # warnings printed one per file; the rest only counted


class BadFiles:
    """The running tally of one run's unusable files (main process only; workers report to it).

    Args:
        out_dir: where ``skipped.txt`` is written (None: nowhere; only counted).
        max_fraction: the stop, as a fraction of the files read.
        total: files in the listing (the minimum sample is min(MIN_SEEN, total)).
        what, failed: the words of the messages ("texts", "were unusable" for text data).
        whole: the set is read whole at the start, alike on every rank: a new ``skipped.txt`` (its bad files
            are all listed again) and warnings from rank 0 only. Otherwise each rank warns of the files it
            met, and a resumed run keeps the list the interrupted one wrote.
    """

    def __init__(
        self,
        out_dir: Path | None,
        max_fraction: float,
        total: int,
        *,
        what: str = "files",
        failed: str = "could not be decoded",
        whole: bool = False,
    ):
        self.out_dir, self.max_fraction, self.total = out_dir, max_fraction, total
        self.what, self.failed, self.whole, self._fresh = what, failed, whole, whole
        self.paths: dict[str, str] = {}
        self.reads = 0
        if out_dir is not None and not whole and (out_dir / "skipped.txt").is_file():
            for line in (out_dir / "skipped.txt").read_text().splitlines()[1:]:
                path, _, reason = line.partition("\t")
                self.paths[path] = reason

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def where(self) -> str:
        return str(self.out_dir / "skipped.txt") if self.out_dir is not None else "skipped.txt"

    def met(self, reads: int, bad: list[tuple[str, str]]) -> None:
        """Record ``reads`` files read (good and bad) and the (path, reason) of the bad ones; may stop.

        Raises:
            UserError: more than max_fraction of the files read are bad (after the minimum sample).
        """
        self.reads += reads
        self.record(bad)
        self.check()

    def record(self, bad: list[tuple[str, str]]) -> None:
        """Warn about the first few new bad files and append every new one to ``skipped.txt``."""
        new = [(p, r) for p, r in dict(bad).items() if p not in self.paths]
        for p, r in new:
            self.paths[p] = r
            if len(self.paths) <= _WARN_FIRST:
                log.warn(f"skipped {p}: {r} (listed in {self.where})", every_rank=not self.whole)
        if new and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / "skipped.txt"
            header = "" if path.is_file() and not self._fresh else "# path\treason\n"
            with open(path, "w" if self._fresh else "a") as f:
                f.write(header + "".join(f"{p}\t{r}\n" for p, r in new))
            self._fresh = False

    def check(self) -> None:
        """Stop when too many of the files read are bad (once the minimum sample has been read)."""
        seen = min(self.reads, self.total)
        if not self.paths or seen < min(MIN_SEEN, self.total):
            return
        fraction = len(self.paths) / max(seen, 1)
        if fraction > self.max_fraction:
            so_far = " so far" if seen < self.total else ""
            raise UserError(
                f"{len(self.paths)} of the {seen} {self.what} read{so_far} ({fraction:.1%}) {self.failed}, more than "
                f"max_bad_fraction={self.max_fraction:g}; see {self.where}, fix or remove those {self.what}, or raise "
                "it with --set max_bad_fraction=F"
            )

    def items(self) -> list[tuple[str, str]]:
        return list(self.paths.items())


def settle(
    skipped: list[tuple[str, str]],
    total: int,
    max_fraction: float,
    out_dir: Path | None,
    *,
    what: str = "files",
    failed: str = "could not be decoded",
) -> BadFiles:
    """The policy for a set read whole at the start: all its bad files at once (a new ``skipped.txt``), one
    line saying how many, and the stop when more than ``max_fraction`` of the ``total`` are bad.

    Raises:
        UserError: too many bad files (after writing skipped.txt).
    """
    bad = BadFiles(out_dir, max_fraction, total, what=what, failed=failed, whole=True)
    if not skipped:
        return bad
    bad.reads = total
    bad.record(skipped)
    log.warn(f"skipped {len(bad)} of {total} {what} that {failed} (list: {bad.where})")
    bad.check()
    return bad
