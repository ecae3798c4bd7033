"""Review (barge-in): what a person who talks over the box notices, and its owner reads."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest
from fakes import CHUNK
from google.genai import types
from test_live_connection import SESSION, Seen, audio, connection, content
from test_live_session import AHEAD_S, Speaker
from test_talking_over import OLD, ask, box_on_the_wire, wire

from device.config import LiveConfig
from device.live.connection import Connection
from device.live.hooks import Hooks
from device.live.turn import WireTurn
from device.live.wire import REPLY_RATE
from device.outbox import Outbox
from device.states import ReplyAudio

WORDS = "Tomorrow will be sunny and warm, with a light breeze from the west."


def model_line(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """The journal's one line of the model's words (or of how many there were)."""
    (line,) = [r for r in caplog.records if r.getMessage().startswith(("model said", "turn "))]
    return line


@pytest.mark.parametrize("words", [True, False], ids=["words", "counts"])
@pytest.mark.parametrize("how", ["interrupted", "pressed-over", "whole"])
async def test_the_journal_says_a_reply_talked_over_was_cut_short_not_said_whole(
    caplog: pytest.LogCaptureFixture, how: str, words: bool
) -> None:
    """The service sends a reply's transcription as fast as its audio, far ahead of the
    speaker. The person talks over it (the service's VAD cut it, or a press): the journal
    said "model said: <every word>", as for a reply heard to its end, and the owner reading
    it could not tell what the person heard from what the model meant to say."""
    seen, turn = Seen(), WireTurn(log_transcripts=words)
    conn = connection(seen, turn)
    caplog.set_level(logging.INFO)
    conn._dispatch(audio(b"\x01\x00" * 100))
    conn._dispatch(content(output_transcription=types.Transcription(text=WORDS)))
    if how == "pressed-over":
        turn.sent("activity_start")
    if how != "whole":
        conn._dispatch(content(interrupted=True))
    conn._dispatch(content(turn_complete=True))
    line = model_line(caplog)
    assert getattr(line, "LIVE_REPLY_CUT", None) == (None if how == "whole" else 1)
    assert ("cut short" in line.getMessage()) is (how != "whole")


@pytest.mark.parametrize("end", ["turn-complete", "connection-lost"])
async def test_the_words_of_a_reply_cut_short_are_one_journal_line_with_those_come_late(
    caplog: pytest.LogCaptureFixture, end: str
) -> None:
    """Hands-free, the service's VAD cuts the reply; the transcription of what it had sent
    comes after its interrupted (transcriptions are not ordered with the audio), before its
    turnComplete (or the connection's end). The journal had two lines for the one reply,
    each a piece of it."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    caplog.set_level(logging.INFO)
    conn._dispatch(audio(b"\x01\x00" * 100))
    conn._dispatch(content(output_transcription=types.Transcription(text="Tomorrow will ")))
    conn._dispatch(content(interrupted=True))
    conn._dispatch(content(output_transcription=types.Transcription(text="be sunny")))
    if end == "turn-complete":
        conn._dispatch(content(turn_complete=True))
    else:
        turn.lost()
    line = model_line(caplog)
    assert getattr(line, "LIVE_TRANSCRIPT_OUT", None) == "Tomorrow will be sunny"
    assert getattr(line, "LIVE_REPLY_CUT", None) == 1


async def test_a_quick_tap_over_a_whole_reply_thinks_through_the_services_late_interrupted(
    tmp_path: Path,
) -> None:
    """Push-to-talk: a reply came whole and still plays; the person taps over it (a quick
    question, or `ctl press; ctl release`). The service's late interrupted on that whole
    reply, a round trip after the activityStart, came once the release was posted and
    before its activityEnd went out: the box took it for the end of the new question.
    The LEDs went thinking -> idle with the question unanswered, and the reply timer was
    gone: an answer that never came got no error beep, one that came played out of the
    blue."""
    async with box_on_the_wire(tmp_path) as box:
        link = wire(box)
        await ask(box)
        link.audio(OLD * 30)  # 3 s of reply, sent whole, faster than it plays
        link.server(turn_complete=True)
        await box.settle()
        assert box.state == "speaking"
        await box.ctl("press")
        box.mic.record(CHUNK)
        await box.settle()
        link.send()  # activityStart and the first words go out
        await box.control.ask("release")
        link.server(interrupted=True)  # the service's late word on the whole reply
        box.mic.record(CHUNK)  # the chunk holding the release
        await box.settle()
        link.send()  # ... and the activityEnd
        assert box.states()[3:] == ["speaking", "listening", "thinking"], box.states()
        assert "reply" in box.appliance.status()["timers"]


@pytest.mark.parametrize("by", ["the-box", "the-answer"])
async def test_the_journal_says_a_whole_reply_dropped_for_words_over_it_was_cut(
    caplog: pytest.LogCaptureFixture, by: str
) -> None:
    """Hands-free: the service sent all of a long reply (its end waits behind what the
    speaker has no room for yet), and the person talks over it. The service has nothing
    left to interrupt: the box drops the rest itself (hearing them over its cancelled
    echo), or the service's answer to their words does. The journal's line for it, logged
    as its end was handed on in the drop, said "model said: <every word>", as for a reply
    heard whole."""
    speaker, seen, turn = Speaker(), Seen(), WireTurn()

    def on_event(event: Any) -> None:
        seen.events.append(event)
        if isinstance(event, ReplyAudio) and not event.talked_over:
            speaker.feed(event.pcm)

    hooks = Hooks(SESSION, on_event, lambda item, t: None, lambda h: None, speaker)
    no_socket: Any = None
    conn = Connection(no_socket, contextlib.AsyncExitStack(), LiveConfig(), Outbox(5), hooks,
                      turn)  # fmt: skip
    caplog.set_level(logging.INFO)
    second = b"\x01\x00" * REPLY_RATE
    for _ in range(int(AHEAD_S) + 2):  # more than the speaker takes: the rest waits
        await conn._read_ahead.take(audio(second))
    await conn._read_ahead.take(content(output_transcription=types.Transcription(text=WORDS)))
    await conn._read_ahead.take(content(turn_complete=True))
    assert not speaker.has_room()
    if by == "the-box":
        assert conn.drop_whole_reply(), "the service had sent all of it"
    else:
        heard = types.Transcription(text="stop, what about Sunday")
        await conn._read_ahead.take(content(input_transcription=heard))
        await conn._read_ahead.take(audio(b"\x05\x00" * 2400))  # the answer
        assert any(isinstance(e, ReplyAudio) and e.replaces for e in seen.events)
    line = model_line(caplog)
    assert getattr(line, "LIVE_REPLY_CUT", None) == 1
