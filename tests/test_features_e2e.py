"""Tools, search, persona, transcripts, model settings and text turns through the running daemon.

The daemon runs as the service does, against the local server (which issues the
tool calls) and the loopback audio. What is checked is what an owner or the
model would notice: the tool response on the wire with its call's id, the reply
at the speaker and how loud it is, the volume after a restart, the session
closing after a goodbye, the setup the service receives, the journal's
transcript records, and a home automation hook making the box speak.

A slow tool needs nothing registered for the test: `set_volume` writes the state
file, and a FIFO in the state directory in place of its temporary file holds
that write (a stalled SD card, on a Pi) until the test reads it. So "while the
tool runs" is a state the test controls, not a race it hopes to win.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google import genai
from google.genai import errors, types
from helpers import Captured, journal_lines, run_cli, until
from speech import (
    FRAME_S,
    MIC_RATE,
    SPEAKER_RATE,
    assert_clean,
    chirp,
    reply_heard,
    speak_turn,
    tone_frames,
    turns_done,
)
from test_credentials_over_time import token_config
from wire import at, config_for, function_names, instruction, searches, tool_responses

from device.audio import pcm
from device.config import Config
from device.control_client import request
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import (
    ConnectionLost,
    Event,
    Reconnected,
    SetupComplete,
    SpeechHeard,
    TurnComplete,
)
from rig.daemon import Daemon, rig_settings, start_daemon, to_toml
from rig.loopback import PulseLoopback, Recorder
from rig.server.server import LiveServer, ServerThread
from rig.server.voice import tone_frequency
from rig.server.wire import has, pick

REPLY_S = 0.6
PREVIEW_3_1 = "gemini-3.1-flash-live-preview"
OLDER = "gemini-2.5-flash-native-audio-preview-12-2025"
VERTEX_ONLY = "gemini-live-2.5-flash-native-audio"


def tools(*enabled: str, **options: Any) -> dict[str, dict[str, Any]]:
    return {"tools": {"enabled": list(enabled), **options}}


def queue_call(server: ServerThread, name: str, **args: Any) -> str:
    """The server answers the next turn with this call; returns the call's id."""
    assert server.server is not None
    return server.call(server.server.queue_tool_call, name, args)


def responses(server: ServerThread) -> list[dict[str, Any]]:
    assert server.server is not None
    return tool_responses(server.server)


def stop_when_quiet(recorder: Recorder, quiet_s: float = 0.2, timeout: float = 5.0) -> bytes:
    """Stop once the recording ends in `quiet_s` of silence: the reply's tail has arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, times = recorder.timeline()
        quiet_since = recorder.silent_from()
        if quiet_since is not None and times.size and times[-1] - quiet_since >= quiet_s:
            break
        time.sleep(0.05)
    return recorder.stop()


def tone_level(recording: bytes, turn: int) -> float:
    """Median level (dBFS) of the 20 ms stretches that carry reply `turn`'s tone."""
    levels = [pcm.rms_dbfs(f) for f in tone_frames(recording, turn, floor_dbfs=-60)]
    assert len(levels) >= 10, f"reply {turn} ({tone_frequency(turn)} Hz) hardly reached the speaker"
    return float(np.median(levels))


def recorded_turn(loopback: PulseLoopback, daemon: Daemon, n: int) -> bytes:
    """Push-to-talk turn `n`, and what the speaker played meanwhile."""
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.4))
    daemon.wait_until(turns_done(n), 20, f"turn {n} to end")
    return stop_when_quiet(recorder)


# ---- a state directory whose writes hang until the test lets them through ----------------


def hold_state_writes(workdir: Path) -> Path:
    """A FIFO where the state file's temporary copy goes: writing it blocks until read."""
    state = Path(rig_settings("", workdir)["service"]["state_dir"])
    state.mkdir(parents=True, exist_ok=True)
    fifo = state / "state.tmp"
    os.mkfifo(fifo)
    return fifo


def let_write_through(fifo: Path, timeout: float = 10.0) -> str:
    """Read what the held writer writes, to its end; the writer then finishes."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:  # the writer is connected, nothing written yet
                data = None
            if data:
                chunks.append(data)
            elif data == b"" and chunks:  # the writer closed after writing
                break
            else:
                time.sleep(0.01)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


# ---- tool calls through the daemon -----------------------------------------------------------


def test_a_tool_call_is_answered_with_its_id_then_the_reply_plays(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(tools("get_time"), reply_seconds=REPLY_S)
    call_id = queue_call(server, "get_time")
    recording = recorded_turn(loopback, daemon, 1)

    (response,) = responses(server)
    assert (response["id"], response["name"]) == (call_id, "get_time")
    answer = response["response"]
    assert time.strftime("%A", time.strptime(answer["date"], "%Y-%m-%d")) == answer["weekday"]
    assert time.strptime(answer["time"], "%H:%M")
    first = {}
    for entry in server.log.entries():
        first.setdefault((entry.direction, entry.kind), entry.t)
    assert first["out", "tool_call"] < first["in", "tool_response"] < first["out", "audio"]
    reply_heard(recording, turn=1, seconds=REPLY_S)
    status = daemon.status()
    assert status["leds"][-3:] == ["thinking", "speaking", "idle"]
    assert searches(server.log.connections()[0].setup) == 0, "search is off unless turned on"


def test_a_call_to_a_tool_the_box_does_not_offer_is_answered_and_the_reply_plays(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """A service only calls declared tools; if one calls anyway, the box says so by the
    call's id instead of leaving the turn to wait for its reply timer."""
    server, daemon = make_rig(reply_seconds=REPLY_S)  # no tools enabled
    call_id = queue_call(server, "get_time")
    recording = recorded_turn(loopback, daemon, 1)
    (response,) = responses(server)
    assert response["id"] == call_id and "error" in response["response"]
    reply_heard(recording, turn=1, seconds=REPLY_S)


def test_set_volume_makes_the_next_reply_quieter_and_survives_a_restart(
    loopback: PulseLoopback, make_rig: Any, workdir: Path
) -> None:
    settings = {**tools("set_volume"), "audio": {"earcons": False}}
    server, daemon = make_rig(settings, reply_seconds=REPLY_S)
    before = tone_level(recorded_turn(loopback, daemon, 1), turn=1)
    call_id = queue_call(server, "set_volume", percent=30)
    after = tone_level(recorded_turn(loopback, daemon, 2), turn=2)

    assert responses(server) == [
        {"id": call_id, "name": "set_volume", "response": {"volume_percent": 30}}
    ]
    assert daemon.status()["volume"] == 0.3
    assert after < before - 10, f"reply at {after:.1f} dBFS after set_volume, {before:.1f} before"

    daemon.terminate()
    assert server.server is not None
    again = start_daemon(workdir, loopback, server.server, settings=settings)
    try:
        again.wait_ready()
        assert again.status()["volume"] == 0.3
        restarted = tone_level(recorded_turn(loopback, again, 1), turn=1)  # a new session
        assert abs(restarted - after) < 3, f"{restarted:.1f} dBFS after the restart"
    finally:
        again.terminate()


def test_end_conversation_hangs_up_after_the_goodbye_has_played(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(tools("end_conversation"), reply_seconds=REPLY_S)
    call_id = queue_call(server, "end_conversation")
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.4))
    status = daemon.wait_until(lambda s: not s["session_open"], 20, "the hang-up")
    recording = stop_when_quiet(recorder)

    assert [r["id"] for r in responses(server)] == [call_id]
    (record,) = server.log.connections()
    server.wait_for(lambda: record.closed is not None, 5)
    assert record.close_code == 1000
    reply_done = next(e.t for e in server.log.entries() if e.kind == "turn_complete")
    assert record.closed is not None and record.closed > reply_done
    reply_heard(recording, turn=1, seconds=REPLY_S)  # the goodbye was not cut short
    assert status["state"] == "idle"
    assert status["leds"][-3:] == ["thinking", "speaking", "idle"]


def test_a_tool_slower_than_its_timeout_is_answered_with_an_error_and_the_reply_plays(
    loopback: PulseLoopback, make_rig: Any, workdir: Path
) -> None:
    fifo = hold_state_writes(workdir)
    server, daemon = make_rig(tools("set_volume", timeout_s=0.5), reply_seconds=REPLY_S)
    call_id = queue_call(server, "set_volume", percent=30)
    try:
        speak_turn(loopback, daemon, chirp(0.4))
        status = daemon.wait_until(turns_done(1), 20, "the reply after the timeout")
    finally:
        written = let_write_through(fifo)

    assert responses(server) == [
        {"id": call_id, "name": "set_volume", "response": {"error": "timed out after 0.5 s"}}
    ]
    assert status["leds"][-3:] == ["thinking", "speaking", "idle"]
    (logged,) = daemon.wait_for_records(LIVE_TOOL="set_volume")
    assert (logged["LIVE_TOOL_CALL"], logged["LIVE_TOOL_RESULT"]) == (call_id, "error")
    assert json.loads(written)["volume"] == 0.3, "the tool itself ran to its end, alone"
    assert_clean(daemon, server)


def test_a_cancelled_tool_call_gets_no_response_and_the_session_goes_on(
    loopback: PulseLoopback, make_rig: Any, workdir: Path
) -> None:
    fifo = hold_state_writes(workdir)
    server, daemon = make_rig(tools("set_volume", timeout_s=20), reply_seconds=REPLY_S)
    assert server.server is not None
    call_id = queue_call(server, "set_volume", percent=30)
    try:
        speak_turn(loopback, daemon, chirp(0.4))
        # The volume is applied before the state write, which the FIFO holds: it runs.
        daemon.wait_until(lambda s: s["volume"] == 0.3, 10, "set_volume to start")
        server.call(server.server.cancel_tool_call, call_id)
        daemon.wait_for_records(LIVE_TOOL_CALL=call_id, LIVE_TOOL_RESULT="cancelled")
    finally:
        written = let_write_through(fifo)
    assert json.loads(written)["volume"] == 0.3

    speak_turn(loopback, daemon, chirp(0.4))  # the person asks again
    status = daemon.wait_until(turns_done(1), 20, "the next turn")

    assert responses(server) == [], "a cancelled call was answered"
    out = server.log.kinds(direction="out")
    assert out.count("tool_call_cancellation") == 1 and out.count("turn_complete") == 1
    (record,) = server.log.connections()
    assert record.closed is None, "the session ended"
    assert status["leds"][-2:] == ["speaking", "idle"] and "error" not in status["leds"]
    assert_clean(daemon, server)


# ---- what the setup declares -----------------------------------------------------------------


def test_the_setup_declares_exactly_the_enabled_tools_search_and_the_persona_file(
    loopback: PulseLoopback, make_rig: Any, workdir: Path
) -> None:
    persona = workdir / "persona.txt"
    persona.write_text("You are the kitchen radio.\nAnswer in one sentence.\n")
    settings = {
        **tools("device_status", "set_volume", google_search=True),
        "live": {"system_instruction": "You are a pirate.",
                 "system_instruction_file": str(persona)},
    }
    server, daemon = make_rig(settings, reply_seconds=0.3)
    speak_turn(loopback, daemon, chirp(0.3))
    daemon.wait_until(turns_done(1), 20, "the turn")

    setup = server.log.connections()[0].setup
    assert setup is not None
    assert function_names(setup) == ["device_status", "set_volume"]
    assert searches(setup) == 1
    assert instruction(setup) == "You are the kitchen radio.\nAnswer in one sentence."


@pytest.mark.parametrize(("model", "live", "proactivity", "affective", "v1alpha"), [
    # 3.1 has neither feature: "off" is what it does anyway, so both stay out of the setup
    # (the local server, like the service, refuses either one on this model).
    (PREVIEW_3_1, {"proactive_audio": False, "affective_dialog": False}, None, None, False),
    (OLDER, {"proactive_audio": True, "affective_dialog": True},
     {"proactive_audio": True}, True, True),
])
def test_model_settings_reach_the_service_only_where_the_model_takes_them(
    loopback: PulseLoopback, make_rig: Any, model: str, live: dict[str, Any],
    proactivity: Any, affective: Any, v1alpha: bool,
) -> None:
    server, daemon = make_rig({"live": {"model": model, **live}}, reply_seconds=0.3)
    speak_turn(loopback, daemon, chirp(0.3))
    daemon.wait_until(turns_done(1), 20, "the turn")

    (record,) = server.log.connections()
    assert record.setup is not None and record.close_code is None
    assert at(record.setup, "proactivity") == proactivity
    assert at(record.setup, "generation_config", "enable_affective_dialog") == affective
    assert (".v1alpha." in record.path) == v1alpha


def test_a_setting_the_model_cannot_honour_stops_the_daemon_at_start(workdir: Path) -> None:
    settings = rig_settings("https://127.0.0.1:9", workdir)
    settings["live"].update(model=PREVIEW_3_1, proactive_audio=True)
    config = workdir / "config.toml"
    config.write_text(to_toml(settings))
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"live-appliance: configuration error: {config}: [live] proactive_audio: "
        f"{PREVIEW_3_1} does not support proactive audio; remove it or choose {OLDER}"
    ]


@pytest.fixture
def live_server(server: LiveServer) -> LiveServer:
    """conftest's in-process server, named apart from the rig's `ServerThread` here."""
    return server


@pytest.mark.parametrize(("model", "config", "code", "reason"), [
    (PREVIEW_3_1, {"response_modalities": ["TEXT"]}, 1011, "Internal error encountered."),
    (OLDER, {"response_modalities": ["TEXT"]}, 1007,
     "Cannot extract voices from a non-audio request."),
    (VERTEX_ONLY, {"response_modalities": ["AUDIO", "TEXT"]}, 1007,
     "Cannot extract voices from a non-audio request."),
    (PREVIEW_3_1, {"proactivity": types.ProactivityConfig(proactive_audio=False)}, 1007,
     f"{PREVIEW_3_1} does not support proactive audio."),
    (PREVIEW_3_1, {"enable_affective_dialog": False}, 1007,
     f"{PREVIEW_3_1} does not support affective dialog."),
])
async def test_the_local_server_refuses_what_each_model_does_not_take(
    live_server: LiveServer, model: str, config: dict[str, Any], code: int, reason: str
) -> None:
    client = genai.Client(api_key=live_server.api_key,
                          http_options=types.HttpOptions(base_url=live_server.base_url))
    with pytest.raises(errors.APIError) as caught:
        async with client.aio.live.connect(model=model, config=types.LiveConnectConfig(**config)):
            pass
    assert caught.value.code == code
    assert caught.value.details == reason  # the close frame's reason


# ---- transcripts in the journal --------------------------------------------------------------


@pytest.fixture
def journal() -> Iterator[Captured]:
    """What the live link's logger would send to the journal."""
    with journal_lines("device.live") as captured:
        yield captured


async def spoken_turn(live_server: LiveServer, log_transcripts: bool, speech_ms: int) -> None:
    """One push-to-talk turn of `speech_ms` through the live link, until the turn completes."""
    done = asyncio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, TurnComplete):
            done.set()

    outbox = Outbox(hold_s=8)
    outbox.put("activity_start")
    outbox.put("audio", bytes(speech_ms * MIC_RATE // 1000 * 2))
    outbox.put("activity_end")
    cfg = config_for(live_server, live={"log_transcripts": log_transcripts})
    link = LiveLink(cfg, outbox, on_event, lambda _item, _t: None)
    link.open(1)
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await link.close()


def tokens_sent(live_server: LiveServer) -> list[str]:
    return [c.headers["authorization"] for c in live_server.log.connections()]


async def test_each_new_session_takes_up_the_token_written_since_the_last(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """An ephemeral token opens one session by default: the box kept the token it read at
    start, and every press after the first was refused until a restart."""
    live_server.config.token_uses = 1
    live_server.config.ephemeral_tokens = {"auth_tokens/first", "auth_tokens/second"}
    key_file = tmp_path / "token"
    cfg = token_config(live_server, key_file, "auth_tokens/first")
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(hold_s=8), events.append, lambda _item, _t: None)
    try:
        for session, token in enumerate(("first", "second"), 1):
            key_file.write_text(f"auth_tokens/{token}\n")  # the minter's next token
            link.open(session)
            await until(lambda n=session: len(events) >= n, within=10)  # set up, or refused
            await link.close()
    finally:
        await link.close()
    assert [type(e).__name__ for e in events] == ["SetupComplete", "SetupComplete"]
    sent = tokens_sent(live_server)
    assert sent == ["Token auth_tokens/first", "Token auth_tokens/second"]


async def test_a_token_file_written_after_the_start_is_taken_up_at_the_next_press(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """The box started before the job that mints tokens wrote the first: a press says so
    (the error state), and the one after the file is written connects."""
    live_server.config.ephemeral_tokens = {"auth_tokens/late"}
    key_file = tmp_path / "token"
    cfg = config_for(live_server, live={"api_key_file": str(key_file)})
    cfg = dataclasses.replace(cfg, api_key=None, api_key_source=None)
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(hold_s=8), events.append, lambda _item, _t: None)
    try:
        link.open(1)
        await until(lambda: len(events) == 1, within=10)
        await link.close()
        key_file.write_text("auth_tokens/late\n")
        link.open(2)
        await until(lambda: len(events) == 2, within=10)
    finally:
        await link.close()
    refused, ready = events
    assert isinstance(refused, ConnectionLost) and "is missing or empty" in refused.reason
    assert isinstance(ready, SetupComplete)
    assert tokens_sent(live_server) == [
        "Token auth_tokens/late"
    ]


async def test_the_first_session_takes_up_the_token_written_since_the_start(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """The daemon reads the key and builds its client at start; a minter wrote the next
    token before the first press, and that press was refused (1008) with the old one."""
    live_server.config.token_uses = 1
    live_server.config.ephemeral_tokens = {"auth_tokens/next"}
    key_file = tmp_path / "token"
    cfg = token_config(live_server, key_file, "auth_tokens/at-start")
    key_file.write_text("auth_tokens/next\n")  # the minter's next token
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(hold_s=8), events.append, lambda _item, _t: None)
    try:
        await link.prepare()  # as the daemon does at start, before any press
        link.open(1)
        await until(lambda: events, within=10)  # set up, or refused
    finally:
        await link.close()
    assert [type(e).__name__ for e in events] == ["SetupComplete"]
    sent = tokens_sent(live_server)
    assert sent == ["Token auth_tokens/next"]


class Conversation:
    """A session of the link against the local server, and what it reported."""

    def __init__(self, live_server: LiveServer, cfg: Config) -> None:
        self.server = live_server
        self.events: list[Event] = []
        self.outbox = Outbox(hold_s=8)
        self.link = LiveLink(cfg, self.outbox, self.events.append, lambda _item, _t: None)

    async def one_turn(self) -> None:
        """A text turn, answered; the resumption handle it left kept."""
        self.outbox.put("text", "remember the number seven")
        await until(lambda: self.link._handle is not None, within=10)

    async def dropped(self) -> Reconnected | ConnectionLost:
        """The service drops the connection: how the box came back, or that it did not."""
        self.events.clear()
        self.server.drop()
        ends = Reconnected | ConnectionLost
        await until(lambda: any(isinstance(e, ends) for e in self.events), within=10)
        return next(e for e in self.events if isinstance(e, ends))


@contextlib.asynccontextmanager
async def conversation(live_server: LiveServer, cfg: Config) -> AsyncIterator[Conversation]:
    talk = Conversation(live_server, cfg)
    talk.link.open(1)
    try:
        yield talk
    finally:
        await talk.link.close()


async def test_a_new_session_after_a_refused_resume_takes_up_the_token_written_since(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """The session's token is spent by its first connection; resuming needs none, but when
    the service no longer knows the session a new one needs the minter's next token: the
    spent one was refused (1008) and the conversation ended."""
    live_server.config.token_uses = 1
    live_server.config.ephemeral_tokens = {"auth_tokens/first", "auth_tokens/second"}
    key_file = tmp_path / "token"
    cfg = token_config(live_server, key_file, "auth_tokens/first")
    async with conversation(live_server, cfg) as talk:
        await talk.one_turn()
        key_file.write_text("auth_tokens/second\n")  # the minter's next token
        live_server.sessions.clear()  # the service forgot the session: its handle is refused
        assert await talk.dropped() == Reconnected(session=1, history_lost=True)
    assert tokens_sent(live_server) == ["Token auth_tokens/first"] * 2 + [
        "Token auth_tokens/second"
    ]


@pytest.mark.parametrize("turns_before", [0, 1])
async def test_a_new_session_before_any_turn_has_lost_no_history(
    live_server: LiveServer, turns_before: int
) -> None:
    """A handle may come before any turn (right after setup): a resume refused then has
    lost nothing, and the box's three-note "I forgot" earcon would be a false alarm; so
    too after a fresh session that replaced one with turns, before any turn of its own."""
    async with conversation(live_server, config_for(live_server)) as talk:
        await until(lambda: any(isinstance(e, SetupComplete) for e in talk.events), within=10)
        if turns_before:
            await talk.one_turn()
            live_server.sessions.clear()  # the service forgot it: the resume is refused
            assert await talk.dropped() == Reconnected(session=1, history_lost=True)
        talk.link._keep_handle("sim-given-at-setup")  # as the connection does with a handle
        live_server.sessions.clear()
        assert await talk.dropped() == Reconnected(session=1, history_lost=False)


async def test_a_drop_after_a_turn_before_its_handle_came_has_lost_history(
    live_server: LiveServer,
) -> None:
    """Nothing to resume with: the next connection is a fresh session, and the person is
    told the box forgot (it said nothing, and they went on as if it remembered)."""
    async with conversation(live_server, config_for(live_server)) as talk:
        await talk.one_turn()
        talk.link._handle = None  # as if the drop came before the service's handle
        assert await talk.dropped() == Reconnected(session=1, history_lost=True)


async def test_a_resume_refused_for_an_expired_token_takes_up_the_next_and_resumes(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """A conversation longer than its token's life, moved to a new connection: the resume
    with the expired token was refused (1008) and the conversation ended in the error
    state, though the minter had written the next token long before."""
    live_server.config.ephemeral_tokens = {"auth_tokens/first"}
    key_file = tmp_path / "token"
    cfg = token_config(live_server, key_file, "auth_tokens/first")
    async with conversation(live_server, cfg) as talk:
        await talk.one_turn()
        key_file.write_text("auth_tokens/second\n")  # the minter's next token
        live_server.config.ephemeral_tokens = {"auth_tokens/second"}  # the first expired
        assert await talk.dropped() == Reconnected(session=1, history_lost=False)
    assert tokens_sent(live_server) == ["Token auth_tokens/first"] * 2 + [
        "Token auth_tokens/second"
    ]


async def test_transcripts_reach_the_journal_once_per_turn_with_their_fields(
    live_server: LiveServer, journal: Captured
) -> None:
    await spoken_turn(live_server, log_transcripts=True, speech_ms=640)

    heard = [r for r in journal.records if "LIVE_TRANSCRIPT_IN" in r]
    said = [r for r in journal.records if "LIVE_TRANSCRIPT_OUT" in r]
    assert [(r["MESSAGE"], r["LIVE_TRANSCRIPT_IN"]) for r in heard] == [
        ("user said: 640 ms of speech", "640 ms of speech")
    ]
    assert [(r["MESSAGE"], r["LIVE_TRANSCRIPT_OUT"]) for r in said] == [
        ('model said: Reply 1: I heard 640 ms of audio.', 'Reply 1: I heard 640 ms of audio.')
    ]
    assert heard[0]["PRIORITY"] == said[0]["PRIORITY"] == "6"


@pytest.mark.parametrize("end", ["dropped", "closed"])
async def test_words_heard_before_a_turn_is_cut_short_reach_the_journal_once(
    live_server: LiveServer, journal: Captured, end: str
) -> None:
    """The person's words came, then the connection dropped mid-reply, or the session was
    closed (a goodbye, a stop): they were forgotten without a line."""
    live_server.config.pace, live_server.config.reply_seconds = 1.0, 3.0  # still replying
    events: list[Event] = []
    outbox = Outbox(hold_s=8)
    outbox.put("activity_start")
    outbox.put("audio", bytes(640 * MIC_RATE // 1000 * 2))
    outbox.put("activity_end")
    link = LiveLink(config_for(live_server), outbox, events.append, lambda _item, _t: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SpeechHeard) for e in events), within=10)
        if end == "dropped":
            live_server.drop()
            await until(lambda: any(isinstance(e, Reconnected) for e in events), within=10)
    finally:
        await link.close()
    assert not any(isinstance(e, TurnComplete) for e in events)
    heard = [(r["MESSAGE"], r["LIVE_TRANSCRIPT_IN"]) for r in journal.records
             if "LIVE_TRANSCRIPT_IN" in r]  # fmt: skip
    assert heard == [("user said: 640 ms of speech", "640 ms of speech")]


async def test_with_log_transcripts_off_the_journal_has_word_counts_and_no_words(
    live_server: LiveServer, journal: Captured
) -> None:
    await spoken_turn(live_server, log_transcripts=False, speech_ms=640)

    records = [json.dumps(r, default=str) for r in journal.records]
    assert records, "nothing was logged"
    for words in ("640 ms", "speech", "I heard", "audio."):
        assert not [r for r in records if words in r], f"{words!r} reached the journal"
    counts = [r["MESSAGE"] for r in journal.records if "words heard" in r["MESSAGE"]]
    assert counts == ["turn transcript: 4 words heard, 8 said (words not logged)"]
    assert not [r for r in journal.records if any(k.startswith("LIVE_TRANSCRIPT") for k in r)]
    assert live_server.kinds(direction="out").count("transcription_in") == 1, "still asked for"


# ---- text turns from a home automation hook -------------------------------------------------


def hook_says(text: str, workdir: Path) -> None:
    """What a home automation hook runs: the console script, with the daemon's config."""
    script = Path(sys.executable).with_name("live-appliance")
    result = subprocess.run(
        [str(script), "ctl", "text", text, "--config", str(workdir / "config.toml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


@pytest.mark.parametrize("mode", ["push_to_talk", "toggle"])
def test_a_text_turn_over_a_reply_sent_whole_stops_it_for_good_and_the_answer_plays(
    loopback: PulseLoopback, make_rig: Any, mode: str
) -> None:
    """A hook's words while the box speaks are a new question, as a press is: the rest of
    the reply (all of it in the box, as the service sends it) is never heard again, not
    even the part read ahead that refilled the speaker before the words went out."""
    settings = {"button": {"mode": mode}, "audio": {"earcons": False}}
    server, daemon = make_rig(settings, reply_seconds=10.0, pace=0.0, chunk_seconds=0.2)
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    assert request(daemon.socket, "text", text="Tell me a long story")["ok"]
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the first reply")
    time.sleep(1.5)
    asked = time.monotonic()
    assert request(daemon.socket, "text", text="Stop, what time is it?")["ok"]
    daemon.wait_until(lambda s: s["leds"].count("speaking") == 2, 10, "the answer")
    daemon.wait_until(lambda s: s["state"] in ("idle", "listening"), 20, "the answer's end")
    time.sleep(0.3)
    recorder.stop()
    samples, times = recorder.timeline()
    after = pcm.from_float(samples[times > asked + 0.1])  # the speaker's own latency
    assert len(tone_frames(after, 1)) * FRAME_S < 0.05, "the old reply went on"
    assert abs(len(tone_frames(after, 2)) * FRAME_S - 10.0) < 0.3, "the answer played whole"
    assert [words for _, words, _ in text_turns(server)][-1] == "Stop, what time is it?"


def text_turns(server: ServerThread) -> list[tuple[int, str, bool]]:
    """(connection, words, turnComplete) of every client_content the server received."""
    found = []
    for entry in server.log.entries(direction="in"):
        if entry.kind != "client_content":
            continue
        body = pick(entry.raw, "client_content")
        words = " ".join(
            part["text"] for turn in pick(body, "turns") for part in pick(turn, "parts")
            if has(part, "text")
        )
        found.append((entry.conn, words, pick(body, "turn_complete") is True))
    return found


@pytest.mark.parametrize(("mode", "between_turns"), [
    ("push_to_talk", "idle"),
    ("toggle", "listening"),  # a hands-free conversation goes on until nobody speaks
])
def test_ctl_text_opens_a_session_says_the_words_and_the_box_speaks_the_reply(
    loopback: PulseLoopback, make_rig: Any, workdir: Path, mode: str, between_turns: str
) -> None:
    settings = {"button": {"mode": mode}, "conversation": {"end_after_silence_s": 2}}
    server, daemon = make_rig(settings, reply_seconds=REPLY_S)
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()

    hook_says("Say hello", workdir)
    daemon.wait_until(
        lambda s: s["leds"].count("speaking") == 1 and s["state"] == between_turns,
        20, "the first reply",
    )
    hook_says("Now say goodbye", workdir)  # into the session that is open
    daemon.wait_until(
        lambda s: s["leds"].count("speaking") == 2 and s["state"] == between_turns,
        20, "the second reply",
    )
    recording = stop_when_quiet(recorder)

    assert text_turns(server) == [(1, "Say hello", True), (1, "Now say goodbye", True)]
    reply_heard(recording, turn=1, seconds=REPLY_S)
    reply_heard(recording, turn=2, seconds=REPLY_S)
    log = daemon.log()
    assert "user said: Say hello" in log
    assert 'model said: Reply 1: you said "Say hello".' in log
    status = daemon.status()
    assert "connecting" in status["leds"] and "error" not in status["leds"]
    if mode == "toggle":
        status = daemon.wait_until(lambda s: not s["session_open"], 10, "the silence hang-up")
        assert status["state"] == "idle"
    else:
        assert status["state"] == "idle" and status["session_open"]

