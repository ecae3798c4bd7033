"""A tool's call, its answer and the model's words around them, in the orders the service
and the box's own read-ahead bring them: through the local server and the real SDK, the
link's events fed to the real state machine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakes import Gate
from helpers import until
from test_handsfree_drops import Conversation, conversation
from test_live_session import Speaker

from device.states import Earcon, PlaybackDrained, Reconnected, Reconnecting, TurnComplete
from rig.server.server import LiveServer

#: "Let me look that up", longer than the speaker takes at once (test_live_session's
#: AHEAD_S): its end waits in the read-ahead while its first seconds play.
PREAMBLE_S = 5.0


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    """The model says a few words before each tool call, and thinks 2 s over its answer."""
    options = {"tool_preamble_seconds": PREAMBLE_S, "think_seconds": 2.0}
    async with LiveServer(pace=0, reply_seconds=0.2, **options) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
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
