"""Review: words said over a whole reply, and the answer that came before their transcript
(folded into test_read_ahead and test_live_connection later)."""

from __future__ import annotations

import asyncio
import contextlib

from google.genai import types
from test_live_connection import SESSION, Seen, content, replay
from test_read_ahead import audio as audio_only
from test_read_ahead import heard, reading, said, settle

from device.config import LiveConfig
from device.live.connection import Connection
from device.live.hooks import Hooks
from device.live.inbound import AudioOnly
from device.live.turn import WireTurn
from device.outbox import Outbox
from device.states import Machine, Mode, ReplyAudio, State


def alone(pcm: bytes) -> AudioOnly:
    """A message of reply audio alone, as the link reads it off the socket."""
    return AudioOnly(parts=[(pcm, "audio/pcm;rate=24000")])


class FullSpeaker:
    """A speaker with seconds of the old reply still to play: no room."""

    def has_room(self) -> bool:
        return False

    async def wait_for_room(self) -> None:
        await asyncio.Event().wait()


async def test_the_answer_that_came_before_the_transcript_of_its_words_is_heard_whole() -> None:
    """The person spoke over a reply the service had sent whole; the answer's first audio
    came before the service's transcript of their words (the two are not ordered). Its
    first chunk, read before the words, was dropped with the old reply's rest: the
    answer began in the middle of its first word."""
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio_only(1))  # the old reply, for a full speaker
        await ahead.take(said("the weather"))
        await ahead.take(content(turn_complete=True))
        await ahead.take(audio_only(2))  # the answer's first words...
        await ahead.take(heard("what about Sunday?"))  # ...then the words they answer
        await ahead.take(audio_only(3))
        await settle()
        assert handled == [said("the weather"), content(turn_complete=True),
                           heard("what about Sunday?"), audio_only(2), audio_only(3)]  # fmt: skip
        speaker.room.set()
        await settle()
        assert audio_only(1) not in handled


async def test_words_over_a_whole_reply_its_answer_plays_from_its_first_chunk_at_once() -> None:
    """The same through the connection and the state machine: what the speaker is given
    is the answer from its first chunk, in place of the old reply's rest."""
    seen, turn = Seen(), WireTurn()
    hooks = Hooks(SESSION, seen.events.append, lambda item, t: None, lambda h: None,
                  FullSpeaker())  # fmt: skip
    conn = Connection(None, contextlib.AsyncExitStack(), LiveConfig(), Outbox(5), hooks, turn)
    old, rest = b"\x01\x00" * 100, b"\x02\x00" * 100
    first, more = b"\x03\x00" * 100, b"\x04\x00" * 100
    conn._handle(alone(old), False)  # handed on, playing: the speaker is full from here on
    for message in (alone(rest), content(turn_complete=True), alone(first),
                    content(input_transcription=types.Transcription(text="and Sunday?")),
                    alone(more)):  # fmt: skip
        await conn._read_ahead.take(message)
    machine = Machine(mode=Mode.TOGGLE, state=State.LISTENING, session_open=True,
                      session=SESSION, connected=True)  # fmt: skip
    _, played, _ = replay(seen.events, machine)
    assert played == [old, first, more]
    replies = [e for e in seen.events if isinstance(e, ReplyAudio)]
    assert [r.replaces for r in replies] == [False, True, False], "the answer clears the old"
