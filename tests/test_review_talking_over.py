"""Review (barge-in): what a person who talks over the box notices, and its owner reads."""

from __future__ import annotations

import logging

import pytest
from google.genai import types
from test_live_connection import Seen, audio, connection, content

from device.live.turn import WireTurn

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
