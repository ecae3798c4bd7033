"""What a service (or something posing as it) floods the box with has a bound on what the
box sends back: its answers to tool calls are small whatever the calls were."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

import pytest
from fakes import FakeActions, Gate, gated_tools
from google.genai import types
from google.genai.live import AsyncSession
from helpers import until
from speech import (
    SPEAKER_RATE,
    tone_frames,
)
from test_live_connection import Seen, ToolAnswers, connection
from test_live_connection import tool_call as sdk_tool_call
from test_privacy_e2e import speak
from test_server_fuzz import ScriptedWire, sdk_client
from test_tools import WAIT_S, run_alone

from device import logs
from device.audio import pcm
from device.config import LiveConfig, ToolsConfig
from device.errors import TEXT_LIMIT
from device.live.client import run_turn
from device.live.connection import TOOL_CALLS_LIMIT, Connection
from device.live.hooks import Hooks
from device.live.turn import WireTurn
from device.outbox import Outbox
from device.tools import RESULT_LIMIT, TOOL_THREADS_LIMIT, Device, Registry, ToolBox
from rig.loopback import PulseLoopback

#: Turns of the loop the box is given after the service's last frame, for its answers.
SETTLE = [lambda: None] * 20


def answered(frames: list[bytes], tools: ToolBox | None = None) -> list[str]:
    """What the box sent back over a scripted connection whose service sent `frames`."""
    wire = ScriptedWire([*frames, *SETTLE])
    session = AsyncSession(api_client=sdk_client(), websocket=wire)  # type: ignore[arg-type]
    hooks = Hooks(1, lambda event: None, lambda item, t: None, lambda handle: None)
    connection = Connection(session, contextlib.AsyncExitStack(), LiveConfig(), Outbox(5),
                            hooks, WireTurn(), tools)  # fmt: skip
    asyncio.run(connection.run())
    return wire.answers


def tool_call(*calls: dict[str, object]) -> bytes:
    return json.dumps({"toolCall": {"functionCalls": list(calls)}}).encode()


def test_a_call_with_forty_thousand_made_up_arguments_is_answered_in_a_few_kilobytes() -> None:
    """The model's arguments were echoed whole in the error ("unexpected argument(s): ..."):
    a megabyte sent back for one call, ahead of the person's speech on the link."""
    made_up = {f"made_up_argument_{n:06d}": 0 for n in range(40_000)}
    toolbox = ToolBox(ToolsConfig(enabled=("set_volume",)), FakeActions())
    [answer] = answered([tool_call({"id": "c1", "name": "set_volume", "args": made_up})], toolbox)
    [response] = json.loads(answer)["tool_response"]["functionResponses"]
    assert response["response"]["error"].startswith("bad arguments: unexpected argument(s)")
    assert len(answer) < TEXT_LIMIT + 1024, len(answer)


def test_twenty_thousand_calls_at_once_are_answered_in_a_few_kilobytes() -> None:
    """Past the calls the box runs at once, each was answered busy in one message: 750 KB
    of calls brought 2.5 MB of answers, held on the link ahead of the person's speech."""
    calls = [{"id": f"c{n}", "name": "get_time"} for n in range(20_000)]
    frame = tool_call(*calls)
    toolbox = ToolBox(ToolsConfig(enabled=("get_time",)), FakeActions())
    answers = answered([frame], toolbox)
    responses = [response for answer in answers
                 for response in json.loads(answer)["tool_response"]["functionResponses"]]
    assert any("busy" in response["response"].get("error", "") for response in responses)
    assert sum(len(answer) for answer in answers) < 16 * 1024, len(answers)


def test_ask_answers_twenty_thousand_calls_at_once_in_a_few_kilobytes() -> None:
    """`ask` and `doctor --turn` answered every call "not run", all in one message: 750 KB
    of calls brought 2 MB of answers back."""
    calls = [{"id": f"c{n}", "name": "get_time"} for n in range(20_000)]
    wire = ScriptedWire([tool_call(*calls), json.dumps({"serverContent": {"turnComplete": True}})
                         .encode()])  # fmt: skip
    session = AsyncSession(api_client=sdk_client(), websocket=wire)  # type: ignore[arg-type]
    reply = asyncio.run(run_turn(session, "what time is it?"))
    assert reply.audio == b""
    answers = [answer for answer in wire.answers if "tool_response" in answer]
    assert answers, wire.answers
    assert sum(len(answer) for answer in answers) < 16 * 1024, len(answers[0])


async def test_tools_busy_again_after_the_threads_came_free_is_said_again(
    gate: Gate, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every tool thread hung, a call refused busy: one LIVE_BOUND=tool_threads line. The
    threads came free and a call ran; hung again later, the new run of refusals is news,
    said again (at most a minute after the last, here at once): it was one line for the
    life of the service."""
    monkeypatch.setattr(logs.SaidOnce, "EVERY_S", 0.0)
    tools = ToolsConfig(enabled=("slow",), timeout_s=0.1)
    toolbox = ToolBox(tools, FakeActions(), registry=gated_tools(gate))
    bounds = lambda: [  # noqa: E731
        r for r in caplog.records if getattr(r, "LIVE_BOUND", "") == "tool_threads"
    ]
    tool_threads = lambda: sum(t.name == "tool" for t in threading.enumerate())  # noqa: E731
    for hung in (1, 2):
        for _ in range(TOOL_THREADS_LIMIT):  # each hangs past its timeout
            assert await run_alone(toolbox, "slow") == {"error": "timed out after 0.1 s"}
        busy = await run_alone(toolbox, "slow")
        assert busy["error"].startswith("the device is busy"), busy
        assert len(bounds()) == hung, [r.getMessage() for r in bounds()]
        gate.opened.set()  # the hung calls return: a call runs again
        await until(lambda: tool_threads() == 0, WAIT_S)
        assert await run_alone(toolbox, "slow") == {"done": True}
        gate.opened.clear()


async def test_a_tool_call_flood_after_the_calls_ran_out_is_said_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The service calls more tools than may run at once: one LIVE_BOUND=tool_calls line.
    The calls ran out and one more ran with room; a new flood later is news, said again
    (at most a minute after the last, here at once): it was one line for the life of the
    connection."""
    monkeypatch.setattr(logs.SaidOnce, "EVERY_S", 0.0)
    turn, session = WireTurn(), ToolAnswers()
    conn = connection(Seen(), turn, session)
    bounds = lambda: [  # noqa: E731
        r for r in caplog.records if getattr(r, "LIVE_BOUND", "") == "tool_calls"
    ]
    async with asyncio.TaskGroup() as group:
        conn._group = group
        for flood in ("a", "b"):
            conn._dispatch(sdk_tool_call(flood, TOOL_CALLS_LIMIT + 1))
            await until(lambda: not conn._tool_runs)
            conn._dispatch(sdk_tool_call(f"{flood}-alone-", 1))  # room for it
            await until(lambda: not conn._tool_runs)
    assert len(bounds()) == 2, [r.getMessage() for r in bounds()]


#: Where the test's stand-in for an endless stream stops, so that a failing run ends too.
STREAM_CAP = 1_000_000


def streaming_tools(read: list[int]) -> Registry:
    registry = Registry()

    def stream() -> Any:
        """A sensor's readings for ever (here to STREAM_CAP), counted as they are read."""
        for value in range(STREAM_CAP):
            read[0] += 1
            yield value

    @registry.tool
    def readings(device: Device) -> dict[str, Any]:
        """The thermometer's readings, by an owner who put its stream in the result."""
        return {"unit": "C", "readings": stream()}

    return registry


async def test_an_endless_stream_inside_a_tools_result_is_read_no_further_than_could_be_sent(
) -> None:
    """The bound on a tool's iterator held only for one returned bare: the same stream in a
    dict ({"readings": stream()}) was read to its end, which for an endless one is never,
    a list growing in the abandoned thread until the service's memory limit killed the
    box. It is read as far as RESULT_LIMIT could hold, and answered too large."""
    read = [0]
    toolbox = ToolBox(ToolsConfig(enabled=("readings",), timeout_s=30.0), FakeActions(),
                      registry=streaming_tools(read))
    response = await toolbox.run(types.FunctionCall(id="c1", name="readings", args={}))
    assert response.response is not None
    assert "too large" in response.response.get("error", ""), response.response
    await until(lambda: not any(t.name == "tool" for t in threading.enumerate()))
    assert read[0] <= RESULT_LIMIT + 1, f"{read[0]} readings taken from an endless stream"


def stream_tools() -> Registry:
    registry = Registry()

    @registry.tool
    async def motion(device: Device) -> Any:
        """The motion sensor's events, by an owner who wrote it as an async stream."""
        yield {"moved": True}

    return registry


async def test_an_async_stream_tool_is_refused_when_registered_not_at_every_call() -> None:
    """An `async def` tool is refused when it is registered; one that yields (an async
    generator, no coroutine function) was taken: its thread got an async generator it
    never runs, and every call answered the model "the tool's result is not JSON", the
    box started as if the tool worked."""
    with pytest.raises(TypeError, match=r"tool motion: .*async def"):
        registry = stream_tools()
        toolbox = ToolBox(ToolsConfig(enabled=("motion",)), FakeActions(), registry=registry)
        response = await toolbox.run(types.FunctionCall(id="c1", name="motion", args={}))
        raise AssertionError(f"registered, and its call answered {response.response}")


def test_hands_free_a_press_during_a_flood_silences_the_speaker_at_once(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 14, 3: "a press during such a flood silences the speaker as fast as during any
    reply": a ten-minute reply sent at once, hands-free, where the press hangs up."""
    _, daemon = make_rig(
        {"button": {"mode": "toggle"}, "audio": {"earcons": False}},
        pace=0,
        reply_seconds=600.0,
    )
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    speak(loopback)
    daemon.wait_until(lambda s: s["state"] == "speaking", 20, "the long reply to start")
    time.sleep(3.0)
    pressed = time.monotonic()
    daemon.ctl("press")  # hands-free, the press hangs up
    daemon.wait_until(lambda s: not s["session_open"], 10, "the hang-up")
    time.sleep(1.0)
    recorder.stop()
    samples, times = recorder.timeline()
    played = pcm.from_float(samples[(times > pressed - 2.5) & (times < pressed)])
    assert len(tone_frames(played, turn=1)) * 0.02 > 2.0, "the long reply did not play"
    after = samples[(times > pressed + 0.25) & (times < pressed + 1.0)]
    assert after.size and abs(after).max() < pcm.db_to_amplitude(-50), "speaker not silent"
