"""Review of the day's diff: cases its changes did not think of. The reply to a tool's
answer through the local server and the real SDK (the link's events fed to the real state
machine); the configuration's refusal; the long press on the real Appliance."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from fakes import Gate, running
from helpers import until
from test_handsfree_drops import conversation
from test_live_session import Speaker
from test_tool_answers_in_order import PREAMBLE_S

from device import config
from device.states import ReplyAudio, SetupComplete
from rig.server.server import LiveServer

#: The reply to the tool's answer: longer than the speaker takes at once, sent whole.
REPLY_S = 8.0


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    """The model says a few words before each tool call, then a long reply to its answer."""
    options = {"tool_preamble_seconds": PREAMBLE_S, "think_seconds": 0.2}
    async with LiveServer(pace=0, reply_seconds=REPLY_S, **options) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


async def test_hands_free_words_over_the_reply_to_a_tools_answer_replace_its_rest(
    server: LiveServer, gate: Gate
) -> None:
    """"Let me look that up", the tool's quick answer, and the reply to it (8 s, sent
    whole: its rest and its end wait for the speaker). The person talks over it ("and
    tomorrow?"); the service, with nothing left to interrupt, transcribes and answers.
    The answer waited behind every second of the old reply: while that reply's end waited
    unhandled the box still owed it, and took the person's words for the late transcript
    of the question that called the tool. The README: such an answer replaces the rest."""
    speaker = Speaker()
    server.queue_tool_call("slow")
    async with conversation(server, gate, speaker) as talk:
        talk.say()
        await gate.entered()
        gate.opened.set()
        await server.wait_for(lambda: server.kinds(1, "out").count("turn_complete") == 2, 5)
        speaker.play_out()  # the first words play out; the reply to the answer begins
        await until(lambda: speaker.seconds > PREAMBLE_S, within=5)
        talk.say()  # over the reply
        await server.wait_for(lambda: server.kinds(1, "out").count("turn_complete") == 3, 5)
        with contextlib.suppress(AssertionError):  # read, or left waiting
            await until(lambda: any(getattr(e, "replaces", False) for e in talk.events), 5)
    replies = [e for e in talk.events if isinstance(e, ReplyAudio)]
    assert any(reply.replaces for reply in replies), "the answer waited behind the old reply"
    assert speaker.seconds < PREAMBLE_S + REPLY_S, "the old reply's rest was heard first"


def test_hands_free_the_least_silence_the_refusal_names_is_accepted(tmp_path: Path) -> None:
    """silence_ms = 640: the refusal says end_after_silence_s "must be at least silence_ms
    (640 ms) and 1 s more"; the owner writes 1.64 and is refused again, by the same line
    (0.64 + 1.0 is a hair above 1.64 in binary floating point)."""
    path = tmp_path / "config.toml"
    path.write_text(
        "[button]\nmode = 'toggle'\n[conversation]\nsilence_ms = 640\nend_after_silence_s = 1.64"
    )
    assert config.load(path, key=False).conversation.end_after_silence_s == 1.64


async def test_push_to_talk_a_long_press_in_a_fans_steady_hum_under_speech_still_hangs_up(
    tmp_path: Path,
) -> None:
    """A fan's steady hum at -45 dBFS: under `speech_dbfs` (-40), the box's silence; but
    within the 10 dB a soft voice is heard in. The owner held the button to hang up, and
    nothing happened: the hum was taken for a soft voice. A voice rises and falls (the
    pauses between words); a hum does not."""
    hum = np.full(640, 184, dtype=np.int16).tobytes()  # -45 dBFS, steady
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        for _ in range(20):
            box.mic.record(hum)
        await box.settle()
        box.appliance._on_button("long_press", time.monotonic())  # ButtonInput's timer
        await box.settle()
        assert box.state == "idle" and box.link.closed
