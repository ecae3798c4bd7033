"""The link reads the service on while the speaker is full: messages wait in order, and an
interruption is handled at once, the audio waiting before it dropped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.genai import types
from google.genai._live_converters import _LiveServerMessage_from_mldev
from helpers import until

from device.live.inbound import AudioOnly
from device.live.read_ahead import READ_AHEAD_BYTES, READ_AHEAD_MESSAGES, ReadAhead

MIME = "audio/pcm;rate=24000"


class Speaker:
    """Room in the speaker, opened and closed by the test."""

    def __init__(self) -> None:
        self.room = asyncio.Event()
        self.room.set()

    def has_room(self) -> bool:
        return self.room.is_set()

    async def wait_for_room(self) -> None:
        await self.room.wait()


class Handled(list[Any]):
    """What the read-ahead handed on, in order; `earlier`: those of them it said were read
    before the last `mark`."""

    def __init__(self) -> None:
        super().__init__()
        self.earlier: list[Any] = []

    def __call__(self, message: Any, earlier: bool) -> None:
        self.append(message)
        if earlier:
            self.earlier.append(message)


def audio(n: int, size: int = 9600) -> AudioOnly:
    return AudioOnly(parts=[(bytes([n]) * size, MIME)])


def content(**fields: Any) -> types.LiveServerMessage:
    return types.LiveServerMessage(server_content=types.LiveServerContent(**fields))


def said(text: str) -> types.LiveServerMessage:
    return content(output_transcription=types.Transcription(text=text))


def heard(text: str) -> types.LiveServerMessage:
    return content(input_transcription=types.Transcription(text=text))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def reading(
    words_replace: bool = True,
) -> AsyncIterator[tuple[ReadAhead, Speaker, Handled]]:
    """A read-ahead handing on to a list, its speaker, and its task running."""
    handled = Handled()
    speaker = Speaker()
    ahead = ReadAhead(handled, speaker, words_replace=words_replace)
    runner = asyncio.create_task(ahead.run())
    try:
        yield ahead, speaker, handled
    finally:
        runner.cancel()


async def held_until_the_speaker_has_room(ahead: ReadAhead, speaker: Speaker) -> None:
    """A full read-ahead keeps its reader waiting while the speaker is full, and lets it
    read on (within a second) once the speaker takes audio again."""
    reader = asyncio.create_task(ahead.room())
    await settle()
    assert not reader.done()
    speaker.room.set()
    await asyncio.wait_for(reader, 1)


async def test_what_the_full_speaker_cannot_take_waits_in_order_and_goes_as_room_comes() -> None:
    async with reading() as (ahead, speaker, handled):
        await ahead.take(audio(1))
        speaker.room.clear()  # the speaker is full now
        await ahead.take(audio(2))
        await ahead.take(said("and then"))  # nothing to play, but it came after the audio
        await ahead.take(audio(3))
        await settle()
        assert handled == [audio(1)]
        speaker.room.set()
        await settle()
        assert handled == [audio(1), audio(2), said("and then"), audio(3)]


async def test_an_interruption_is_handled_at_once_and_the_audio_waiting_is_dropped() -> None:
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))
        await ahead.take(said("the weather"))
        await ahead.take(audio(2))
        await settle()
        assert handled == []
        await ahead.take(content(interrupted=True))  # the speaker is still full
        assert handled == [said("the weather"), content(interrupted=True)]
        await ahead.take(content(turn_complete=True))
        assert handled[-1] == content(turn_complete=True)
        speaker.room.set()  # the barge-in emptied the speaker
        await settle()
        await ahead.take(audio(7))  # the next reply plays
        assert handled[-1] == audio(7) and audio(1) not in handled and audio(2) not in handled


async def test_past_its_bound_the_reader_waits_and_reads_on_as_audio_is_handed_on() -> None:
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        chunk = 48_000  # a second of reply audio
        for n in range(READ_AHEAD_BYTES // chunk):
            assert not ahead.full
            await ahead.take(audio(n % 256, chunk))
        assert ahead.full
        await held_until_the_speaker_has_room(ahead, speaker)
        await until(lambda: len(handled) == READ_AHEAD_BYTES // chunk, within=1)


async def test_a_flood_of_small_messages_behind_a_full_speaker_stops_the_reader() -> None:
    """Transcripts carry no audio to count: their number is bounded instead (a server
    sending 50,000 behind a full speaker grew the box by 100 MB)."""
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))
        for n in range(READ_AHEAD_MESSAGES - 2):
            await ahead.take(said(f"word {n}"))
            assert not ahead.full
        await ahead.take(said("the last that fits"))
        assert ahead.full
        await held_until_the_speaker_has_room(ahead, speaker)
        await settle()
        assert handled[0] == audio(1) and handled[-1] == said("the last that fits")
        assert len(handled) == READ_AHEAD_MESSAGES and not ahead.full


async def test_words_count_against_the_bound_as_audio_does() -> None:
    """300 transcripts of a megabyte each behind a full speaker grew the box to 380 MB."""
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))
        page = "word " * 200_000  # a megabyte of transcript
        taken = 0
        while not ahead.full:
            await ahead.take(said(page))
            taken += 1
        assert taken == -(-(READ_AHEAD_BYTES - 9600) // len(page)), "three, not a thousand"
        speaker.room.set()
        await asyncio.wait_for(ahead.room(), 1)
        await settle()
        assert len(handled) == 1 + taken and not ahead.full


async def test_without_a_speaker_to_wait_for_everything_is_handled_as_it_comes() -> None:
    handled = Handled()
    ahead = ReadAhead(handled, None)
    for n in range(3):
        await ahead.take(audio(n))
    assert handled == [audio(0), audio(1), audio(2)] and not ahead.full


async def test_what_is_not_the_replys_content_is_handled_at_once_behind_a_full_speaker() -> None:
    """A goAway waited behind up to a minute of audio, its time left running out unseen:
    the service then closed the connection with the reply still unplayed."""
    go_away = types.LiveServerMessage(go_away=types.LiveServerGoAway(time_left="8s"))
    handle = types.LiveServerMessage(
        session_resumption_update=types.LiveServerSessionResumptionUpdate(
            new_handle="h1", resumable=True
        )
    )
    call = types.LiveServerMessage(
        tool_call=types.LiveServerToolCall(function_calls=[types.FunctionCall(id="1", name="f")])
    )
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))
        await ahead.take(content(turn_complete=True))
        for message in (go_away, handle, call):
            await ahead.take(message)
        assert handled == [go_away, handle, call]
        assert ahead.unhandled() == [audio(1), content(turn_complete=True)]


async def test_what_a_connection_left_unhandled_is_handed_on_first_by_the_next() -> None:
    handled = Handled()
    speaker = Speaker()
    speaker.room.clear()
    ahead = ReadAhead(handled, speaker, [audio(1), content(turn_complete=True)])
    runner = asyncio.create_task(ahead.run())
    try:
        await ahead.take(audio(2))  # the next reply, on the new connection: after the old one's end
        await settle()
        assert handled == []
        speaker.room.set()
        await settle()
        assert handled == [audio(1), content(turn_complete=True), audio(2)]
    finally:
        runner.cancel()


async def test_the_answer_to_words_said_over_a_whole_reply_drops_its_rest_and_goes_at_once(
) -> None:
    """The service had sent all of a reply when the person spoke over it: it does not
    interrupt it any more, it answers. The answer must not wait behind the stale rest."""
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))
        await ahead.take(said("the weather"))
        await ahead.take(content(turn_complete=True))
        await ahead.take(heard("what about Sunday?"))  # the person, over the box
        await ahead.take(audio(2))  # the answer to it
        assert handled == [said("the weather"), content(turn_complete=True),
                           heard("what about Sunday?"), audio(2)]  # fmt: skip
        await ahead.take(audio(3))  # the speaker is full: the rest of the answer waits
        await settle()
        assert handled[-1] == audio(2)
        speaker.room.set()
        await settle()
        assert handled[-1] == audio(3) and audio(1) not in handled


async def test_without_speech_interrupting_words_over_a_whole_reply_let_it_play_to_its_end(
) -> None:
    """Hands-free without `barge_in` (speech does not interrupt): the person hears a reply
    to its end, then the answer to what they said over it; with the whole reply waiting
    here, its rest would be dropped for the answer."""
    async with reading(words_replace=False) as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))
        await ahead.take(content(turn_complete=True))
        await ahead.take(heard("what about Sunday?"))  # the person, over the box
        await ahead.take(audio(2))  # the answer to it
        speaker.room.set()
        await settle()
        assert handled == [audio(1), content(turn_complete=True),
                           heard("what about Sunday?"), audio(2)]  # fmt: skip


async def test_talked_over_the_rest_of_a_whole_reply_is_dropped_and_what_follows_it_waits_on(
) -> None:
    """The box heard the person over a reply whose end has come: its audio waiting is
    dropped, the rest of its messages handed on in order; what came after its end (the
    answer, before any transcription of the words) is not touched. A reply still coming
    (no end waiting) is the service's to interrupt."""
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))
        await ahead.take(said("the weather"))
        assert not ahead.drop_whole_reply(), "its end has not come"
        await ahead.take(content(turn_complete=True))
        await ahead.take(audio(2))  # an answer already on its way
        assert ahead.drop_whole_reply()
        assert handled == [said("the weather"), content(turn_complete=True)]
        assert not ahead.drop_whole_reply(), "nothing more of it waits"
        speaker.room.set()
        await settle()
        assert handled[-1] == audio(2) and audio(1) not in handled
        assert not ahead.full


async def test_the_model_going_on_after_a_tool_waits_behind_the_words_before_it() -> None:
    """Audio, a tool call, turnComplete, then after the tool's answer a new turn: the
    Live API's order. No new words from the person: the first turn is heard to its end."""
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))  # "let me check"
        await ahead.take(types.LiveServerMessage(tool_call=types.LiveServerToolCall()))
        await ahead.take(content(turn_complete=True))
        await ahead.take(audio(2))  # "it is ten past three"
        await settle()
        assert audio(2) not in handled
        speaker.room.set()
        await settle()
        assert handled[-3:] == [audio(1), content(turn_complete=True), audio(2)]


async def test_the_rest_of_a_reply_the_model_works_on_waits_in_order() -> None:
    """A turnComplete with interactionStatus IN_PROGRESS: what follows continues the reply."""
    working = content(turn_complete=True, interaction_status=types.InteractionStatus.IN_PROGRESS)
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))
        await ahead.take(working)
        await ahead.take(audio(2))
        await settle()
        assert handled == []
        speaker.room.set()
        await settle()
        assert handled == [audio(1), working, audio(2)]


async def test_audio_reaches_the_speaker_before_its_room_is_asked_again() -> None:
    """The appliance feeds the speaker from its queue of events, on its own task: a reply
    read in one go was all handed on before the speaker had been given any of it, so its
    room never said no, and the whole reply went into the speaker past its bound."""

    class Speaker:
        fed = 0

        def has_room(self) -> bool:
            return self.fed < 3

        async def wait_for_room(self) -> None:
            await asyncio.Event().wait()  # it plays nothing in this test

    speaker = Speaker()
    events: asyncio.Queue[Any] = asyncio.Queue()

    async def appliance() -> None:
        while True:
            await events.get()
            speaker.fed += 1

    ahead = ReadAhead(lambda message, _earlier: events.put_nowait(message), speaker)
    tasks = [asyncio.create_task(appliance()), asyncio.create_task(ahead.run())]
    try:
        for n in range(10):
            await ahead.take(audio(n))
        await settle()
        assert speaker.fed == 3
        assert ahead.unhandled() == [audio(n) for n in range(3, 10)]
    finally:
        for task in tasks:
            task.cancel()


MB = 1_000_000


def from_wire(frame: dict) -> types.LiveServerMessage:
    """A frame as the SDK's receive makes it into its message."""
    raw = json.loads(json.dumps(frame))
    return types.LiveServerMessage._from_response(
        response=_LiveServerMessage_from_mldev(raw), kwargs={}
    )


BULKY = {
    "grounding metadata": lambda n: {"serverContent": {"groundingMetadata": {
        "searchEntryPoint": {"renderedContent": f"<style>{n}</style>" + "x" * MB}}}},
    "a part's executable code": lambda n: {"serverContent": {"modelTurn": {"parts": [
        {"executableCode": {"language": "PYTHON", "code": f"# {n}\n" + "x" * MB}}]}}},
}


@pytest.mark.parametrize("kind", list(BULKY))
async def test_bulky_content_behind_a_full_speaker_counts_against_the_bound(kind: str) -> None:
    """Behind reply audio waiting for the speaker, 300 messages of a megabyte each in a
    field the bound does not weigh: the reader read on (never `full`) while the box held
    them all, 300 MB, past the unit's MemoryMax (256M) before the 1024-message bound."""
    async with reading() as (ahead, speaker, _handled):
        speaker.room.clear()
        await ahead.take(audio(1))
        tracemalloc.start()
        try:
            for n in range(300):
                await ahead.take(from_wire(BULKY[kind](n)))
                if ahead.full:
                    break
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert ahead.full, f"still reading on with {held / MB:.0f} MB held"
        assert held < 2 * READ_AHEAD_BYTES


async def test_a_message_the_sdk_reads_waits_behind_a_full_speaker_however_deep_it_is() -> None:
    """A part's function call with arguments 600 arrays deep (the SDK reads it; the same
    message with room in the speaker is handled as any other) behind reply audio waiting for
    a full speaker: weighing it for the bound raised PydanticSerializationError ("Maximum
    serialization depth exceeded"), which ended the connection and the reply with it."""
    deep = {
        "serverContent": {
            "modelTurn": {
                "parts": [
                    {
                        "functionCall": {
                            "name": "f",
                            "args": {"a": json.loads("[" * 600 + "]" * 600)},
                        }
                    }
                ]
            }
        }
    }
    message = types.LiveServerMessage._from_response(
        response=_LiveServerMessage_from_mldev(deep), kwargs={}
    )
    handled = Handled()
    room = asyncio.Event()

    class Full:
        def has_room(self) -> bool:
            return room.is_set()

        async def wait_for_room(self) -> None:
            await room.wait()

    ahead = ReadAhead(handled, Full())
    runner = asyncio.create_task(ahead.run())
    try:
        first = AudioOnly(parts=[(b"\x01\x00" * 4800, "audio/pcm;rate=24000")])
        await ahead.take(first)
        await ahead.take(message)
        room.set()
        await until(lambda: len(handled) == 2, within=1)
    finally:
        runner.cancel()
    assert handled == [first, message]


async def test_what_waited_when_a_tools_answer_went_out_is_handed_on_as_read_before_it() -> None:
    """Words and their turn's end ("let me look that up") wait for the speaker as the
    tool's answer goes out (`mark`): they are handed on as read before it, the reply to the
    answer read after it is not, and that reply's end is seen waiting."""
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        for message in (audio(1), said("let me look"), content(turn_complete=True)):
            await ahead.take(message)
        ahead.mark()
        assert not ahead.end_after_mark()
        await ahead.take(audio(2))
        await ahead.take(content(turn_complete=True))  # the reply to the answer, whole
        assert ahead.end_after_mark()
        speaker.room.set()
        await settle()
        assert handled == [audio(1), said("let me look"), content(turn_complete=True),
                           audio(2), content(turn_complete=True)]
        assert handled.earlier == [audio(1), said("let me look"), content(turn_complete=True)]


async def test_an_interruption_hands_on_what_it_drops_past_saying_which_came_before_the_mark(
) -> None:
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))
        await ahead.take(said("before"))
        ahead.mark()
        await ahead.take(said("after"))
        await ahead.take(content(interrupted=True))
        assert handled == [said("before"), said("after"), content(interrupted=True)]
        assert handled.earlier == [said("before")]


async def test_talked_over_every_whole_reply_waiting_is_dropped_not_only_the_first() -> None:
    """"Let me look that up" and the reply to the tool's answer both came whole and wait
    for the speaker; the box hears the person over them: neither is heard any more (the
    second would start up over the person the moment the first was dropped)."""
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        for message in (audio(1), content(turn_complete=True), audio(2),
                        content(turn_complete=True)):  # fmt: skip
            await ahead.take(message)
        assert ahead.drop_whole_reply()
        speaker.room.set()
        await settle()
        assert handled == [content(turn_complete=True), content(turn_complete=True)]


async def test_the_answer_that_came_before_the_transcript_of_its_words_is_heard_whole() -> None:
    """The person spoke over a reply the service had sent whole; the answer's first audio
    came before the service's transcript of their words (the two are not ordered). Its
    first chunk, read before the words, was dropped with the old reply's rest: the
    answer began in the middle of its first word."""
    async with reading() as (ahead, speaker, handled):
        speaker.room.clear()
        await ahead.take(audio(1))  # the old reply, for a full speaker
        await ahead.take(said("the weather"))
        await ahead.take(content(turn_complete=True))
        await ahead.take(audio(2))  # the answer's first words...
        await ahead.take(heard("what about Sunday?"))  # ...then the words they answer
        await ahead.take(audio(3))
        await settle()
        assert handled == [said("the weather"), content(turn_complete=True),
                           heard("what about Sunday?"), audio(2), audio(3)]  # fmt: skip
        speaker.room.set()
        await settle()
        assert audio(1) not in handled
