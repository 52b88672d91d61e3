"""The one bad-file policy: the running tally of files met by loader workers, and a set read whole at the
start, write the same skipped.txt and stop with the same one line."""

import pytest

from fastclr.data import badfiles
from fastclr.errors import UserError


def test_bad_files_stop_only_after_the_minimum_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(badfiles, "MIN_SEEN", 100)
    bad = badfiles.BadFiles(tmp_path, 0.05, total=10_000)
    bad.met(50, [(f"/x/{i}.jpg", "empty file (0 bytes)") for i in range(4)])  # 8% of 50, but only 50 seen
    assert len(bad) == 4
    bad.met(50, [("/x/0.jpg", "empty file (0 bytes)")])  # met again: counted once; 4% of 100
    new = [(f"/x/new{i}.jpg", "not an image (unknown format)") for i in range(4)]
    with pytest.raises(UserError, match=r"8 of the 150 .*max_bad_fraction=0.05.*skipped.txt"):
        bad.met(50, new)
    lines = (tmp_path / "skipped.txt").read_text().splitlines()
    assert (
        lines[0].startswith("#") and len(lines) == 1 + 8 and lines[-1] == "/x/new3.jpg\tnot an image (unknown format)"
    )
    again = badfiles.BadFiles(tmp_path, 0.05, total=10_000)  # a resumed run keeps the list
    assert len(again) == 8


def test_small_sets_check_once_every_file_is_seen(tmp_path):
    bad = badfiles.BadFiles(None, 0.1, total=20)
    bad.met(19, [("/a.jpg", "x"), ("/b.jpg", "x"), ("/c.jpg", "x")])
    with pytest.raises(UserError, match="3 of the 20"):
        bad.met(1, [])


def test_a_set_read_whole_is_settled_at_once(tmp_path, capsys):
    bad = [(f"/x/{i}.jpg", "truncated") for i in range(3)]
    tally = badfiles.settle(bad, 10, 0.5, tmp_path)
    assert len(tally) == 3 and "skipped 3 of 10 files that could not be decoded" in capsys.readouterr().err
    assert (tmp_path / "skipped.txt").read_text().splitlines() == ["# path\treason", *(f"{p}\t{r}" for p, r in bad)]
    badfiles.settle(bad[:1], 10, 0.5, tmp_path)  # read whole again (a resumed run): the list is this read's
    assert (tmp_path / "skipped.txt").read_text().splitlines() == ["# path\treason", "/x/0.jpg\ttruncated"]
    with pytest.raises(UserError) as e:
        badfiles.settle(bad, 10, 0.2, tmp_path)
    assert str(e.value) == (
        f"3 of the 10 files read (30.0%) could not be decoded, more than max_bad_fraction=0.2; see "
        f"{tmp_path / 'skipped.txt'}, fix or remove those files, or raise it with --set max_bad_fraction=F"
    )
    assert len((tmp_path / "skipped.txt").read_text().splitlines()) == 4  # written before the stop
    with pytest.raises(UserError, match=r"^2 of the 4 texts read \(50.0%\) were unusable.*those texts"):
        badfiles.settle(bad[:2], 4, 0.25, None, what="texts", failed="were unusable")
    assert badfiles.settle([], 0, 0.0, tmp_path / "none") is not None and not (tmp_path / "none").exists()


def test_files_met_while_training_warn_on_every_rank(tmp_path, capsys, monkeypatch):
    """Each rank reads its own files, so each says what it met; a set read whole is said once, by rank 0."""
    monkeypatch.setenv("RANK", "1")
    badfiles.BadFiles(tmp_path, 1.0, total=10).met(2, [("/x/a.jpg", "empty file (0 bytes)")])
    assert "skipped /x/a.jpg: empty file (0 bytes)" in capsys.readouterr().err
    badfiles.settle([("/x/b.jpg", "truncated")], 10, 1.0, tmp_path)
    assert capsys.readouterr().err == ""
