"""The local Live API server, driven by the real google-genai SDK (raw websockets where
the point is the wire itself)."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import struct
import subprocess
import sys
import termios
import warnings
from pathlib import Path

import numpy as np
import pytest
import websockets
from google import genai
from google.genai import errors, types
from helpers import closed_port

from device.live.websocket import websocket_of
from rig.server.server import (
    DEFAULT_API_KEY,
    DEFAULT_BEARER_TOKEN,
    DEFAULT_EPHEMERAL_TOKEN,
    LiveServer,
    ServerThread,
)
from rig.server.voice import reply_audio, tone_frequency

MODEL = "gemini-3.8-live"
REPLY_S = 0.4
MANUAL = types.RealtimeInputConfig(
    automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
)
GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def server():
    async with LiveServer(pace=0, reply_seconds=REPLY_S) as live:
        yield live


def client_for(server: LiveServer, key: str | None = None, **http) -> genai.Client:
    trust = server.client_ssl_context()
    # "ssl" is the WebSocket's; "verify" spares the SDK building an unused certifi context for
    # its HTTP client (50 ms a client).
    return genai.Client(
        api_key=key or server.api_key,
        http_options=types.HttpOptions(
            base_url=server.base_url, async_client_args={"ssl": trust, "verify": trust}, **http,
        ),
    )


def connect(server: LiveServer, key: str | None = None, **config):
    return client_for(server, key).aio.live.connect(
        model=MODEL, config=types.LiveConnectConfig(**config)
    )


async def one_turn(session) -> list[types.LiveServerMessage]:
    return [message async for message in session.receive()]


def audio_of(messages: list[types.LiveServerMessage]) -> bytes:
    return b"".join(m.data for m in messages if m.data)


def client_socket_queue(session) -> int:
    """Bytes the client's kernel still holds for the server (sent but unread, or unsent)."""
    sock = websocket_of(session).transport.get_extra_info("socket")
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def tone16k(ms: int, amplitude: int = 8000) -> bytes:
    t = np.arange(16 * ms) / 16000
    return (amplitude * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


# ---- the synthesiser ------------------------------------------------------------------


def test_reply_audio_is_a_click_free_tone_per_turn():
    pcm = np.frombuffer(reply_audio(3, 0.5), dtype="<i2").astype(int)
    assert len(pcm) == 12000
    assert abs(pcm[0]) < 50 and abs(pcm[-1]) < 300
    steady_slope = np.abs(np.diff(pcm[1000:2000])).max()
    assert np.abs(np.diff(pcm[:60])).max() <= steady_slope  # 2 ms ramp: no step, no click
    assert np.abs(pcm[48:200]).max() > 15000  # ... yet full level right after it
    assert len({tone_frequency(n) for n in range(1, 9)}) == 8


# ---- client messages reach the log, decoded -------------------------------------------


async def test_every_client_message_is_logged_decoded(server, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)  # the production trust path
    client = genai.Client(api_key=server.api_key,
                          http_options=types.HttpOptions(base_url=server.base_url))
    pcm = bytes(range(256)) * 25  # every byte value, so both alphabets are exercised
    jpeg = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"
    config = types.LiveConnectConfig(realtime_input_config=MANUAL)
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_realtime_input(activity_start=types.ActivityStart())
        await session.send_realtime_input(
            audio=types.Blob(data=pcm, mime_type="audio/pcm;rate=16000"))
        await session.send_realtime_input(video=types.Blob(data=jpeg, mime_type="image/jpeg"))
        await session.send_realtime_input(activity_end=types.ActivityEnd())
        assert audio_of(await one_turn(session)) == reply_audio(1, REPLY_S)
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="what time is it")]),
            turn_complete=True)
        assert audio_of(await one_turn(session)) == reply_audio(2, REPLY_S)
        await session.send_realtime_input(text="and the weather")
        assert audio_of(await one_turn(session)) == reply_audio(3, REPLY_S)
        await session.send_realtime_input(audio_stream_end=True)
        await server.wait_for(lambda: "audio_stream_end" in server.kinds())
    incoming = server.entries(direction="in")
    assert [e.kind for e in incoming] == [
        "setup", "activity_start", "audio", "video", "activity_end", "client_content", "text",
        "audio_stream_end"]
    assert server.audio_in() == pcm
    assert incoming[3].data == jpeg
    assert incoming[5].raw["client_content"]["turns"][0]["parts"][0]["text"] == "what time is it"
    assert incoming[6].raw["realtime_input"]["text"] == "and the weather"
    record = server.log.connections()[0]
    assert record.headers["x-goog-api-key"] == server.api_key and record.auth == "api_key"
    assert record.setup["model"] == f"models/{MODEL}"


# ---- server messages parsed by the SDK ------------------------------------------------


async def test_reply_carries_transcriptions_completion_and_resumption(server):
    config = dict(input_audio_transcription={}, output_audio_transcription={},
                  session_resumption=types.SessionResumptionConfig())
    async with connect(server, **config) as session:
        assert session.session_id
        await session.send_realtime_input(text="hello there")
        turn = await one_turn(session)
        contents = [m.server_content for m in turn if m.server_content]
        assert contents[0].input_transcription.text == "hello there"
        outs = [c.output_transcription.text for c in contents if c.output_transcription]
        assert outs == ['Reply 1: you said "hello there".']
        assert [c.generation_complete for c in contents][-2:] == [True, None]
        assert contents[-1].turn_complete is True
        assert [m.session_resumption_update.resumable for m in turn
                if m.session_resumption_update] == [False]
        after = await anext(aiter(session.receive()))
        assert after.session_resumption_update.resumable is True
        assert after.session_resumption_update.new_handle in server.sessions
    assert server.kinds(direction="out")[:2] == ["setup_complete", "transcription_in"]


async def test_resumption_continues_turn_numbering_and_unknown_handle_is_1007(server):
    resumable = types.SessionResumptionConfig()
    async with connect(server, session_resumption=resumable) as session:
        await session.send_realtime_input(text="one")
        await one_turn(session)
        handle = (await anext(aiter(session.receive()))).session_resumption_update.new_handle
    again = types.SessionResumptionConfig(handle=handle)
    async with connect(server, session_resumption=again) as session:
        await session.send_realtime_input(text="two")
        assert audio_of(await one_turn(session)) == reply_audio(2, REPLY_S)
    assert server.sessions[handle].history == ["one", "two"]
    with pytest.raises(errors.APIError) as caught:
        async with connect(server, session_resumption=types.SessionResumptionConfig(
                handle="no-such-handle")):
            pass
    assert caught.value.code == 1007


# ---- close codes as APIError --------------------------------------------------------------


async def test_a_custom_key_replaces_the_default():
    async with LiveServer(api_key="custom-key", pace=0) as live:
        async with connect(live):
            pass
        with pytest.raises(errors.APIError) as caught:
            async with connect(live, key=DEFAULT_API_KEY):
                pass
    assert caught.value.code == 1008


async def test_wrong_key_is_1008_naming_the_key(server):
    with pytest.raises(errors.APIError) as caught:
        async with connect(server, key="wrong-key"):
            pass
    assert caught.value.code == 1008 and "API key" in str(caught.value)
    assert "wrong-key" not in str(caught.value)


@pytest.mark.parametrize(("model", "config", "code"), [
    ("gemini-9-imaginary", {}, 1008),
    (MODEL, {"response_modalities": ["TEXT"]}, 1007),
    (MODEL, {"thinking_config": types.ThinkingConfig(thinking_budget=0)}, 1007),
    (MODEL, {"proactivity": types.ProactivityConfig(proactive_audio=False)}, 1007),
    (MODEL, {"enable_affective_dialog": True}, 1007),
])
async def test_setup_is_checked_against_the_model(server, model, config, code):
    client = client_for(server)
    with pytest.raises(errors.APIError) as caught:
        async with client.aio.live.connect(model=model, config=types.LiveConnectConfig(**config)):
            pass
    assert caught.value.code == code


async def test_wrong_audio_rate_is_1007(server):
    async with connect(server) as session:
        await session.send_realtime_input(
            audio=types.Blob(data=b"\0" * 640, mime_type="audio/pcm;rate=8000"))
        with pytest.raises(errors.APIError) as caught:
            await one_turn(session)
    assert caught.value.code == 1007 and "16000" in str(caught.value)


@pytest.mark.parametrize("code", [1000, 1008, 1011])
async def test_close_all_surfaces_the_code(server, code):
    async with connect(server) as session:
        await server.close_all(code, "closing for the test")
        with pytest.raises(errors.APIError) as caught:
            await one_turn(session)
    assert caught.value.code == code


async def test_refused_setup_and_setup_delay(server):
    server.config.refuse_setup = (1011, "Internal error: try again.")
    with pytest.raises(errors.APIError) as caught:
        async with connect(server):
            pass
    assert caught.value.code == 1011
    server.config.refuse_setup, server.config.setup_delay = None, 0.1
    async with connect(server):
        pass
    out = server.entries(direction="out")[-1]
    setup = [e for e in server.entries(direction="in") if e.kind == "setup"][-1]
    assert out.kind == "setup_complete" and out.t - setup.t >= 0.1


# ---- raw protocol -----------------------------------------------------------------------------


async def raw_connect(server: LiveServer, path: str = GEMINI_PATH, **headers):
    target = f"wss://127.0.0.1:{server.port}{path}"
    return await websockets.connect(target, ssl=server.client_ssl_context(),
                                    additional_headers=headers)


async def test_raw_client_both_spellings_and_both_base64_alphabets(server):
    chunk_a, chunk_b = bytes([0xFB, 0xFF, 0xBF, 0x01]), bytes([0xFE, 0xFF, 0x3E, 0x02])
    ws = await raw_connect(server, f"/{GEMINI_PATH}?key={server.api_key}")  # '//ws' too
    await ws.send(json.dumps({"setup": {
        "model": f"models/{MODEL}",
        "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}}}}))
    assert "setupComplete" in json.loads(await ws.recv())
    await ws.send(json.dumps({"realtimeInput": {"activityStart": {}}}))
    await ws.send(json.dumps({"realtimeInput": {"audio": {
        "data": base64.b64encode(chunk_a).decode(), "mimeType": "audio/pcm;rate=16000"}}}))
    await ws.send(json.dumps({"realtime_input": {"audio": {
        "data": base64.urlsafe_b64encode(chunk_b).decode().rstrip("="),
        "mime_type": "audio/pcm"}}}))
    await ws.send(json.dumps({"realtime_input": {"activity_end": {}}}))
    first = json.loads(await ws.recv())
    assert first["serverContent"]["modelTurn"]["parts"][0]["inlineData"]["mimeType"] == \
        "audio/pcm;rate=24000"
    await ws.close()
    assert server.audio_in() == chunk_a + chunk_b
    assert server.log.connections()[0].path == GEMINI_PATH
    assert "/" in base64.b64encode(chunk_a).decode() and "_" in \
        base64.urlsafe_b64encode(chunk_b).decode()


@pytest.mark.parametrize(("first", "second", "reason_has"), [
    ("not json", None, "JSON"),
    (json.dumps({"realtimeInput": {"text": "hi"}}), None, "setup"),
    (None, json.dumps({"somethingElse": {}}), "somethingElse"),
    (None, json.dumps({"realtimeInput": {"text": "a", "audioStreamEnd": True}}), "exactly one"),
    (None, json.dumps({"realtimeInput": {"mediaChunks": []}}), "exactly one"),
    (None, json.dumps({"realtimeInput": {"audio": {"data": "AAAA", "mimeType": "audio/wav"}}}),
     "audio/pcm"),
    (None, json.dumps({"toolResponse": {"functionResponses": [{"id": "nope"}]}}), "nope"),
])
async def test_raw_protocol_errors_close_1007(server, first, second, reason_has):
    ws = await raw_connect(server, **{"x-goog-api-key": server.api_key})
    if first is None:
        await ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        assert "setupComplete" in json.loads(await ws.recv())
    await ws.send(first or second)
    with pytest.raises(websockets.ConnectionClosedError) as caught:
        await ws.recv()
    assert caught.value.rcvd.code == 1007 and reason_has in caught.value.rcvd.reason


async def test_unknown_path_is_404_and_vertex_path_takes_a_bearer_token(server):
    with pytest.raises(websockets.InvalidStatus) as caught:
        await raw_connect(server, "/ws/nowhere")
    assert caught.value.response.status_code == 404
    path = "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
    ws = await raw_connect(server, path, Authorization=f"Bearer {DEFAULT_BEARER_TOKEN}")
    await ws.send(json.dumps({"setup": {"model": f"projects/p/locations/l/models/{MODEL}"}}))
    assert "setupComplete" in json.loads(await ws.recv())
    await ws.close()
    assert server.log.connections()[0].endpoint == "vertex"


async def test_ephemeral_token_uses_the_constrained_path(server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.ExperimentalWarning)
        client = client_for(server, key=DEFAULT_EPHEMERAL_TOKEN, api_version="v1alpha")
        async with client.aio.live.connect(model=MODEL) as session:
            await session.send_realtime_input(text="hi")
            assert audio_of(await one_turn(session)) == reply_audio(1, REPLY_S)
        with pytest.raises(errors.APIError) as caught:
            async with client_for(server, key="auth_tokens/forged").aio.live.connect(model=MODEL):
                pass
    assert caught.value.code == 1008
    first = server.log.connections()[0]
    assert first.endpoint == "constrained" and first.auth == "ephemeral_token"
    assert first.headers["authorization"] == f"Token {DEFAULT_EPHEMERAL_TOKEN}"


async def test_an_ephemeral_token_opens_as_many_sessions_as_its_uses_and_resumes_freely(server):
    server.config.token_uses = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.ExperimentalWarning)
        client = client_for(server, key=DEFAULT_EPHEMERAL_TOKEN, api_version="v1alpha")
        resumable = types.LiveConnectConfig(session_resumption=types.SessionResumptionConfig())
        async with client.aio.live.connect(model=MODEL, config=resumable) as session:
            await session.send_realtime_input(text="hi")
            await one_turn(session)
        resume = types.LiveConnectConfig(session_resumption=types.SessionResumptionConfig(
            handle=next(iter(server.sessions))))
        async with client.aio.live.connect(model=MODEL, config=resume):
            pass  # a resume spends no use
        with pytest.raises(errors.APIError) as caught:
            async with client.aio.live.connect(model=MODEL):
                pass
    assert caught.value.code == 1008


# ---- turns -----------------------------------------------------------------------------------


async def test_energy_detector_ends_the_turn_after_the_silence(server):
    vad = types.RealtimeInputConfig(
        automatic_activity_detection=types.AutomaticActivityDetection(silence_duration_ms=200))
    async with connect(server, realtime_input_config=vad, input_audio_transcription={}) as session:
        for piece in (tone16k(300), bytes(2 * 16 * 100)):  # 300 ms speech, 100 ms quiet
            await session.send_realtime_input(
                audio=types.Blob(data=piece, mime_type="audio/pcm;rate=16000"))
        await asyncio.sleep(0.05)
        assert "audio" not in server.kinds(direction="out")  # 100 ms < 200 ms: still listening
        await session.send_realtime_input(
            audio=types.Blob(data=bytes(2 * 16 * 100), mime_type="audio/pcm;rate=16000"))
        turn = await one_turn(session)
    assert turn[0].server_content.input_transcription.text == "300 ms of speech"
    assert audio_of(turn) == reply_audio(1, REPLY_S)


async def test_audio_stream_end_after_speech_ends_the_turn(server):
    async with connect(server) as session:
        await session.send_realtime_input(
            audio=types.Blob(data=tone16k(200), mime_type="audio/pcm;rate=16000"))
        await session.send_realtime_input(audio_stream_end=True)
        assert audio_of(await one_turn(session)) == reply_audio(1, REPLY_S)


async def test_activity_start_during_a_reply_interrupts_it(server):
    server.config.pace, server.config.reply_seconds = 1.0, 2.0
    async with connect(server, realtime_input_config=MANUAL) as session:
        await session.send_realtime_input(text="tell me a story")
        turn = session.receive()
        first = await anext(turn)
        assert first.data == reply_audio(1, 2.0)[:len(first.data)]
        await session.send_realtime_input(activity_start=types.ActivityStart())
        rest = [m async for m in turn]
    contents = [m.server_content for m in rest if m.server_content]
    assert contents[-2].interrupted is True and contents[-1].turn_complete is True
    assert not any(c.generation_complete for c in contents)
    assert len(server.log.audio_out()) < len(reply_audio(1, 2.0)) // 2
    assert server.kinds(direction="out")[-2:] == ["interrupted", "turn_complete"]


async def test_new_speech_during_a_reply_interrupts_it(server):
    server.config.pace, server.config.reply_seconds = 1.0, 2.0
    async with connect(server) as session:  # automatic activity detection
        await session.send_realtime_input(text="tell me a story")
        turn = session.receive()
        assert (await anext(turn)).data
        await session.send_realtime_input(
            audio=types.Blob(data=tone16k(40), mime_type="audio/pcm;rate=16000"))
        contents = [m.server_content for m in [m async for m in turn] if m.server_content]
    assert [c.interrupted for c in contents][-2:] == [True, None]
    assert contents[-1].turn_complete is True


async def test_no_interruption_lets_the_reply_finish(server):
    config = types.RealtimeInputConfig(
        automatic_activity_detection=types.AutomaticActivityDetection(disabled=True),
        activity_handling=types.ActivityHandling.NO_INTERRUPTION)
    async with connect(server, realtime_input_config=config) as session:
        await session.send_realtime_input(text="go")
        await session.send_realtime_input(activity_start=types.ActivityStart())
        assert audio_of(await one_turn(session)) == reply_audio(1, REPLY_S)
    assert "interrupted" not in server.kinds()


async def test_an_interruption_the_model_lets_pass_gets_no_reply_and_the_next_turn_does(server):
    server.config.pace, server.config.reply_seconds = 1.0, 2.0
    async with connect(server, realtime_input_config=MANUAL) as session:
        await session.send_realtime_input(text="tell me a story")
        turn = session.receive()
        assert (await anext(turn)).data
        server.config.unanswered_turns = 1
        await session.send_realtime_input(activity_start=types.ActivityStart())
        await session.send_realtime_input(
            audio=types.Blob(data=tone16k(200), mime_type="audio/pcm;rate=16000"))
        await session.send_realtime_input(activity_end=types.ActivityEnd())
        cut = [m.server_content for m in [m async for m in turn] if m.server_content]
        assert cut[-2].interrupted is True
        server.config.pace, server.config.reply_seconds = 0, REPLY_S
        await session.send_realtime_input(text="are you there?")
        answer = await one_turn(session)
    assert server.config.unanswered_turns == 0, "one turn went unanswered, then no more"
    assert audio_of(answer) == reply_audio(2, REPLY_S), "the next reply is the model's second"
    assert server.kinds(direction="out").count("generation_complete") == 1


# ---- tool calls --------------------------------------------------------------------------


async def test_tool_call_then_response_then_reply(server):
    call_id = server.queue_tool_call("get_time", {"zone": "UTC"})
    async with connect(server) as session:
        await session.send_realtime_input(text="what time is it")
        message = await anext(aiter(session.receive()))
        (call,) = message.tool_call.function_calls
        assert (call.id, call.name, call.args) == (call_id, "get_time", {"zone": "UTC"})
        await session.send_tool_response(function_responses=[
            types.FunctionResponse(id=call.id, name=call.name, response={"time": "noon"})])
        assert audio_of(await one_turn(session)) == reply_audio(1, REPLY_S)
    (response,) = [e for e in server.entries() if e.kind == "tool_response"]
    assert response.raw["tool_response"]["functionResponses"][0]["id"] == call_id


async def test_tool_call_cancellation_by_the_server_and_by_barge_in(server):
    first = server.queue_tool_call("lights", {"on": True})
    second = server.queue_tool_call("lights", {"on": False})
    async with connect(server, realtime_input_config=MANUAL) as session:
        messages = aiter(session.receive())
        await session.send_realtime_input(text="lights on")
        assert (await anext(messages)).tool_call.function_calls[0].id == first
        await server.cancel_tool_call(first)
        assert (await anext(messages)).tool_call_cancellation.ids == [first]
        await session.send_realtime_input(text="lights off")
        assert (await anext(messages)).tool_call.function_calls[0].id == second
        await session.send_realtime_input(activity_start=types.ActivityStart())
        assert (await anext(messages)).tool_call_cancellation.ids == [second]


# ---- goAway and faults ------------------------------------------------------------------------


async def test_go_away_then_close_1000(server):
    async with connect(server) as session:
        await server.send_go_away("0.05s")
        messages = aiter(session.receive())
        assert (await anext(messages)).go_away.time_left == "0.05s"
        with pytest.raises(errors.APIError) as caught:
            await anext(messages)
    assert caught.value.code == 1000


async def test_dropped_tcp_is_1006(server):
    async with connect(server) as session:
        server.drop()
        with pytest.raises(errors.APIError) as caught:
            await one_turn(session)
    assert caught.value.code == 1006


async def test_stall_makes_the_client_wait_until_resumed(server):
    async with connect(server) as session:
        server.stall()
        await session.send_realtime_input(text="anyone there?")
        with pytest.raises(TimeoutError):  # unstalled, the reply comes in ~10 ms
            await asyncio.wait_for(anext(aiter(session.receive())), 0.15)
        assert "text" not in server.kinds()
        server.resume_all()
        assert audio_of(await one_turn(session)) == reply_audio(1, REPLY_S)


async def test_a_slow_uplink_takes_messages_in_at_its_rate_and_the_backlog_stays_with_the_client():
    rate, messages = 600_000, 8  # bytes a second: 70 ms a message
    # Noise, so that permessage-deflate cannot make it smaller on the wire.
    noise = np.random.default_rng(7).integers(-8000, 8000, 16000, dtype="<i2").tobytes()
    message_bytes = len(noise) * 4 // 3  # base64, the least a message of it takes
    async with LiveServer(pace=0, uplink_bytes_per_s=rate) as live, connect(live) as session:
        for _ in range(messages):
            await session.send_realtime_input(
                audio=types.Blob(data=noise, mime_type="audio/pcm;rate=16000"))
        unsent = client_socket_queue(session)  # the server has taken in about 1.5 of them
        await live.wait_for(lambda: len(live.audio_in()) == messages * len(noise), 10)
    arrived = [e.t for e in live.entries(direction="in") if e.kind == "audio"]
    link_s = (messages - 1) * message_bytes / rate
    assert arrived[-1] - arrived[0] > 0.9 * link_s, "faster than the link"
    assert unsent > 2 * message_bytes, "the server read ahead instead of leaving it to the client"


async def test_resuming_while_the_old_connection_is_open_is_1011(server):
    async with connect(server, session_resumption=types.SessionResumptionConfig()) as first:
        await first.send_realtime_input(text="one")
        await one_turn(first)
        handle = (await anext(aiter(first.receive()))).session_resumption_update.new_handle
        with pytest.raises(errors.APIError) as caught:
            async with connect(server, session_resumption=types.SessionResumptionConfig(
                    handle=handle)):
                pass
        assert caught.value.code == 1011
    async with connect(server, session_resumption=types.SessionResumptionConfig(handle=handle)):
        pass  # once the old connection is closed the same handle resumes


async def test_connection_lifetime_is_scaled_goaway_then_close():
    async with LiveServer(pace=0, time_scale=6000, connection_lifetime_s=600,
                          go_away_before_s=60) as live, connect(live) as session:
        messages = aiter(session.receive())
        assert (await anext(messages)).go_away.time_left == "0.01s"
        with pytest.raises(errors.APIError) as caught:
            await anext(messages)
    assert caught.value.code == 1000


async def test_without_compression_a_session_ends_at_its_limit_and_cannot_resume():
    resumable = types.SessionResumptionConfig()
    compressed = types.ContextWindowCompressionConfig(sliding_window=types.SlidingWindow())
    async with LiveServer(pace=0, time_scale=3000, session_limits=True,
                          reply_seconds=0.1) as live:
        # Opened first, the compressed session is past the limit once the other one ends.
        async with connect(live, context_window_compression=compressed) as kept:
            async with connect(live, session_resumption=resumable) as session:
                await session.send_realtime_input(text="hello")
                await one_turn(session)
                update = (await anext(aiter(session.receive()))).session_resumption_update
                handle = update.new_handle
                with pytest.raises(errors.APIError) as caught:
                    await one_turn(session)  # 15 service minutes pass in 0.3 s
            assert caught.value.code == 1011
            await kept.send_realtime_input(text="still here")
            assert audio_of(await one_turn(kept))
        with pytest.raises(errors.APIError) as refused:
            async with connect(live, session_resumption=types.SessionResumptionConfig(
                    handle=handle)):
                pass
        assert refused.value.code == 1007


async def test_junk_frames_reach_the_client(server):
    async with connect(server) as session:
        await server.send_raw(b"not json at all")
        with pytest.raises(ValueError, match="Failed to parse"):
            await one_turn(session)
    assert server.kinds(direction="out")[-1] == "raw"


async def test_stop_leaves_no_task_behind():
    async with LiveServer(pace=1.0, reply_seconds=5.0) as live, connect(live) as session:
        await session.send_realtime_input(text="a long story")
        await anext(aiter(session.receive()))
        await live.stop()
    assert asyncio.all_tasks() == {asyncio.current_task()}


# ---- ServerThread and the command line ------------------------------------------------------


def test_server_thread_serves_a_synchronous_caller():
    async def converse(thread: ServerThread) -> int:
        async with client_for(thread.server).aio.live.connect(model=MODEL) as session:
            await session.send_realtime_input(text="hi")
            assert audio_of(await one_turn(session)) == reply_audio(1, 0.2)
            await asyncio.to_thread(thread.call, thread.server.close_all, 1011, "deadline")
            with pytest.raises(errors.APIError) as caught:
                await one_turn(session)
            return caught.value.code

    with ServerThread(pace=0, reply_seconds=0.2) as thread:
        assert asyncio.run(converse(thread)) == 1011
        thread.wait_for(lambda: "turn_complete" in thread.log.kinds())
        assert thread.call(thread.server.queue_tool_call, "x").startswith("call-")
    assert not thread._thread.is_alive()


def test_command_line_prints_how_to_connect():
    port = closed_port()
    command = [sys.executable, "-m", "rig.server", "--pace", "0", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(5)]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert lines[0] == f"Local Live API server at https://127.0.0.1:{port}\n"
    assert lines[3].startswith("export GOOGLE_GEMINI_BASE_URL=https://")
    assert lines[4].startswith("export SSL_CERT_FILE=")


def test_the_local_servers_export_lines_are_all_ask_needs(tmp_path: Path) -> None:
    """README: `.venv/bin/python -m rig.server` "prints GOOGLE_GEMINI_BASE_URL and
    SSL_CERT_FILE to use". A newcomer pasted its `export` lines and typed
    `live-appliance ask "Hello"`: "configuration error: no API key" (exit 2), the key the
    server takes shown only as a line of prose above them."""
    settings = tmp_path / "config.toml"
    settings.write_text("")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "LIVE_APPLIANCE_CONFIG")}
    server = subprocess.Popen(
        [sys.executable, "-m", "rig.server", "--pace", "0"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        printed = [server.stdout.readline() for _ in range(5)]
        for line in printed:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                env[name] = value
        asked = subprocess.run(
            [sys.executable, "-m", "device", "ask", "Hello", "--config", str(settings)],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
        )  # fmt: skip
    finally:
        server.terminate()
        assert server.wait(10) == 0
    assert asked.returncode == 0, (printed, asked.stderr)
    assert "Reply 1" in asked.stdout
