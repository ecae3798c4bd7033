"""The state file (volume) across restarts: whatever is on the SD card, the box starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.appliance import _saved_volume
from device.persist import StateFile


@pytest.mark.parametrize(
    "content",
    [b"", b"\0" * 64, b'{"volume": 0.', b"\xff\xfe", b"[1, 2]", b"[" * 100_000,
     b'{"volume": 0.5, "pad": "' + b"x" * 300_000 + b'"}'],
    ids=["empty", "zeros", "cut short", "not utf-8", "not an object", "nested too deep",
         "too big"],
)
def test_a_state_file_the_box_cannot_use_is_ignored_and_rewritten(
    tmp_path: Path, content: bytes
) -> None:
    """A power cut mid-write, a damaged card: every start used to crash on the deepest one
    (RecursionError), until the start limit and for as long as the retry timer ran."""
    path = tmp_path / "state.json"
    path.write_bytes(content)
    state = StateFile(path)
    assert state.load() == {}
    state.save(volume=0.5)
    assert state.load() == {"volume": 0.5}


def test_a_volume_set_to_what_it_is_writes_nothing_to_the_card(tmp_path: Path) -> None:
    """The model calls set_volume as often as it likes ("louder", "a bit louder", the same
    again): each call wrote and renamed the state file, the same bytes on the SD card."""
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.3)
    written = (tmp_path / "state.json").stat()
    for _ in range(3):
        state.save(volume=0.3)
    again = (tmp_path / "state.json").stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    state.save(volume=0.4)
    assert state.load() == {"volume": 0.4}


@pytest.mark.parametrize(
    "saved",
    ['NaN', 'Infinity', '-Infinity', '1e400', "1" + "0" * 100, "-0.5", "1.5", '"loud"',
     "true", "null", "[0.5]"],
)  # fmt: skip
def test_a_saved_volume_that_is_no_volume_falls_back_to_the_configured_one(
    tmp_path: Path, saved: str
) -> None:
    """The state file is edited by hand, or damaged: the box starts at its configured
    volume, not silent, not clipping, not crashing."""
    state = tmp_path / "state.json"
    state.write_text(f'{{"volume": {saved}}}')
    assert _saved_volume(StateFile(state), 0.7) == 0.7
