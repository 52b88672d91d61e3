"""Bad files found when they are met: skipped, listed in skipped.txt, counted, and a stop when too many.

Files read by the loader workers (``stream.py``, ``evalset.py``) are not checked up front (that
would mean decoding the whole set before training). A file that cannot be decoded is replaced in
its batch (``stream.py`` says by what), appended to ``OUT/skipped.txt`` with its reason and counted
in the result's ``skipped``. ``max_bad_fraction`` applies to the files seen so far, once at least
``MIN_SEEN`` of them (or all, for a smaller set) have been read: the run then stops with one line
(exit 2). ``folders.enforce`` is the same policy for a set decoded whole at the start.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fastclr.errors import UserError

MIN_SEEN = 1000  # files read before the fraction is trusted
_WARN_FIRST = 10  # warnings printed one per file; the rest only counted


class BadFiles:
    """The running tally of one run's unreadable files (main process only; workers report to it).

    Args:
        out_dir: where ``skipped.txt`` is appended (None: nowhere; only counted).
        max_fraction: the stop, as a fraction of the files seen.
        total: files in the listing (the minimum sample is min(MIN_SEEN, total)).
    """

    def __init__(self, out_dir: Path | None, max_fraction: float, total: int):
        self.out_dir, self.max_fraction, self.total = out_dir, max_fraction, total
        self.paths: dict[str, str] = {}
        self.reads = 0
        if out_dir is not None and (out_dir / "skipped.txt").is_file():  # a resumed run: keep what it found
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
            UserError: more than max_fraction of the files seen are bad (after the minimum sample).
        """
        self.reads += reads
        new = [(p, r) for p, r in dict(bad).items() if p not in self.paths]
        for p, r in new:
            self.paths[p] = r
            if len(self.paths) <= _WARN_FIRST:
                print(f"fastclr: warning: skipped {p}: {r} (listed in {self.where})", file=sys.stderr)
        if new and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / "skipped.txt"
            header = "" if path.is_file() else "# path\treason\n"
            with open(path, "a") as f:
                f.write(header + "".join(f"{p}\t{r}\n" for p, r in new))
        self.check()

    def check(self) -> None:
        seen = min(self.reads, self.total)
        if not self.paths or seen < min(MIN_SEEN, self.total):
            return
        fraction = len(self.paths) / max(seen, 1)
        if fraction > self.max_fraction:
            raise UserError(
                f"{len(self.paths)} of the {seen} image files read so far ({fraction:.1%}) could not be decoded, more "
                f"than max_bad_fraction={self.max_fraction:g}; see {self.where}, fix or remove those files, or raise "
                "it with --set max_bad_fraction=F"
            )

    def items(self) -> list[tuple[str, str]]:
        return list(self.paths.items())
