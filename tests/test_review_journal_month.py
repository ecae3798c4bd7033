"""A month of journal: what the service sends reaches a journal line as one printable line,
and a line a failure comes back to every day or so is still found by its fields."""

from __future__ import annotations

import asyncio
import contextlib
import json

from fakes import FakeActions
from google.genai.live import AsyncSession
from helpers import journal_lines
from test_read_ahead import Speaker as SwitchedSpeaker
from test_server_fuzz import ScriptedWire, audio_part, sdk_client, server_content

from device.config import LiveConfig, ToolsConfig
from device.live.connection import Connection
from device.live.hooks import Hooks
from device.live.turn import WireTurn
from device.outbox import Outbox
from device.tools import ToolBox

#: What a service (or whatever answers in its name: a proxy, a captive portal) may put in a
#: text the box quotes: a line break, a terminal's escape sequence, a bidi override.
ODD = "audio/x\n\x1b[2J\u202eevil"


def journal_of(frames: list[bytes], tools: ToolBox | None = None) -> list[dict[str, object]]:
    """The journal's records of one connection over which the service sent `frames`."""
    hooks = Hooks(1, lambda event: None, lambda item, t: None, lambda h: None, SwitchedSpeaker())
    with journal_lines("device") as journal:
        session = AsyncSession(api_client=sdk_client(), websocket=ScriptedWire(list(frames)))
        stack = contextlib.AsyncExitStack()
        turn = WireTurn()
        asyncio.run(Connection(session, stack, LiveConfig(), Outbox(5), hooks, turn, tools).run())
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
    assert len(str(said[0]["MESSAGE"])) < 1000, "a type is a word or two, not 20 000 characters"



def test_a_tool_call_of_an_odd_name_is_said_on_one_printable_line() -> None:
    """The service calls a tool by a name (and id) holding controls, 20 000 characters
    long: the line that says it was not run (no tools here), and with tools the call's own
    line and its LIVE_TOOL and LIVE_TOOL_CALL fields, quote them as escapes, cut short. The
    line split in the journal, an escape sequence cleared the owner's terminal."""
    odd = ODD + "n" * 20_000
    call = json.dumps({"toolCall": {"functionCalls": [{"id": odd, "name": odd}]}}).encode()
    records = journal_of([call])
    said = [r for r in records if "no tools are enabled" in str(r["MESSAGE"])]
    assert said, [r["MESSAGE"] for r in records]
    records = journal_of([call], tools=ToolBox(ToolsConfig(), FakeActions()))
    said += [r for r in records if r.get("LIVE_TOOL")]
    assert len(said) == 2, [r["MESSAGE"] for r in records]
    assert not printable(said)
    assert all(len(str(value)) < 1000 for r in said for key, value in r.items()
               if key == "MESSAGE" or key.startswith("LIVE_TOOL")), "a name is a word or two"
