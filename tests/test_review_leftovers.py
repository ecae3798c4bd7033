"""The last stop's leftovers an owner would notice: files the box ignores or half-reads
without a word, and lines that leave out what the owner needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import running
from helpers import journal_lines

from device import config as config_mod
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


async def test_an_empty_configuration_file_is_said_at_the_start(tmp_path: Path) -> None:
    """A power cut while the owner saved config.toml leaves it zero bytes long: the box
    started on the defaults (their pins, voice and mode gone) without a word, and the
    owner looked everywhere but there. The journal names the file."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"")
    cfg = config_mod.load(path, key=False)
    with journal_lines("device.appliance") as journal:
        async with running(tmp_path, cfg):
            pass
    said = [r for r in journal.records if str(path) in r["MESSAGE"]]
    assert len(said) == 1, journal.records
    assert int(said[0]["PRIORITY"]) <= 4


async def test_a_configuration_of_comments_only_is_not_said(tmp_path: Path) -> None:
    """The defaults chosen on purpose (every line a comment) are no fault."""
    path = tmp_path / "config.toml"
    path.write_text("# all defaults\n")
    cfg = config_mod.load(path, key=False)
    with journal_lines("device.appliance") as journal:
        async with running(tmp_path, cfg):
            pass
    assert not [r for r in journal.records if str(path) in r["MESSAGE"]], journal.records
