"""A tool's first words ("let me look that up"), its quick answer and the reply owed to
it, through the local server and the real SDK,
the link's events fed to the real state machine as the appliance feeds them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from fakes import Gate
from helpers import trusted_server, until
from test_handsfree_drops import Conversation, conversation
from test_live_session import Speaker
from test_states import DONE, ENDED, REPLY, SETUP, names, run
from test_tool_answers_in_order import PREAMBLE_S

from device import states as s
from device.states import (
    Earcon,
    Interrupted,
    Machine,
    Mode,
    PlaybackDrained,
    Reconnected,
    State,
    ToolsAtWork,
    TurnComplete,
)
from rig.server.server import LiveServer


async def ask_and_answer_at_once(talk: Conversation, gate: Gate) -> None:
    """The person asks; the model's first words and its call come; the tool answers at once."""
    talk.say()
    await gate.entered()
    gate.opened.set()


#: A reply to a tool's answer longer than the speaker takes at once, sent whole.
REPLY_S = 8.0


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    """The model says a few words before each tool call, then thinks over the tool's
    answer for longer than a test here waits: what the test does meanwhile comes first."""
    options = {"tool_preamble_seconds": PREAMBLE_S, "think_seconds": 60.0}
    async with trusted_server(monkeypatch, pace=0, reply_seconds=0.2, **options) as live:
        yield live


async def test_hands_free_talking_over_first_words_after_a_quick_tools_answer_stops_them(
    server: LiveServer, gate: Gate
) -> None:
    """"Let me look that up" (5 s of it), the call, the words' end; the tool answers at
    once, and the words' end, handed on after the answer, leaves the reply to it owed.
    The person talks over the words' last second ("no, the other one"): the service
    stops the reply it was making (interrupted), which the box took for a late word on
    words that came whole. They played on over the person, and the box went on to say
    it was thinking while they talked."""
    speaker = Speaker()
    server.queue_tool_call("slow")
    async with conversation(server, gate, speaker) as talk:
        await ask_and_answer_at_once(talk, gate)
        await server.wait_for(lambda: "tool_response" in server.kinds(1, "in"), 5)
        speaker.play_out()  # the words' last second, and their end, are handed on
        await until(lambda: any(isinstance(e, TurnComplete) for e in talk.events), within=5)
        talked = len(talk.events)
        talk.say()
        await server.wait_for(lambda: "interrupted" in server.kinds(1, "out"), 5)
        with contextlib.suppress(AssertionError):  # read, or never acted on
            await until(lambda: talk.machine.state is not State.SPEAKING, within=5)
    over = talk.events[talked:]
    assert any(isinstance(e, Interrupted) for e in over), f"the words played on: {over}"
    assert talk.machine.state is State.LISTENING, talk.states


async def test_hands_free_short_first_words_then_a_quick_answer_the_box_thinks_until_the_reply(
    server: LiveServer, gate: Gate
) -> None:
    """"Let me check" (a second: the speaker takes it at once, and its end is handed on
    while the tool works); the tool answers while the words still play. Once they had
    played the box listened (push-to-talk: idle) while the model thought over the
    answer, where after longer words, whose end waits behind them, it thinks."""
    server.config.tool_preamble_seconds = 1.0
    speaker = Speaker()
    server.queue_tool_call("slow")
    async with conversation(server, gate, speaker) as talk:
        talk.say()
        await gate.entered()
        await until(lambda: any(isinstance(e, TurnComplete) for e in talk.events), within=5)
        gate.opened.set()
        await until(
            lambda: any(isinstance(e, ToolsAtWork) and e.calls == 0 for e in talk.events),
            within=5,
        )
        speaker.play_out()
        talk.feed(PlaybackDrained())
        thinking = talk.machine.state
    assert thinking is State.THINKING, talk.states


@pytest.mark.parametrize("mode", list(Mode))
def test_first_words_ended_before_their_tools_quick_answer_then_the_box_thinks(
    mode: Mode,
) -> None:
    """The same in the state machine, in both modes: push-to-talk the box went idle, and
    a drop before the reply lost it without the error earcon. A goodbye (end_conversation)
    still hangs up once it has played, without one."""
    asking = s.Released() if mode is Mode.PUSH_TO_TALK else s.SpeechHeard(from_the_room=True)
    calling = [REPLY, s.ToolsAtWork(session=1, calls=1)]
    answered = [DONE, s.ToolsAtWork(session=1, calls=0), s.PlaybackDrained()]
    m, _, _ = run(Machine(mode=mode), s.Pressed(), SETUP, asking, *calling, *answered)
    assert m.state is State.THINKING
    _, _, actions = run(m, s.Reconnecting(session=1, reason="a drop"))
    assert "play_earcon:error" in names(actions)
    m, _, actions = run(Machine(mode=mode), s.Pressed(), SETUP, asking, *calling, ENDED, *answered)
    assert not m.session_open and "play_earcon:error" not in names(actions)


async def test_a_drop_as_the_reply_to_a_quick_answer_begins_ends_in_the_error_after_the_words(
    monkeypatch: pytest.MonkeyPatch, gate: Gate
) -> None:
    """The words and their end wait behind the speaker, the tool has answered, and the
    reply to the answer has begun to arrive behind them when the connection drops. The
    words played on from the next connection, then the start of the reply, cut mid-word,
    and the box said "speaking" in silence until reply_timeout_s ran out: only then the
    error earcon the README promises once the words have played."""
    options = {"tool_preamble_seconds": PREAMBLE_S, "reply_seconds": 10.0}
    async with trusted_server(monkeypatch, pace=1, **options) as server:
        speaker = Speaker()
        server.queue_tool_call("slow")
        # No transcript of the question, which this server sends only as it answers.
        quiet = {"transcripts": False}
        async with conversation(server, gate, speaker, live=quiet) as talk:
            await ask_and_answer_at_once(talk, gate)

            def reply_begun() -> bool:
                kinds = server.kinds(1, "out")
                return "turn_complete" in kinds and "audio" in kinds[kinds.index("turn_complete"):]

            await server.wait_for(reply_begun, 5)
            server.drop()
            await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
            speaker.play_out()
            await until(lambda: any(isinstance(e, TurnComplete) for e in talk.events), within=5)
            connection = talk.link._connection
            assert connection is not None
            await until(lambda: not connection._read_ahead.unhandled(), within=5)
            talk.feed(PlaybackDrained())
    assert Earcon.ERROR in talk.earcons, talk.states


async def test_the_reply_to_a_quick_answer_plays_after_the_whole_of_the_first_words(
    server: LiveServer, gate: Gate
) -> None:
    """"Let me look that up" (5 s, more than the speaker holds: its rest and its end
    wait), the tool answers at once, and the reply to the answer comes behind the
    transcript of the question that called the tool (transcripts are not ordered with
    the audio). The box took that transcript for words said over a whole reply and
    dropped the first words' unplayed rest for the answer: "let me lo-" and then the
    reply, where the README says the model going on after a tool's answer replaces
    nothing."""
    server.config.think_seconds = 0.2
    speaker = Speaker()
    server.queue_tool_call("slow")
    async with conversation(server, gate, speaker) as talk:
        await ask_and_answer_at_once(talk, gate)
        await server.wait_for(lambda: server.kinds(1, "out").count("turn_complete") == 2, 5)
        for _ in range(30):  # the person listens: the speaker plays out what it holds
            speaker.play_out()
            await asyncio.sleep(0.1)
    assert speaker.seconds == pytest.approx(PREAMBLE_S + 0.2, abs=0.01), (
        f"heard {speaker.seconds:.2f} s of {PREAMBLE_S} s of first words and the reply")
    assert not any(isinstance(e, s.ReplyAudio) and e.replaces for e in talk.events)


async def test_hands_free_words_over_the_reply_to_a_tools_answer_replace_its_rest(
    server: LiveServer, gate: Gate
) -> None:
    """"Let me look that up", the tool's quick answer, and the reply to it (8 s, sent
    whole: its rest and its end wait for the speaker). The person talks over it ("and
    tomorrow?"); the service, with nothing left to interrupt, transcribes and answers.
    The answer waited behind every second of the old reply: while that reply's end waited
    unhandled the box still owed it, and took the person's words for the late transcript
    of the question that called the tool. The README: such an answer replaces the rest."""
    server.config.think_seconds, server.config.reply_seconds = 0.2, REPLY_S
    speaker = Speaker()
    server.queue_tool_call("slow")
    async with conversation(server, gate, speaker) as talk:
        await ask_and_answer_at_once(talk, gate)
        await server.wait_for(lambda: server.kinds(1, "out").count("turn_complete") == 2, 5)
        speaker.play_out()  # the first words play out; the reply to the answer begins
        await until(lambda: speaker.seconds > PREAMBLE_S, within=5)
        talk.say()  # over the reply
        await server.wait_for(lambda: server.kinds(1, "out").count("turn_complete") == 3, 5)
        with contextlib.suppress(AssertionError):  # read, or left waiting
            await until(lambda: any(getattr(e, "replaces", False) for e in talk.events), 5)
    replies = [e for e in talk.events if isinstance(e, s.ReplyAudio)]
    assert any(reply.replaces for reply in replies), "the answer waited behind the old reply"
    assert speaker.seconds < PREAMBLE_S + REPLY_S, "the old reply's rest was heard first"
