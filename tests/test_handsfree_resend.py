"""Hands-free, what is sent again on the next connection: what a person in the room hears
when the connection drops or moves."""

from __future__ import annotations

import asyncio

import pytest
from fakes import Gate
from helpers import until
from test_go_away import heard_ms
from test_handsfree_drops import conversation

from device.states import Reconnected, ReplyAudio, SpeechHeard
from rig.server.server import LiveServer

#: [conversation] reply_timeout_s, at its lowest.
REPLY_TIMEOUT_S = 2.0


async def test_hands_free_words_the_model_let_pass_are_not_answered_after_a_later_drop(
    monkeypatch: pytest.MonkeyPatch, gate: Gate,
) -> None:
    """Someone in the room says something the model lets pass (words to another person,
    the TV: proactive audio is always on with gemini-3.8-live), and no handle comes, as
    none follows a turn without a reply. Long after (reply_timeout_s), the connection
    drops: those words went out again on the next one, and the model answered them
    there, out of the blue, stuck to whatever the person said next."""
    async with LiveServer(pace=0, reply_seconds=0.2, unanswered_turns=1) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        timeout = {"reply_timeout_s": REPLY_TIMEOUT_S}
        async with conversation(server, gate, conversation=timeout) as talk:
            talk.say()  # let pass
            await server.wait_for(lambda: "audio_stream_end" in server.kinds(1, "in"), 5)
            await asyncio.sleep(REPLY_TIMEOUT_S + 0.5)
            server.drop()
            await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
            talk.say(12)  # a new question, after the reconnect
            await server.wait_for(lambda: any(400 < ms < 600 for ms in heard_ms(server)), 10)
    assert heard_ms(server) == [pytest.approx(480, abs=100)], "only the new question answered"


async def test_hands_free_a_question_after_words_let_pass_is_heard_alone_on_the_next_connection(
    monkeypatch: pytest.MonkeyPatch, gate: Gate,
) -> None:
    """Words the model let pass, and long after them (reply_timeout_s) a question, which
    the model thinks over when the connection drops. Both went out again on the next
    connection, one after the other: the model heard the question with the old words
    stuck in front of it, as one."""
    async with LiveServer(
        pace=0, reply_seconds=0.2, unanswered_turns=1, think_seconds=1
    ) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        timeout = {"reply_timeout_s": REPLY_TIMEOUT_S}
        async with conversation(server, gate, conversation=timeout) as talk:
            talk.say()  # let pass
            await server.wait_for(lambda: "audio_stream_end" in server.kinds(1, "in"), 5)
            await asyncio.sleep(REPLY_TIMEOUT_S + 0.5)
            talk.say(12)  # the question
            await until(lambda: any(isinstance(e, SpeechHeard) for e in talk.events), within=10)
            server.drop()  # the model thinks
            await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
            await until(lambda: any(isinstance(e, ReplyAudio) for e in talk.events), within=10)
            await server.wait_for(lambda: bool(heard_ms(server)), 5)
    assert heard_ms(server) == [pytest.approx(480, abs=100)], "the question heard alone"
