"""2. A turn through the kernel's loopback card: speech in with aplay, the button
pressed and released, the reply out with arecord; the journal tells the story."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hilrig import (
    SPEECH_HZ,
    Button,
    Turn,
    dominant_hz,
    journal,
    loud_seconds,
    save,
    speak_a_turn,
    states,
)

pytestmark = pytest.mark.usefixtures("installed")

#: The local server's first reply of a session is a 440 Hz tone (rig/server/voice.py).
REPLY_HZ = 440.0


@pytest.fixture(scope="module")
def turn(server: Any, button: Button, tmp_path_factory: pytest.TempPathFactory) -> Turn:
    turn = speak_a_turn(server, button, tmp_path_factory.mktemp("turn"))
    save("turn-heard-24k.raw", turn.heard)
    save("turn-server-16k.raw", turn.server_audio)
    return turn


def test_the_server_received_the_speech(turn: Turn) -> None:
    assert loud_seconds(turn.server_audio, 16000) >= 1.0
    assert abs(dominant_hz(turn.server_audio, 16000) - SPEECH_HZ) < 10


def test_the_reply_was_heard_at_the_speaker(turn: Turn) -> None:
    assert loud_seconds(turn.heard, 24000) >= 1.0, "no reply reached the loopback speaker"
    assert dominant_hz(turn.heard, 24000) == pytest.approx(REPLY_HZ, abs=10)


def test_the_journal_shows_the_states_in_order(turn: Turn) -> None:
    seen = states(turn.cursor)
    wanted = ["listening", "thinking", "speaking", "idle"]
    position = 0
    for state in seen:
        if position < len(wanted) and state == wanted[position]:
            position += 1
    assert position == len(wanted), f"states in the journal: {seen}"


def test_the_journal_has_the_turns_latencies(turn: Turn) -> None:
    """The README's recipe fields: one entry per turn with its timings, and the setup's."""
    entries = journal(turn.cursor)
    turns = [e for e in entries if "LIVE_TURN" in e]
    assert len(turns) == 1, turns
    for field in ("LIVE_PRESS_TO_FIRST_AUDIO_MS", "LIVE_RELEASE_TO_FIRST_REPLY_MS",
                  "LIVE_TURN_MS"):
        assert float(turns[0][field]) >= 0, field
    setups = [e for e in journal(None) if "LIVE_SETUP_MS" in e]
    assert setups and float(setups[-1]["LIVE_SETUP_MS"]) > 0
    save("turn-journal.json", json.dumps(entries, indent=1))

