"""The log index: what the log view reads through. Checked against splitlines() on awkward files."""

from __future__ import annotations

import os

import pytest

from console.core.log_index import LogIndex


def lines_of(path) -> list[str]:
    return path.read_bytes().decode().splitlines()


@pytest.mark.parametrize("text", ["", "one\n", "one", "a\nb\nc\n", "a\nb\nc", "\n\n\n", "x\n" * 5000,
                                  "".join(f"line {i}\n" for i in range(3000)) + "partial"])
def test_index_matches_splitlines_tail_first_then_complete(tmp_path, text):
    path = tmp_path / "t.log"
    path.write_text(text)
    index = LogIndex(path, tail_lines=100)
    index.open()
    want = lines_of(path)
    tail = index.lines(0, index.count)
    assert tail == want[-len(tail):] if tail else want == []
    assert index.count <= max(100, 0) + 1 or index.complete
    steps = 0
    while not index.index_more(budget=1000):
        steps += 1
    assert index.lines(0, index.count) == want
    assert index.count == len(want)


def test_follow_growth_partial_lines_truncation_and_rotation(tmp_path):
    path = tmp_path / "t.log"
    path.write_text("a\nb\npar")
    index = LogIndex(path)
    index.open()
    assert index.lines(0, 10) == ["a", "b", "par"]
    assert index.refresh() == "same"
    with open(path, "a") as f:
        f.write("tial\nc\n")
    assert index.refresh() == "grew"
    assert index.lines(0, 10) == ["a", "b", "partial", "c"]
    with open(path, "a") as f:
        f.write("d\n")
    assert index.refresh() == "grew"
    assert index.lines(0, 10) == ["a", "b", "partial", "c", "d"]
    path.write_text("new\n")  # truncated in place (same inode)
    assert index.refresh() == "truncated"
    assert index.lines(0, 10) == ["new"]
    os.rename(path, tmp_path / "t.log.1")  # rotated
    assert index.refresh() == "same"  # nothing new there yet: keep what we show
    path.write_text("after rotation\n")
    assert index.refresh() == "rotated"
    assert index.lines(0, 10) == ["after rotation"]


def test_growth_while_the_head_is_still_being_indexed(tmp_path):
    path = tmp_path / "t.log"
    path.write_text("".join(f"{i}\n" for i in range(1000)))
    index = LogIndex(path, tail_lines=10)
    index.open()
    assert not index.complete and index.lines(0, 10)[-1] == "999"
    with open(path, "a") as f:
        f.write("1000\n1001\n")
    index.refresh()
    index.index_all()
    assert index.lines(0, index.count) == [str(i) for i in range(1002)]


def test_matching_lines(tmp_path):
    path = tmp_path / "t.log"
    path.write_text("x master up\ny clone down\nz MASTER refused\nmaster master twice\n")
    index = LogIndex(path)
    index.open()
    assert list(index.matching("master")) == [0, 2, 3]
    assert list(index.matching("master", ignore_case=False)) == [0, 3]
    assert list(index.matching(r"^y", regex=True)) == [1]
    assert list(index.matching("")) == []


def test_missing_file(tmp_path):
    index = LogIndex(tmp_path / "none.log")
    index.open()
    assert index.count == 0 and index.complete and index.line(0) == ""
    (tmp_path / "none.log").write_text("born\n")
    assert index.refresh() == "rotated"
    assert index.lines(0, 5) == ["born"]
