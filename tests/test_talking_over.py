"""A person talking over the box (push-to-talk and hands-free), and the timing
races of it, on the real Appliance with the wire's real bookkeeping (`WireTurn`, the
`Connection`'s dispatch) behind a fake link: what the speaker plays, what reaches the
server, the LEDs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import CHUNK, Box, FakeLink, FakeParts, Gate, config, running
from google.genai import types
from helpers import trusted_server, until
from test_handsfree_drops import conversation
from test_live_connection import SESSION, Seen, audio, connection, content
from test_live_session import AHEAD_S, Speaker

from device.audio.earcons import earcon
from device.config import Config, LiveConfig
from device.live.connection import Connection
from device.live.hooks import Hooks
from device.live.turn import WireTurn
from device.live.wire import REPLY_RATE
from device.outbox import Item, Outbox
from device.states import (
    Earcon,
    Reconnected,
    Reconnecting,
    ReplyAudio,
    SetupComplete,
    Timeout,
    Timer,
)
from rig.server.server import LiveServer

OLD = b"\x01\x00" * 2400  # 100 ms of the reply talked over
NEW = b"\x05\x00" * 2400  # 100 ms of the answer to the new question


class WireLink(FakeLink):
    """The fake link with the wire's real bookkeeping: `send` hands the outbox to the
    "server" (marking each item sent as the connection does), `server` takes one of the
    service's messages as the connection would (no socket: only its dispatch runs)."""

    def __init__(self, outbox: Any, on_event: Any) -> None:
        super().__init__(outbox, on_event)
        self.turn = WireTurn()
        self.conn: Connection | None = None

    def open(self, session: int) -> None:
        super().open(session)
        self.turn = WireTurn()
        hooks = Hooks(session, self.on_event, lambda item, t: None, lambda h: None)
        no_socket: Any = None
        stack = contextlib.AsyncExitStack()
        self.conn = Connection(no_socket, stack, LiveConfig(), self.outbox, hooks, self.turn)

    def supersede_reply(self) -> None:
        self.turn.supersede()

    def send(self) -> list[Item]:
        items = self.sent()
        for item in items:
            self.turn.sent(item.kind)
        return items

    def server(self, **fields: Any) -> None:
        assert self.conn is not None
        self.conn._dispatch(
            types.LiveServerMessage(server_content=types.LiveServerContent(**fields))
        )

    def audio(self, pcm: bytes) -> None:
        blob = types.Blob(data=pcm, mime_type="audio/pcm;rate=24000")
        self.server(model_turn=types.Content(parts=[types.Part(inline_data=blob)]))


@dataclass
class WireParts(FakeParts):
    def link(self, outbox, on_event, on_sent, tools, speaker):  # type: ignore[no-untyped-def]
        return self._keep("link", WireLink(outbox, on_event))


def wire(box: Box) -> WireLink:
    link = box.link
    assert isinstance(link, WireLink)
    return link


@contextlib.asynccontextmanager
async def box_on_the_wire(tmp_path: Path, cfg: Config | None = None):  # type: ignore[no-untyped-def]
    async with running(tmp_path, cfg or config(audio={"earcons": False}),
                       parts_class=WireParts) as box:  # fmt: skip
        yield box


async def a_whole_reply_playing(box: Box) -> WireLink:
    """A question asked and its 3 s reply sent whole, faster than it plays: still playing."""
    link = wire(box)
    await ask(box)
    link.audio(OLD * 30)
    link.server(turn_complete=True)
    await box.settle()
    assert box.state == "speaking"
    return link


async def ask(box: Box) -> None:
    """Press, a few words, release; everything sent."""
    await box.ctl("press")
    for _ in range(3):
        box.mic.record(CHUNK)
    await box.settle()
    if not box.appliance.machine.connected:
        wire(box).deliver(SetupComplete)
    await box.control.ask("release")
    box.mic.record(CHUNK)
    await box.settle()
    wire(box).send()


async def speaking_hands_free(box: Box) -> WireLink:
    """Hands-free: a conversation opened and the model's reply playing."""
    link = wire(box)
    await box.ctl("press")
    link.deliver(SetupComplete)
    link.audio(OLD)
    await box.settle()
    assert box.state == "speaking"
    return link


async def test_a_stray_interrupted_while_the_button_is_held_does_not_cut_the_go_ahead_beep(
    tmp_path: Path,
) -> None:
    """Push-to-talk: a reply came whole and still plays; the person presses over it. The
    service's late `interrupted` on that whole reply (the case the wire's bookkeeping
    already expects) comes a round trip later, while the rising "go ahead" beep plays:
    the press already silenced the reply, and that beep was cut off half way."""
    async with box_on_the_wire(tmp_path, config()) as box:
        link = await a_whole_reply_playing(box)
        await box.ctl("press")
        link.send()  # activityStart goes out
        go_ahead = earcon(Earcon.LISTEN_START)
        assert bytes(box.speaker.buffered) == go_ahead, "the reply silenced, the beep queued"
        link.server(interrupted=True)  # the service's late word on the whole reply
        await box.settle()
        assert bytes(box.speaker.buffered) == go_ahead, "the go-ahead beep was cut off"
        assert box.state == "listening"


async def test_hands_free_the_end_press_beeps_at_once_not_after_the_camera_and_connection(
    tmp_path: Path,
) -> None:
    """Hands-free, the person presses the button to end the conversation over a reply:
    the reply stops and the LEDs go idle at once, but the falling "got it" beep waited
    for the camera to switch off and the connection to close (a second or two on a Pi,
    the close up to CLOSE_TIMEOUT_S more): silence, then a late beep."""
    cfg = config(button={"mode": "toggle"}, audio={"mic_during_playback": "gate"})
    async with box_on_the_wire(tmp_path, cfg) as box:
        link = await speaking_hands_free(box)
        box.speaker.buffered.clear()
        box.camera.hang = asyncio.Event()  # switching the camera off takes its time
        await box.control.ask("press")  # end the conversation
        await until(lambda: box.state == "idle")
        await asyncio.sleep(0.05)
        try:
            assert OLD not in box.speaker.buffered, "the reply silenced"
            assert earcon(Earcon.LISTEN_END) in box.speaker.buffered, (
                "no beep until the camera is off and the connection closed"
            )
        finally:
            box.camera.hang.set()
        await box.settle()
        assert not box.camera.running and link.closed == 1


async def test_a_quick_tap_as_the_reply_ends_thinks_until_its_answer_never_idle(
    tmp_path: Path,
) -> None:
    """Push-to-talk: a quick tap (a script's `ctl press; ctl release`) over a reply, as the
    service's turnComplete for that reply arrives: the end, posted before the box took the
    press, was taken after the release as the end of the new question. The LEDs went
    thinking -> idle before any answer, and the reply timer was gone (an answer that never
    came: no error beep)."""
    async with box_on_the_wire(tmp_path) as box:
        link = wire(box)
        await ask(box)
        link.audio(OLD)
        await box.settle()
        assert box.state == "speaking"
        await box.control.ask("press")
        await box.control.ask("release")
        link.server(turn_complete=True)  # the old reply's end, before the press is taken
        box.mic.record(CHUNK)  # the chunk holding the release
        await box.settle()
        link.send()
        assert box.state == "thinking", box.states()
        assert "reply" in box.appliance.status()["timers"]
        link.audio(NEW)
        link.server(turn_complete=True)
        await box.settle()
        assert box.states()[3:] == ["speaking", "listening", "thinking", "speaking"]
        assert NEW in box.speaker.buffered and OLD not in box.speaker.buffered


async def test_a_whole_reply_given_up_on_between_connections_does_not_play_later(
    tmp_path: Path,
) -> None:
    """Push-to-talk: a reply came whole, faster than it plays; the connection drops and its
    rest waits to play on from the next connection. The reconnect takes longer than
    `reply_timeout_s` (Wi-Fi gone a while, within `reconnect_for_s`): the error beep, idle.
    Then the link is back and the rest of that reply played, out of the blue, to an empty
    room or a person who had given up on it."""
    async with box_on_the_wire(tmp_path, config()) as box:
        link = wire(box)
        await ask(box)
        link.audio(OLD * 30)  # the first 3 s of it reach the speaker
        await box.settle()
        assert box.state == "speaking"
        link.deliver(Reconnecting, reason="dropped", reply_lost=False)  # the rest carried
        await box.settle()
        box.speaker.play()  # what it had has played; the reconnect takes its time
        await box.settle()
        assert "reply" in box.appliance.status()["timers"]
        box.appliance.post(Timeout(Timer.REPLY))
        await box.settle()
        assert box.state == "idle"
        assert bytes(box.speaker.buffered) == earcon(Earcon.ERROR)
        link.deliver(Reconnected)
        link.audio(OLD)  # the carried rest, handed on by the next connection
        link.server(turn_complete=True)
        await box.settle()
        assert box.state == "idle", box.states()
        assert OLD not in box.speaker.buffered, "the reply given up on played after all"


async def test_hands_free_between_connections_a_silent_box_with_a_reply_to_come_hears_the_person(
    tmp_path: Path,
) -> None:
    """Hands-free (the microphone gated while the box speaks): a reply came whole, the
    connection drops and its rest waits for the next one. Once the speaker has played what
    it had, the box is silent for as long as the reconnect takes (up to `reconnect_for_s`),
    yet it went on showing "speaking" with the microphone muted: what the person said then
    was neither heard nor held. README: while a conversation waits for the connection what
    the person says is held and sent on. Now the box thinks once what it had has played, as
    when the model works on, and listens meanwhile."""
    cfg = config(button={"mode": "toggle"}, audio={"mic_during_playback": "gate"})
    async with box_on_the_wire(tmp_path, cfg) as box:
        link = await speaking_hands_free(box)
        link.deliver(Reconnecting, reason="dropped", reply_lost=False)  # the rest carried
        await box.settle()
        box.speaker.play()  # what it had has played: silence from here
        await until(lambda: box.state != "speaking", within=1)
        assert box.state == "thinking", box.states()
        for _ in range(10):
            box.mic.record(CHUNK)
        await box.settle()
        assert box.appliance.outbox.held_ms > 0, "what the person said was not held"


async def test_a_press_while_a_carried_reply_waits_asks_anew_and_never_hears_its_rest(
    tmp_path: Path,
) -> None:
    """Push-to-talk: a reply came whole, the connection dropped, what arrived has played and
    the box thinks while its rest waits for the next connection. A press then is a new
    question: the rest of the old reply, handed on by the next connection, is not heard,
    nor taken for the end of the new question."""
    async with box_on_the_wire(tmp_path) as box:
        link = wire(box)
        await ask(box)
        link.audio(OLD)
        await box.settle()
        link.deliver(Reconnecting, reason="dropped", reply_lost=False)
        box.speaker.play()
        await until(lambda: box.state == "thinking", within=1)
        await box.ctl("press")
        assert box.state == "connecting"
        link.deliver(Reconnected)
        link.audio(OLD)  # the carried rest
        link.server(turn_complete=True)
        await box.settle()
        assert box.state == "listening", box.states()
        assert OLD not in box.speaker.buffered
        await box.control.ask("release")
        box.mic.record(CHUNK)
        await box.settle()
        link.send()
        assert box.state == "thinking"
        link.audio(NEW)
        await box.settle()
        assert box.state == "speaking" and NEW in box.speaker.buffered


#: The first reply, longer than the speaker takes at once, sent whole.
REPLY_S = 8.0
#: The answer to the words said over it.
ANSWER_S = 0.2


@pytest.fixture
async def long_reply(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with trusted_server(monkeypatch, pace=0, reply_seconds=REPLY_S) as live:
        yield live


async def test_without_barge_in_words_over_a_whole_reply_leave_it_to_play_to_its_end(
    long_reply: LiveServer, gate: Gate
) -> None:
    """Hands-free with `barge_in = false`, the README's promise: words said over a reply
    never cut it. A reply sent whole waits for the speaker; the person talks over it;
    the service, told not to interrupt, transcribes and answers. Its answer must come
    after the whole of the reply, not in place of its rest."""
    server = long_reply
    speaker = Speaker()
    async with conversation(server, gate, speaker, conversation={"barge_in": False}) as talk:
        talk.say()
        await server.wait_for(lambda: "turn_complete" in server.kinds(1, "out"), 5)
        server.config.reply_seconds = ANSWER_S
        talk.say()  # over the reply
        await server.wait_for(lambda: server.kinds(1, "out").count("turn_complete") == 2, 5)
        for _ in range(30):  # the person listens: the speaker plays out what it holds
            speaker.play_out()
            await asyncio.sleep(0.1)
    assert speaker.seconds == pytest.approx(REPLY_S + ANSWER_S, abs=0.01), (
        f"heard {speaker.seconds:.2f} s of a {REPLY_S} s reply and a {ANSWER_S} s answer")
    assert not any(isinstance(e, ReplyAudio) and e.replaces for e in talk.events)


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
        link = await a_whole_reply_playing(box)
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


@pytest.mark.parametrize("words", [True, False], ids=["words", "counts"])
def test_a_reply_interrupted_and_ended_in_one_message_is_said_cut_short(
    caplog: pytest.LogCaptureFixture, words: bool
) -> None:
    """The service may end a reply its VAD cut in one message, interrupted with its
    turnComplete: the journal's line for it must say "cut short" (LIVE_REPLY_CUT=1) as it
    does when the two come apart; a careless flag made it "model said: <every word>", as
    for a reply heard whole."""
    seen, turn = Seen(), WireTurn(log_transcripts=words)
    conn = connection(seen, turn)
    caplog.set_level(logging.INFO)
    conn._dispatch(audio(b"\x01\x00" * 100))
    said = types.Transcription(text="Tomorrow will be sunny and warm.")
    conn._dispatch(content(output_transcription=said))
    conn._dispatch(content(interrupted=True, turn_complete=True))
    (line,) = [r for r in caplog.records if r.getMessage().startswith(("model said", "turn "))]
    assert getattr(line, "LIVE_REPLY_CUT", None) == 1, line.getMessage()
    assert "cut short" in line.getMessage(), line.getMessage()


def test_a_reply_cut_before_any_of_its_words_is_not_said_cut_in_the_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Words kept out of the journal: a reply cut before any of its words came is a turn
    of the person's words alone, "1 words heard, 0 said", with nothing said cut short (no
    LIVE_REPLY_CUT): there were no words of the model's to cut."""
    seen, turn = Seen(), WireTurn(log_transcripts=False)
    conn = connection(seen, turn)
    caplog.set_level(logging.INFO)
    conn._dispatch(content(input_transcription=types.Transcription(text="weather?")))
    conn._dispatch(audio(b"\x01\x00" * 100))
    conn._dispatch(content(interrupted=True, turn_complete=True))
    (line,) = [r for r in caplog.records if r.getMessage().startswith("turn transcript")]
    assert line.getMessage() == "turn transcript: 1 words heard, 0 said (words not logged)"
    assert getattr(line, "LIVE_REPLY_CUT", None) is None
