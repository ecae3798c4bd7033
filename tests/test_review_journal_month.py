"""A month of journal: what the service sends reaches a journal line as one printable line,
and a line a failure comes back to every day or so is still found by its fields."""

from __future__ import annotations

import asyncio

from helpers import journal_lines
from test_read_ahead import Speaker as SwitchedSpeaker
from test_server_fuzz import audio_part, serve, server_content

from device.live.hooks import Hooks
from device.live.turn import WireTurn

#: What a service (or whatever answers in its name: a proxy, a captive portal) may put in a
#: text the box quotes: a line break, a terminal's escape sequence, a bidi override.
ODD = "audio/x\n\x1b[2J\u202eevil"


def journal_of(frames: list[bytes]) -> list[dict[str, object]]:
    """The journal's records of one connection over which the service sent `frames`."""
    hooks = Hooks(1, lambda event: None, lambda item, t: None, lambda h: None, SwitchedSpeaker())
    with journal_lines("device") as journal:
        asyncio.run(serve(list(frames), hooks, WireTurn()).run())
    return journal.records


def printable(records: list[dict[str, object]]) -> list[str]:
    """Each record's message and LIVE_* fields that would split a line or act on a terminal."""
    return [
        f"{key}={value!r}"
        for record in records
        for key, value in record.items()
        if (key == "MESSAGE" or key.startswith("LIVE_"))
        and isinstance(value, str)
        and any(c in value for c in ("\n", "\x1b", "\u202e"))
    ]


def test_a_reply_part_of_an_odd_type_is_said_on_one_printable_line() -> None:
    """The service sends a reply part that is not audio: the journal says so, quoting its
    type. A type with a line break split the line (journalctl showing the rest without its
    priority, or the whole as "[N B blob data]"), and an escape sequence cleared the
    owner's terminal as `journalctl -f` printed it; a long one filled the line."""
    part = audio_part(b"\x01\x00" * 10, ODD + "w" * 20_000)
    records = journal_of([server_content(modelTurn={"parts": [part]})])
    said = [r for r in records if "not played" in str(r["MESSAGE"])]
    assert said, [r["MESSAGE"] for r in records]
    assert not printable(said)
    assert len(str(said[0]["MESSAGE"])) < 300, "a type is a word or two, not 20 000 characters"

