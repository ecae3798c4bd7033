"""A tool's call, its answer and the model's words around them, in the orders the service
and the box's own read-ahead bring them: through the local server and the real SDK, the
link's events fed to the real state machine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from fakes import Gate
from helpers import trusted_server, until
from test_handsfree_drops import Conversation, conversation
from test_live_session import Speaker

from device.states import (
    ConnectionLost,
    Earcon,
    EndConversation,
    Machine,
    PlaybackDrained,
    PlayEarcon,
    Pressed,
    Reconnected,
    Reconnecting,
    Released,
    ReplyAudio,
    SetupComplete,
    State,
    TurnComplete,
    step,
)
from rig.server.server import LiveServer

#: "Let me look that up", longer than the speaker takes at once (test_live_session's
#: AHEAD_S): its end waits in the read-ahead while its first seconds play.
PREAMBLE_S = 5.0


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    """The model says a few words before each tool call, and thinks 2 s over its answer."""
    options = {"tool_preamble_seconds": PREAMBLE_S, "think_seconds": 2.0}
    async with trusted_server(monkeypatch, pace=0, reply_seconds=0.2, **options) as live:
        yield live


async def answered_while_the_first_words_play(
    server: LiveServer, talk: Conversation, speaker: Speaker, gate: Gate
) -> None:
    """A question; the model's first words, its call, their end. The tool answers at once,
    while those words still play; then they play out, and their end is handed on."""
    talk.say()
    await gate.entered()
    gate.opened.set()
    await server.wait_for(lambda: "tool_response" in server.kinds(1, "in"), 5)
    speaker.play_out()
    await until(lambda: any(isinstance(e, TurnComplete) for e in talk.events), within=5)
    talk.feed(PlaybackDrained())


async def test_hands_free_a_drop_before_the_reply_to_a_quick_tools_answer_says_it_is_lost(
    server: LiveServer, gate: Gate
) -> None:
    """"What time is it?": "let me look that up" (5 s of it), the call, the words' end. The
    call is handled as it arrives, and the tool answers within a second; the words' end,
    read before the answer went out, waits behind them for the speaker. Handed on after
    the answer, it was taken for the end of the reply to it: nothing owed, and a drop
    while the model thought over the answer lost that reply without the error earcon,
    the person waiting for the time until the silence hung up."""
    speaker = Speaker()
    server.queue_tool_call("slow")
    async with conversation(server, gate, speaker) as talk:
        await answered_while_the_first_words_play(server, talk, speaker, gate)
        server.drop()  # the model thinks over the tool's answer
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
    lost = next(e for e in talk.events if isinstance(e, Reconnecting))
    assert lost.reply_lost, talk.events
    assert Earcon.ERROR in talk.earcons, talk.events


async def test_hands_free_the_reply_to_a_quick_tools_answer_ends_what_was_owed(
    server: LiveServer, gate: Gate
) -> None:
    """The same words, call and quick answer; the reply to the answer comes and plays. A
    drop after it loses nothing: the box owes the person nothing more, and says nothing."""
    speaker = Speaker()
    server.queue_tool_call("slow")
    async with conversation(server, gate, speaker) as talk:
        await answered_while_the_first_words_play(server, talk, speaker, gate)
        await until(lambda: sum(isinstance(e, TurnComplete) for e in talk.events) == 2, within=5)
        speaker.play_out()
        talk.feed(PlaybackDrained())
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
    lost = next(e for e in talk.events if isinstance(e, Reconnecting))
    assert not lost.reply_lost, talk.events
    assert talk.earcons == [Earcon.LISTEN_START], talk.events


@pytest.mark.parametrize("answered", [False, True], ids=["tool-at-work", "tool-answered"])
async def test_hands_free_first_words_carried_across_a_drop_end_with_the_error_earcon(
    server: LiveServer, gate: Gate, answered: bool
) -> None:
    """"Let me look that up" (5 s of it), the call, the words' end: they came whole, and
    their end still waits behind them for the speaker when the connection drops, the tool
    at work (or its answer just gone out). The words play on from the next connection,
    to their end; but the tool's answer, or the reply to it, went with the connection:
    the box listened on without a sound, the person waiting for the rest."""
    speaker = Speaker()
    server.queue_tool_call("slow")
    async with conversation(server, gate, speaker) as talk:
        talk.say()
        await gate.entered()
        if answered:
            gate.opened.set()
            await server.wait_for(lambda: "tool_response" in server.kinds(1, "in"), 5)
        server.drop()  # the model thinks over the answer, if it has it
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        speaker.play_out()
        await until(lambda: any(isinstance(e, TurnComplete) for e in talk.events), within=5)
        talk.feed(PlaybackDrained())
    assert speaker.seconds == pytest.approx(PREAMBLE_S), "the first words were heard whole"
    assert Earcon.ERROR in talk.earcons, talk.events


@pytest.mark.parametrize("goodbye", [False, True], ids=["question", "goodbye"])
def test_push_to_talk_first_words_whose_answer_was_lost_end_with_the_error_earcon(
    goodbye: bool,
) -> None:
    """The same in push-to-talk: the words carried on from the next connection end, and
    their answer is lost; once they have played, the error earcon, then idle. Not after
    the model's goodbye (end_conversation): nothing more was to follow it."""
    m = Machine()
    earcons: list[Earcon] = []
    words = ReplyAudio(session=1, pcm=b"\x01\x00" * 100)
    events = [Pressed(), SetupComplete(session=1), Released(), words]
    events += [EndConversation(session=1)] if goodbye else []
    events += [TurnComplete(session=1, answer_lost=True), PlaybackDrained()]
    for event in events:
        m, actions = step(m, event)
        earcons += [a.earcon for a in actions if isinstance(a, PlayEarcon)]
    assert (Earcon.ERROR in earcons) is not goodbye, earcons
    assert m.state is State.IDLE


async def test_hands_free_a_tools_answer_crossing_its_withdrawal_does_not_end_the_conversation(
    server: LiveServer, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """The tool answers just as the person starts talking again: the service withdraws the
    call (toolCallCancellation) while the answer is on its way, and refuses it on arrival
    (1007: an id it no longer knows). That close was taken for a refusal of the key or a
    setting: the conversation ended with the error, mid-sentence. Each journal line says
    what happened once: "reconnecting in 0.4 s: ... (close code 1007: ...): reconnecting"
    said it twice."""
    caplog.set_level(logging.INFO)
    server.config.tool_preamble_seconds = 0.0
    call = server.queue_tool_call("slow")
    async with conversation(server, gate) as talk:
        talk.outbox.put("text", "what time is it?")
        await gate.entered()
        server.config.uplink_bytes_per_s = 500  # the answer takes a while to arrive
        gate.opened.set()
        assert await asyncio.to_thread(gate.finished.wait, 5)
        await asyncio.sleep(0.05)  # the answer is on its way
        await server.cancel_tool_call(call)
        server.config.uplink_bytes_per_s = None
        await until(lambda: any(isinstance(e, Reconnected | ConnectionLost)
                                for e in talk.events), within=10)
        assert talk.machine.session_open, talk.events
    assert not any(isinstance(e, ConnectionLost) for e in talk.events), talk.events
    crossed = [r.getMessage() for r in caplog.records if "crossed" in r.getMessage()]
    assert crossed, "the journal did not say the answer crossed its withdrawal"
    assert all(line.count("reconnecting") <= 1 for line in crossed), crossed


async def test_hands_free_the_box_thinks_until_the_reply_to_a_quick_tools_answer(
    server: LiveServer, gate: Gate
) -> None:
    """The words, the call, the quick answer, the words' end handed on after it: once the
    words had played, the LEDs said listening (push-to-talk: idle) while the model
    thought over the answer, and the reply came out of a box that said it was done."""
    speaker = Speaker()
    server.queue_tool_call("slow")
    async with conversation(server, gate, speaker) as talk:
        await answered_while_the_first_words_play(server, talk, speaker, gate)
        thinking = talk.machine.state
        await until(lambda: sum(isinstance(e, TurnComplete) for e in talk.events) == 2, within=5)
        talk.feed(PlaybackDrained())
    assert thinking is State.THINKING, "the LEDs said the box was done"
    assert talk.machine.state is State.LISTENING
    assert talk.earcons == [Earcon.LISTEN_START], talk.events
