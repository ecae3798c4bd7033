"""The state file (volume) across restarts: whatever is on the SD card, the box starts."""

from __future__ import annotations

from pathlib import Path

import pytest

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
