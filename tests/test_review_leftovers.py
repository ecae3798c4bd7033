"""The last stop's leftovers an owner would notice: files the box ignores or half-reads
without a word, and lines that leave out what the owner needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import journal_lines

from device.persist import StateFile


@pytest.mark.parametrize("content", ["[0.5]", '"loud"', "0.5", "null", "true"])
def test_a_state_file_of_json_that_is_no_object_is_said_once_when_ignored(
    tmp_path: Path, content: str
) -> None:
    """`[0.5]` in state.json (edited by hand, written by another program): the box started
    at its configured volume, the owner's kept volume gone, and the journal said nothing,
    where a damaged file says "ignoring ... damaged"."""
    path = tmp_path / "state.json"
    path.write_text(content)
    state = StateFile(path)
    with journal_lines("device.persist") as journal:
        assert state.load() == {}
        assert state.load() == {}
    said = [r for r in journal.records if str(path) in r["MESSAGE"]]
    assert len(said) == 1, journal.records
    assert int(said[0]["PRIORITY"]) <= 4  # a warning, as for a damaged file
