"""Hands-free with `barge_in = false`: words said over a reply never cut it; the person
hears it to its end, then the answer (the README's promise for that setting)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fakes import Gate
from test_handsfree_drops import conversation
from test_live_session import Speaker

from device import states as s
from rig.server.server import LiveServer

#: The first reply, longer than the speaker takes at once, sent whole.
REPLY_S = 8.0
#: The answer to the words said over it.
ANSWER_S = 0.2


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with LiveServer(pace=0, reply_seconds=REPLY_S) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


async def test_without_barge_in_words_over_a_whole_reply_leave_it_to_play_to_its_end(
    server: LiveServer, gate: Gate
) -> None:
    """A reply sent whole waits for the speaker; the person talks over it; the service,
    told not to interrupt, transcribes and answers. Its answer must come after the whole
    of the reply, not in place of its rest."""
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
    assert not any(isinstance(e, s.ReplyAudio) and e.replaces for e in talk.events)
