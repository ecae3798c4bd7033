"""Device tools: calls from the local server answered over a real SDK session, each tool's
readings from fake /proc and /sys trees, and the declarations built from a signature."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

import pytest
from fakes import FakeActions, gated_tools
from google.genai import types
from helpers import until
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, computed_field
from system_view import SystemView
from wire import tool_responses

from device import tools
from device.config import Config, LiveConfig, Secret, ToolsConfig
from device.errors import ConfigError
from device.live.setup import connect_config, make_client
from device.tools import (
    RESULT_LIMIT,
    TOOL_THREADS_LIMIT,
    VOLUME_CHANGES_PER_MINUTE,
    WITHDRAWN,
    Device,
    Registry,
    ToolBox,
    declarations,
)
from rig.server.server import LiveServer
from rig.server.voice import reply_audio

REPLY_S = 0.2
WAIT_S = 5.0


@pytest.fixture
async def server():
    async with LiveServer(pace=0, reply_seconds=REPLY_S) as live:
        yield live


#: A session that declares none of the device's tools: the tests' own registries answer.
NO_TOOLS = ToolsConfig(enabled=())


def session_for(server: LiveServer, tools: ToolsConfig, monkeypatch: pytest.MonkeyPatch):
    """A real SDK session to the local server, set up by our own code."""
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
    cfg = Config(live=LiveConfig(base_url=server.base_url), tools=tools,
                 api_key=Secret(server.api_key))
    return make_client(cfg).aio.live.connect(model=cfg.live.model,
                                             config=connect_config(cfg, None))


async def ask_for_tool(session, text: str) -> types.FunctionCall:
    """Say something; the server answers with the queued tool call."""
    await session.send_realtime_input(text=text)
    message = await anext(aiter(session.receive()))
    (call,) = message.tool_call.function_calls
    return call


async def reply_after(session) -> bytes:
    """The audio of the turn that follows a tool response."""
    return b"".join([m.data async for m in session.receive() if m.data])


async def run_alone(toolbox: ToolBox, name: str, **args: Any) -> dict[str, Any]:
    response = await toolbox.run(types.FunctionCall(id="call-1", name=name, args=args))
    assert (response.id, response.name) == ("call-1", name)
    assert response.response is not None
    return response.response


# ---- calls from the server, over the SDK ------------------------------------------------


async def test_a_tool_call_runs_and_its_response_carries_the_id(server, monkeypatch, caplog):
    actions = FakeActions()
    toolbox = ToolBox(ToolsConfig(enabled=("set_volume",)), actions)
    call_id = server.queue_tool_call("set_volume", {"percent": 40})
    caplog.set_level(logging.INFO, logger="device.tools")
    async with session_for(server, ToolsConfig(enabled=("set_volume",)), monkeypatch) as session:
        call = await ask_for_tool(session, "a bit quieter please")
        response = await toolbox.run(call)
        await session.send_tool_response(function_responses=[response])
        assert await reply_after(session) == reply_audio(1, REPLY_S)
    assert tool_responses(server) == [
        {"id": call_id, "name": "set_volume", "response": {"volume_percent": 40}}
    ]
    assert actions.levels == [0.4]
    (record,) = [r for r in caplog.records if getattr(r, "LIVE_TOOL", None)]
    assert record.LIVE_TOOL == "set_volume" and record.LIVE_TOOL_MS >= 0
    assert "ok" in record.getMessage()


async def test_a_slow_tool_times_out_with_an_error_and_the_session_goes_on(
    server, monkeypatch, gate
):
    tools = ToolsConfig(enabled=("slow",), timeout_s=0.1)
    toolbox = ToolBox(tools, FakeActions(), registry=gated_tools(gate))
    call_id = server.queue_tool_call("slow")
    async with session_for(server, ToolsConfig(), monkeypatch) as session:
        call = await ask_for_tool(session, "do the slow thing")
        response = await toolbox.run(call)
        assert not gate.finished.is_set()  # answered while the tool was still running
        await session.send_tool_response(function_responses=[response])
        assert await reply_after(session) == reply_audio(1, REPLY_S)
    assert tool_responses(server) == [
        {"id": call_id, "name": "slow", "response": {"error": "timed out after 0.1 s"}}
    ]


async def test_a_failing_tool_answers_an_error_object_and_the_session_goes_on(
    server, monkeypatch, gate, caplog
):
    caplog.set_level(logging.INFO, logger="device.tools")
    toolbox = ToolBox(ToolsConfig(enabled=("broken",)), FakeActions(),
                      registry=gated_tools(gate))
    call_id = server.queue_tool_call("broken")
    async with session_for(server, ToolsConfig(), monkeypatch) as session:
        response = await toolbox.run(await ask_for_tool(session, "check the sensor"))
        await session.send_tool_response(function_responses=[response])
        assert await reply_after(session) == reply_audio(1, REPLY_S)
        await session.send_realtime_input(text="and now?")
        assert await reply_after(session) == reply_audio(2, REPLY_S)
    assert tool_responses(server) == [{
        "id": call_id, "name": "broken", "response": {"error": "RuntimeError: sensor unplugged"},
    }]
    (record,) = [r for r in caplog.records if r.name == "device.tools"]
    assert (record.levelno, record.LIVE_TOOL) == (logging.WARNING, "broken")
    assert "sensor unplugged" in record.getMessage()


async def test_cancellation_stops_the_call_and_nothing_is_answered(server, monkeypatch, gate):
    toolbox = ToolBox(ToolsConfig(enabled=("slow",)), FakeActions(), registry=gated_tools(gate))
    call_id = server.queue_tool_call("slow")
    async with session_for(server, ToolsConfig(), monkeypatch) as session:
        messages = aiter(session.receive())
        await session.send_realtime_input(text="do the slow thing")
        (call,) = (await anext(messages)).tool_call.function_calls
        running = asyncio.create_task(toolbox.run(call))
        assert await asyncio.to_thread(gate.started.wait, WAIT_S)
        await server.cancel_tool_call(call_id)
        assert (await anext(messages)).tool_call_cancellation.ids == [call_id]
        running.cancel(WITHDRAWN)  # what the link does on toolCallCancellation
        with pytest.raises(asyncio.CancelledError):
            await running
        assert not gate.finished.is_set()
        gate.opened.set()
        assert await asyncio.to_thread(gate.finished.wait, WAIT_S)
        await session.send_realtime_input(text="never mind")
        assert await reply_after(session) == reply_audio(1, REPLY_S)
    assert tool_responses(server) == []
    assert "tool_response" not in server.kinds()


# ---- bad calls --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "args", "error"), [
    ("set_volume", {"percent": 150},
     "bad arguments: argument percent: Input should be less than or equal to 100"),
    ("set_volume", {"percent": "loud"}, "bad arguments: argument percent: Input should be a valid"
     " integer, unable to parse string as an integer"),
    ("set_volume", {"percent": True},
     "bad arguments: argument percent: Input should be a number, not true"),
    ("set_volume", {}, "bad arguments: missing argument: percent"),
    ("set_volume", {"percent": 5, "room": "kitchen"},
     "bad arguments: unexpected argument(s): room"),
    ("get_time", {}, "no tool named 'get_time' on this device"),  # known, but not enabled
    ("rm_rf", {}, "no tool named 'rm_rf' on this device"),
])
async def test_bad_calls_answer_an_error_and_touch_nothing(name, args, error):
    actions = FakeActions()
    toolbox = ToolBox(ToolsConfig(enabled=("set_volume",)), actions)
    assert await run_alone(toolbox, name, **args) == {"error": error}
    assert actions.levels == []


async def test_json_numbers_are_accepted_for_integer_parameters():
    actions = FakeActions()
    toolbox = ToolBox(ToolsConfig(enabled=("set_volume",)), actions)
    assert await run_alone(toolbox, "set_volume", percent=25.0) == {"volume_percent": 25}
    assert actions.levels == [0.25]


def test_an_unknown_enabled_tool_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError) as caught:
        ToolBox(ToolsConfig(enabled=("get_time", "lights")), FakeActions())
    assert str(caught.value) == (
        "[tools] enabled: unknown tool 'lights'; "
        "known tools: get_time, device_status, set_volume, end_conversation"
    )


# ---- each device tool ---------------------------------------------------------------------


def fake_root(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


WIRELESS = """\
Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   54.  -56.  -256        0      0      0      0     18        0
"""


async def test_device_status_reads_proc_and_sys(tmp_path):
    root = fake_root(tmp_path, {
        "proc/uptime": "97385.42 180000.00\n",
        "sys/class/thermal/thermal_zone0/temp": "48312\n",
        "proc/net/wireless": WIRELESS,
    })
    toolbox = ToolBox(ToolsConfig(enabled=("device_status",)), FakeActions(0.7), root=root)
    assert await run_alone(toolbox, "device_status") == {
        "uptime": "1 d 3 h 3 min", "cpu_temperature_c": 48.3, "wifi_signal_dbm": -56,
        "volume_percent": 70,
    }


async def test_device_status_says_unknown_for_what_the_machine_lacks(tmp_path):
    root = fake_root(tmp_path, {
        "proc/uptime": "garbage",
        "proc/net/wireless": WIRELESS.split(" wlan0")[0],  # headers only: no Wi-Fi interface
    })
    toolbox = ToolBox(ToolsConfig(enabled=("device_status",)), FakeActions(0.05), root=root)
    assert await run_alone(toolbox, "device_status") == {
        "uptime": "unknown", "cpu_temperature_c": "unknown", "wifi_signal_dbm": "unknown",
        "volume_percent": 5,
    }


async def test_get_time_tells_the_local_date_time_weekday_and_zone(tmp_path: Path):
    cest = timezone(timedelta(hours=2), "CEST")
    toolbox = ToolBox(ToolsConfig(enabled=("get_time",)), FakeActions(), root=tmp_path,
                      now=lambda: datetime(2026, 5, 4, 14, 3, 59, tzinfo=cest))
    assert await run_alone(toolbox, "get_time") == {
        "date": "2026-05-04", "time": "14:03", "weekday": "Monday", "timezone": "CEST",
        "utc_offset": "+0200",
    }


async def test_get_time_before_the_clock_is_set_does_not_tell_a_date():
    """A box that boots with no network starts at 1970 (or its last shutdown): asked the
    time, the model was told "1970-01-01, Thursday" and said so to the person."""
    toolbox = ToolBox(ToolsConfig(enabled=("get_time",)), FakeActions(),
                      now=lambda: datetime(1970, 1, 1, 0, 2, tzinfo=UTC))
    response = await run_alone(toolbox, "get_time")
    assert "date" not in response and "time" not in response, response
    assert "clock is not set" in response["error"]


#: The last shutdown's time, as fake-hwclock (or timesyncd's own clock file) sets it at boot.
LAST_SHUTDOWN = datetime(2026, 11, 28, 18, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    ("timesyncd", "warned"),
    [("not synced", True), ("synced", False), ("absent", False)],
)  # fmt: skip
async def test_get_time_says_a_clock_not_yet_set_from_the_network_may_be_wrong(
    tmp_path: Path, timesyncd: str, warned: bool
) -> None:
    """A box switched off for a week boots at its last shutdown's time; with NTP out of
    reach (UDP 123 blocked where HTTPS is not) it stays there: asked the time, the model
    said last week's date and time as if they were sure. chrony or ntpd leave no mark of
    timesyncd's: nothing says their clock is wrong."""
    if timesyncd != "absent":
        (tmp_path / "run/systemd/timesync").mkdir(parents=True)
    if timesyncd == "synced":
        (tmp_path / "run/systemd/timesync/synchronized").touch()
    toolbox = ToolBox(ToolsConfig(enabled=("get_time",)), FakeActions(), root=tmp_path,
                      now=lambda: LAST_SHUTDOWN)
    response = await run_alone(toolbox, "get_time")
    assert (response["date"], response["time"]) == ("2026-11-28", "18:40")
    assert ("not been set from the network" in response.get("warning", "")) == warned


async def test_end_conversation_asks_the_appliance_to_hang_up():
    actions = FakeActions()
    toolbox = ToolBox(ToolsConfig(enabled=("end_conversation",)), actions)
    assert await run_alone(toolbox, "end_conversation") == {
        "result": "the device hangs up after this reply"
    }
    assert actions.hangups == 1


# ---- declarations ----------------------------------------------------------------------------


def test_a_tool_added_with_typed_parameters_is_declared_from_its_signature():
    registry = Registry()

    @registry.tool
    def water_plants(
        device: Device,
        minutes: Annotated[int, Field(ge=1, le=30, description="how long to water")],
        zone: Literal["front", "back"] = "front",
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Water the garden."""
        return {}

    tools = ToolsConfig(enabled=("water_plants",), google_search=True)
    assert ToolBox(tools, FakeActions(), registry=registry).declarations() == [
        types.Tool(function_declarations=[types.FunctionDeclaration(
            name="water_plants",
            description="Water the garden.",
            parameters=types.Schema(
                type=types.Type.OBJECT,
                properties={
                    "minutes": types.Schema(type=types.Type.INTEGER, minimum=1, maximum=30,
                                            description="how long to water"),
                    "zone": types.Schema(type=types.Type.STRING, enum=["front", "back"],
                                         default="front"),
                    "dry_run": types.Schema(type=types.Type.BOOLEAN, default=False),
                },
                required=["minutes"],
            ),
        )]),
        types.Tool(google_search=types.GoogleSearch()),
    ]


def test_a_tool_without_parameter_types_is_refused_when_registered():
    registry = Registry()
    with pytest.raises(TypeError, match="tool shout: give 'words' a type"):

        @registry.tool
        def shout(device: Device, words) -> dict[str, Any]:
            """Says it loudly."""
            return {}


async def test_hung_tools_are_capped_and_the_model_is_told_the_device_is_busy(gate, caplog):
    tools = ToolsConfig(enabled=("slow",), timeout_s=0.1)
    toolbox = ToolBox(tools, FakeActions(), registry=gated_tools(gate))

    def tool_threads() -> int:
        return sum(thread.name == "tool" for thread in threading.enumerate())

    for _ in range(TOOL_THREADS_LIMIT):  # each hangs past its timeout: its thread lives on
        assert await run_alone(toolbox, "slow") == {"error": "timed out after 0.1 s"}
    assert tool_threads() == TOOL_THREADS_LIMIT
    for _ in range(3):
        busy = await run_alone(toolbox, "slow")
        assert busy["error"].startswith("the device is busy: 4 other tool calls are still")
    assert tool_threads() == TOOL_THREADS_LIMIT, "no thread started past the bound"
    bounds = [r for r in caplog.records if getattr(r, "LIVE_BOUND", None) == "tool_threads"]
    assert len(bounds) == 1
    gate.opened.set()  # the hung calls return at last: calls run again
    await until(lambda: tool_threads() == 0, WAIT_S)
    assert await run_alone(toolbox, "slow") == {"done": True}


@pytest.mark.parametrize(("why", "result"), [(WITHDRAWN, "cancelled"), (None, "ended")])
async def test_a_call_cut_short_says_whether_the_service_withdrew_it_or_its_session_ended(
    gate, caplog, why, result
):
    """LIVE_TOOL_RESULT=cancelled means the service withdrew the call; a stop of the daemon,
    a drop or a hang-up said the same, and an owner reading the journal blamed the service."""
    caplog.set_level(logging.INFO, logger="device.tools")
    toolbox = ToolBox(ToolsConfig(enabled=("slow",)), FakeActions(), registry=gated_tools(gate))
    call = types.FunctionCall(id="call-1", name="slow", args={})
    running = asyncio.create_task(toolbox.run(call))
    assert await asyncio.to_thread(gate.started.wait, WAIT_S)
    running.cancel(why)
    with pytest.raises(asyncio.CancelledError):
        await running
    (record,) = [r for r in caplog.records if r.name == "device.tools"]
    assert getattr(record, "LIVE_TOOL_RESULT", None) == result


def owners_tools() -> Registry:
    """Tools as an owner writes them (README: "a dict it gets back"), with plain Python
    values in that dict that JSON has no spelling for as they are."""
    registry = Registry()

    @registry.tool
    def music_folder(device: Device) -> dict[str, Any]:
        """Where the music is and which genres it has."""
        return {"folder": Path("/srv/music"), "genres": {"jazz"}}

    @registry.tool
    def humidity(device: Device) -> dict[str, Any]:
        """The room's humidity (the sensor reads NaN when it is unplugged)."""
        return {"percent": math.nan}

    return registry


@pytest.mark.parametrize(("name", "sent"), [
    ("music_folder", {"folder": "/srv/music", "genres": ["jazz"]}),
    ("humidity", {"error": "the tool's result is not JSON: Out of range float values are "
                           "not JSON compliant"}),
])
async def test_a_result_json_cannot_carry_as_it_is_still_answers_the_call(
    server: LiveServer, name: str, sent: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set or a path in a tool's dict failed the SDK's send (TypeError), NaN went out as
    JSON no parser takes: the call was never answered, and the connection ended with the
    error ("a failing tool never ends the conversation")."""
    tools = ToolsConfig(enabled=(name,))
    registry = owners_tools()
    toolbox = ToolBox(tools, FakeActions(), registry=registry)
    call_id = server.queue_tool_call(name, {})
    # The session with the device's own tools: the owner's are this toolbox's alone.
    async with session_for(server, ToolsConfig(), monkeypatch) as session:
        call = await ask_for_tool(session, "what have we got?")
        response = await toolbox.run(call)
        await session.send_tool_response(function_responses=[response])
        assert await reply_after(session)
    (response,) = tool_responses(server)
    assert (response["id"], response["name"]) == (call_id, name)
    if "error" in sent:  # the words after it differ between Python versions
        assert response["response"]["error"].startswith(sent["error"])
    else:
        assert response["response"] == sent


# ---- a tool's answer has a bound --------------------------------------------------------


def big_tools() -> Registry:
    """Tools as an owner might add them: one reads a whole file, one fails verbosely."""
    registry = Registry()

    @registry.tool
    def read_log(device: Device) -> dict[str, Any]:
        """The whole log file."""
        return {"text": "x" * (8 * 2**20)}

    @registry.tool
    def flaky(device: Device) -> dict[str, Any]:
        """Fails, quoting all it read."""
        raise ValueError("bad reading: " + "y" * 2**20)

    return registry


async def test_a_huge_result_answers_the_model_with_a_short_error() -> None:
    """8 MB of result went out whole: the person's speech waited behind it on the link
    (seconds on a home uplink), and past the box's unsent bound (16 MB) the connection was
    judged dead, the reply lost. The model cannot use that much of a result anyway."""
    toolbox = ToolBox(ToolsConfig(enabled=("read_log",)), FakeActions(), registry=big_tools())
    response = await run_alone(toolbox, "read_log")
    assert len(json.dumps(response)) < 1000, "the whole result went to the model"
    assert response["error"].startswith("the tool's result is too large")


async def test_an_exception_quoting_a_megabyte_is_answered_cut() -> None:
    toolbox = ToolBox(ToolsConfig(enabled=("flaky",)), FakeActions(), registry=big_tools())
    response = await run_alone(toolbox, "flaky")
    assert response["error"].startswith("ValueError: bad reading: yyy")
    assert len(response["error"]) < 5000, "the whole exception went to the model"


async def test_device_status_gives_no_signal_for_a_wifi_not_connected(tmp_path):
    """A Pi on Ethernet: its built-in wlan0, connected to nothing, is still listed, with
    zeros the kernel marks as not measured (no "."). The model said the Wi-Fi signal was
    0 dBm, stronger than any signal there is; a USB dongle listed after it that is
    connected is the one with a signal."""
    idle = " wlan0: 0000    0     0     0        0      0      0      0      0        0\n"
    dongle = " wlan1: 0000   61.  -49.  -256        0      0      0      0      3        0\n"
    headers = WIRELESS.split(" wlan0")[0]
    for listing, signal in [(headers + idle, "unknown"), (headers + idle + dongle, -49)]:
        root = fake_root(tmp_path, {"proc/net/wireless": listing})
        toolbox = ToolBox(ToolsConfig(enabled=("device_status",)), FakeActions(0.5), root=root)
        assert (await run_alone(toolbox, "device_status"))["wifi_signal_dbm"] == signal


async def test_a_service_changing_the_volume_in_a_loop_writes_the_card_a_few_times_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each volume change is saved to the SD card before the call is answered: a service
    (or something posing as it) calling set_volume in a loop, 40 50 40 50..., wrote the
    card twice a call for as long as it went on. A few changes a minute go through; the
    rest are answered with an error the model can say, and the next minute takes more."""
    clock = [0.0]
    monkeypatch.setattr(tools, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    actions = FakeActions()
    toolbox = ToolBox(ToolsConfig(enabled=("set_volume",)), actions)
    answers = [await run_alone(toolbox, "set_volume", percent=40 + n % 2 * 10) for n in range(200)]
    refused = [answer for answer in answers if "error" in answer]
    assert len(actions.levels) == VOLUME_CHANGES_PER_MINUTE, len(actions.levels)
    assert len(refused) == 200 - VOLUME_CHANGES_PER_MINUTE
    assert "too often" in refused[0]["error"], refused[0]
    clock[0] = 60.0
    assert await run_alone(toolbox, "set_volume", percent=30) == {"volume_percent": 30}
    assert actions.levels[-1] == 0.3


def cli_tools() -> Registry:
    """A tool as an owner might add one: it runs a command-line helper's main(), whose
    argparse ends a bad command line with sys.exit(2)."""
    registry = Registry()

    @registry.tool
    def garage(device: Device, command: str) -> dict[str, Any]:
        """Open or close the garage door."""
        parser = argparse.ArgumentParser(prog="garage")
        parser.add_argument("action", choices=["open", "close"])
        return {"done": vars(parser.parse_args([command]))}

    return registry


async def test_a_tool_that_exits_answers_the_model_with_an_error_and_one_journal_line(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A tool whose helper calls sys.exit() raised SystemExit out of the tool's thread into
    the session: the call went unanswered, and asyncio let the exit end the daemon."""
    caplog.set_level(logging.INFO, logger="device.tools")
    toolbox = ToolBox(ToolsConfig(enabled=("garage",)), FakeActions(), registry=cli_tools())
    call_id = server.queue_tool_call("garage", {"command": "lift"})
    async with session_for(server, NO_TOOLS, monkeypatch) as session:
        call = await ask_for_tool(session, "open the garage")
        try:
            response = await toolbox.run(call)
        except SystemExit as exc:  # pragma: no cover - the defect
            pytest.fail(f"the tool's exit left the call unanswered: SystemExit({exc.code})")
        await session.send_tool_response(function_responses=[response])
        assert await reply_after(session)
    (sent,) = tool_responses(server)
    assert (sent["id"], sent["name"]) == (call_id, "garage")
    assert sent["response"]["error"].startswith("SystemExit")
    (record,) = [r for r in caplog.records if r.name == "device.tools"]
    assert (record.levelno, record.LIVE_TOOL_RESULT) == (logging.WARNING, "error")


class SensorFault(Exception):
    """An owner's exception whose text names a field set only on some paths."""

    def __str__(self) -> str:
        return f"sensor {self.sensor} failed"  # type: ignore[attr-defined]


def faulty_tools() -> Registry:
    registry = Registry()

    @registry.tool
    def humidity(device: Device) -> dict[str, Any]:
        """The bathroom's humidity."""
        raise SensorFault()  # the path that never set .sensor

    return registry


async def test_a_tool_failing_with_an_exception_that_cannot_be_written_still_answers(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The error's text was made with str(exc), which raised here (AttributeError): out of
    the tool's task, it failed the connection's task group, the call unanswered and the
    reply in flight lost with the connection."""
    caplog.set_level(logging.INFO, logger="device.tools")
    toolbox = ToolBox(ToolsConfig(enabled=("humidity",)), FakeActions(), registry=faulty_tools())
    call_id = server.queue_tool_call("humidity", {})
    async with session_for(server, NO_TOOLS, monkeypatch) as session:
        call = await ask_for_tool(session, "how damp is it?")
        response = await toolbox.run(call)
        await session.send_tool_response(function_responses=[response])
        assert await reply_after(session)
    (sent,) = tool_responses(server)
    assert (sent["id"], sent["name"]) == (call_id, "humidity")
    assert sent["response"]["error"].startswith("SensorFault")
    (record,) = [r for r in caplog.records if r.name == "device.tools"]
    assert (record.levelno, record.LIVE_TOOL_RESULT) == (logging.WARNING, "error")


def music_tools() -> Registry:
    registry = Registry()

    @registry.tool
    def songs(device: Device) -> dict[str, Any]:
        """The songs on the USB stick."""
        # os.listdir's name for b"caf\xe9.mp3", written by an old Latin-1 machine: the
        # byte that is not UTF-8 becomes a lone surrogate (surrogateescape).
        return {"songs": ["intro.mp3", b"caf\xe9.mp3".decode("utf-8", "surrogateescape")]}

    return registry


def unicode_text(value: Any) -> bool:
    """Whether every string in `value` is Unicode text UTF-8 can carry (no lone surrogate)."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


async def test_a_result_with_a_name_that_is_not_text_answers_the_call_with_unicode_only(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone surrogate went out in the tool's response as a \\udce9 escape, which no
    Unicode text holds: the service's JSON parser refuses it (1007), ending the connection
    with the call unanswered (protobuf's JSON parser: "Invalid unicode code point."). The
    model is told the result is not JSON instead."""
    toolbox = ToolBox(ToolsConfig(enabled=("songs",)), FakeActions(), registry=music_tools())
    call_id = server.queue_tool_call("songs", {})
    async with session_for(server, NO_TOOLS, monkeypatch) as session:
        call = await ask_for_tool(session, "what songs are on the stick?")
        await session.send_tool_response(function_responses=[await toolbox.run(call)])
        assert await reply_after(session)
    (sent,) = tool_responses(server)
    assert sent["id"] == call_id
    assert unicode_text(sent), f"a lone surrogate reached the service: {sent!r}"
    assert sent["response"]["error"].startswith("the tool's result is not JSON")


def player_tools() -> Registry:
    registry = Registry()

    @registry.tool
    def play(device: Device) -> dict[str, Any]:
        """Play the first song on the USB stick."""
        name = b"caf\xe9.mp3".decode("utf-8", "surrogateescape")  # as os.listdir gives it
        raise RuntimeError(f"cannot decode {name}")

    return registry


async def test_a_failure_naming_a_file_that_is_not_utf8_reaches_the_service_as_text(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error's words, made from the exception, carried the lone surrogate of the
    file's name to the service as they were."""
    toolbox = ToolBox(ToolsConfig(enabled=("play",)), FakeActions(), registry=player_tools())
    server.queue_tool_call("play", {})
    async with session_for(server, NO_TOOLS, monkeypatch) as session:
        call = await ask_for_tool(session, "play something")
        await session.send_tool_response(function_responses=[await toolbox.run(call)])
        assert await reply_after(session)
    (sent,) = tool_responses(server)
    assert unicode_text(sent), f"a lone surrogate reached the service: {sent!r}"
    assert sent["response"]["error"] == "RuntimeError: cannot decode caf\\udce9.mp3"


def polling_tools() -> Registry:
    """A tool as an owner might write one by mistake: it yields its readings instead of
    returning them (a generator), and takes a while over each."""
    registry = Registry()

    @registry.tool
    def readings(device: Device) -> Any:
        """The thermometer's readings."""
        for value in (20.5, 20.6, 20.7):
            time.sleep(0.4)  # the sensor's conversion time
            yield value

    return registry


async def test_a_tool_that_yields_runs_off_the_loop_within_its_timeout() -> None:
    """A generator tool returned at once, and its body ran when its result was made
    JSON: on the event loop, past the tool's timeout, the whole box frozen meanwhile (the
    microphone, the speaker's feed, the LEDs, the watchdog); one that polls for ever froze
    it for good. The body runs in the tool's thread, and the timeout answers the model."""
    toolbox = ToolBox(ToolsConfig(enabled=("readings",), timeout_s=0.5), FakeActions(),
                      registry=polling_tools())
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    beating = asyncio.create_task(heartbeat())
    try:
        response = await toolbox.run(types.FunctionCall(id="c1", name="readings", args={}))
        ticks_during = ticks
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
    assert response.response == {"error": "timed out after 0.5 s"}
    assert ticks_during >= 5, f"the event loop stood still while the tool ran ({ticks_during})"
    # The abandoned thread ends alone; the next test counts tool threads.
    await until(lambda: not any(t.name == "tool" for t in threading.enumerate()))


def counting_tools() -> Registry:
    registry = Registry()

    @registry.tool
    def numbers(device: Device) -> Any:
        """Every number, as a tool that returns an endless iterator by mistake does."""
        return itertools.count()

    return registry


async def test_a_tool_returning_an_endless_iterator_is_answered_too_large_and_its_thread_ends(
) -> None:
    """A tool that returns an endless iterator (itertools.count(), a sensor's stream) was
    made JSON item by item in its thread for ever: the model answered "timed out" but the
    abandoned thread grew a list until the service's memory limit killed the box. Past
    what RESULT_LIMIT can hold, the result is answered too large, and the thread ends."""
    toolbox = ToolBox(ToolsConfig(enabled=("numbers",), timeout_s=5.0), FakeActions(),
                      registry=counting_tools())
    response = await toolbox.run(types.FunctionCall(id="c1", name="numbers", args={}))
    assert response.response is not None
    assert "too large" in response.response["error"], response.response
    await until(lambda: not any(t.name == "tool" for t in threading.enumerate()))


def pair_tools() -> Registry:
    registry = Registry()

    @registry.tool
    def point_camera(device: Device, position: tuple[int, int]) -> dict[str, Any]:
        """Turn the camera to an x, y position."""
        return {"position": list(position)}

    return registry


def test_a_parameter_the_live_api_cannot_declare_is_named_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tuple parameter's schema has prefixItems, which the Live API's schema has not:
    every setup failed, and the journal said "cannot build the Live API client:
    ValidationError: 1 validation error for JSONSchema" over four lines naming neither the
    tool nor its parameter."""
    from device.live.session import say_build_failure

    with pytest.raises(Exception) as caught:
        declarations(ToolsConfig(enabled=("point_camera",)), pair_tools())
    reason = say_build_failure(caught.value, logging.getLogger("test"), "cannot build")
    (record,) = caplog.records
    assert "\n" not in record.getMessage(), record.getMessage()
    assert "point_camera" in reason and "position" in reason, reason


async def test_an_async_tool_is_refused_when_registered_not_at_every_call() -> None:
    """An `async def` tool registered, and every call answered the model "the tool's
    result is not JSON: Unable to serialize unknown type: <class 'coroutine'>", its body
    never run ("coroutine ... was never awaited" on stderr): the tool never worked, and
    only a call showed it."""
    registry = Registry()
    with pytest.raises(TypeError, match=r"tool lights_on: .*async def"):

        @registry.tool
        async def lights_on(device: Device) -> dict[str, Any]:
            """Switch the lights on."""
            return {"lights": "on"}


def validating_tools() -> Registry:
    registry = Registry()

    @registry.tool
    def humidity_check(device: Device) -> dict[str, Any]:
        """The bathroom's humidity, checked."""
        raise ValueError("reading out of range:\n  humidity 140 %\n  \x1b[2Jallowed 0-100")

    return registry


async def test_a_tool_failing_with_words_over_lines_is_one_journal_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception's text over several lines (pydantic's, a command's output) split the
    tool's journal line, the rest without its priority, and an escape sequence in it
    acted on the terminal of `journalctl -f`. The model still gets the text whole."""
    caplog.set_level(logging.INFO, logger="device.tools")
    toolbox = ToolBox(ToolsConfig(enabled=("humidity_check",)), FakeActions(),
                      registry=validating_tools())
    response = await toolbox.run(types.FunctionCall(id="c1", name="humidity_check", args={}))
    assert response.response == {
        "error": "ValueError: reading out of range:\n  humidity 140 %\n  \x1b[2Jallowed 0-100"}
    (record,) = [r for r in caplog.records if r.name == "device.tools"]
    message = record.getMessage()
    assert "\n" not in message and "\x1b" not in message, message
    assert "humidity 140 %" in message


def test_an_undeclarable_parameter_is_named_with_the_types_that_work() -> None:
    """A tuple parameter the Live API cannot declare: the journal names the parameter and
    says which types work, not pydantic's text cut to one line (a careless bound on the
    error's location fell back to that, still naming the tool and the word "position")."""
    registry = Registry()

    @registry.tool
    def point_camera(device: Device, position: tuple[int, int]) -> dict[str, Any]:
        """Turn the camera to an x, y position."""
        return {"position": list(position)}

    with pytest.raises(TypeError) as caught:
        declarations(ToolsConfig(enabled=("point_camera",)), registry)
    said = str(caught.value)
    assert said.startswith("tool point_camera: parameter position: "), said
    assert "the Live API cannot declare its type" in said, said
    assert "use int, float, str, bool, a Literal, an Enum, or a list of one of them" in said


ZONES = Path("/usr/share/zoneinfo")

#: Asks get_time (the real clock and zone), sets the zone the way `timedatectl
#: set-timezone` does (a new /etc/localtime link put in place of the old one), asks again.
ASK_SET_ASK = """
import asyncio, json, os, sys
from pathlib import Path
from google.genai import types
from device.config import ToolsConfig
from device.tools import ToolBox
sys.path.insert(0, sys.argv[1])
from fakes import FakeActions

async def ask():
    box = ToolBox(ToolsConfig(enabled=("get_time",)), FakeActions(), root=Path(sys.argv[2]))
    call = types.FunctionCall(id="1", name="get_time", args={})
    return (await box.run(call)).response

async def main():
    before = await ask()
    os.symlink("/usr/share/zoneinfo/Europe/Paris", "/etc/localtime.new")
    os.replace("/etc/localtime.new", "/etc/localtime")
    print(json.dumps([before, await ask()]))

asyncio.run(main())
"""


@pytest.mark.skipif(not (ZONES / "Europe/Paris").exists(), reason="needs tzdata")
def test_get_time_tells_the_zone_the_owner_set_while_the_service_runs(tmp_path: Path) -> None:
    """A box installed with the image's zone (UTC) whose owner then ran `sudo timedatectl
    set-timezone Europe/Paris`: asked the time, the model was told UTC's, an hour off,
    until the service was restarted (glibc reads the zone once, at the first local time)."""
    view = SystemView(tmp_path / "view")
    view.setup(f"ln -sfn {ZONES}/Etc/UTC /etc/localtime")
    env = {k: v for k, v in os.environ.items() if k != "TZ"}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    tests = str(Path(__file__).parent)
    done = view.run([sys.executable, "-c", ASK_SET_ASK, tests, str(tmp_path)], env=env)
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout)
    assert before["timezone"] == "UTC", before
    paris = datetime.now(ZoneInfo("Europe/Paris"))
    assert (after["timezone"], after["utc_offset"]) == (f"{paris:%Z}", f"{paris:%z}"), after


@pytest.mark.parametrize(
    ("zone", "warned"),
    [("Etc/UTC", True), ("UTC", True), ("Europe/London", False), ("America/New_York", False)],
)  # fmt: skip
async def test_get_time_says_a_utc_zone_may_not_be_where_the_box_is(
    tmp_path: Path, zone: str, warned: bool
) -> None:
    """A box on an image whose zone is UTC (Ubuntu's, a Debian install that skipped the
    question), never set by its owner in New York: asked the time, the model was told
    UTC's as "the local time of the place the device is in" and said 13:05 at 8:05."""
    toolbox = ToolBox(ToolsConfig(enabled=("get_time",)), FakeActions(), root=tmp_path,
                      now=lambda: datetime(2026, 12, 6, 13, 5, tzinfo=ZoneInfo(zone)))
    response = await run_alone(toolbox, "get_time")
    assert response["time"] == "13:05", response
    assert ("UTC" in response.get("warning", "")) == warned, response


#: Far past what RESULT_LIMIT can hold, yet finite: an endless stream would not end the test.
LONG = 20 * RESULT_LIMIT


class Readings(NamedTuple):
    sensor: str
    values: Any


@dataclasses.dataclass
class Reading:
    sensor: str
    values: Any


class ReadingModel(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    sensor: str
    values: Any


class HistoryModel(BaseModel):
    """A long history first: the walk's room runs out before the stream after it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    history: list[int] = Field(default_factory=lambda: list(range(RESULT_LIMIT)))
    values: Any = None


class ComputedModel(BaseModel):
    """The stream handed out by a computed field, which is no field to walk."""

    _stream: Any = PrivateAttr()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def values(self) -> Any:
        return self._stream

    @classmethod
    def of(cls, stream: Iterator[int]) -> ComputedModel:
        model = cls()
        model._stream = stream
        return model


@pytest.mark.parametrize(
    "holder",
    [
        lambda stream: collections.OrderedDict(readings=stream),
        lambda stream: collections.defaultdict(list, readings=stream),
        lambda stream: Readings("thermometer", stream),
        lambda stream: Reading("thermometer", stream),
        lambda stream: {stream},
        lambda stream: frozenset({stream}),
        lambda stream: ReadingModel(sensor="thermometer", values=stream),
        lambda stream: {"readings": [Reading("thermometer", stream)]},
        lambda stream: collections.deque([stream]),
        lambda stream: HistoryModel(values=stream),
        ComputedModel.of,
    ],
    ids=["OrderedDict", "defaultdict", "namedtuple", "dataclass", "set", "frozenset",
         "pydantic model", "dataclass in a dict", "deque", "model after a long history",
         "model's computed field"],
)
async def test_a_stream_in_a_holder_of_another_kind_is_read_no_further_than_could_be_sent(
    holder: Callable[[Iterator[int]], Any],
) -> None:
    """A tool returning its sensor's stream in a dict was bounded at stop 55, but only in a
    plain dict, list or tuple: in an OrderedDict, a defaultdict or a namedtuple (until stop
    56), a dataclass, a set, a deque or a pydantic model (until stop 57), the stream
    was read to its end, for an endless one until the service's memory limit killed the
    box (the model answered "timed out" meanwhile)."""
    read = 0

    def stream() -> Iterator[int]:
        nonlocal read
        for value in range(LONG):
            read += 1
            yield value

    registry = Registry()

    @registry.tool
    def sensor(device: Device) -> Any:
        """The sensor's readings, as they come."""
        return holder(stream())

    toolbox = ToolBox(ToolsConfig(enabled=("sensor",), timeout_s=10.0), FakeActions(),
                      registry=registry)  # fmt: skip
    response = await toolbox.run(types.FunctionCall(id="c1", name="sensor", args={}))
    assert response.response is not None
    assert "too large" in response.response.get("error", ""), str(response.response)[:200]
    assert read <= RESULT_LIMIT + 1, f"{read} readings taken from the stream"


async def _tool_answer(result: Any) -> dict[str, Any]:
    """The response the model gets from a tool that returns `result`."""
    from google.genai import types
    from test_tools import FakeActions

    from device.config import ToolsConfig
    from device.tools import Registry, ToolBox

    registry = Registry()

    @registry.tool
    def sensor(device: Any) -> Any:
        """The sensor's readings."""
        return result

    toolbox = ToolBox(ToolsConfig(enabled=("sensor",), timeout_s=10.0), FakeActions(),
                      registry=registry)  # fmt: skip
    response = await toolbox.run(types.FunctionCall(id="c1", name="sensor", args={}))
    assert response.response is not None
    return dict(response.response)


async def test_readings_in_a_models_computed_field_reach_the_model() -> None:
    """A tool returning a pydantic model whose readings are a computed field handing out a
    stream: the model is told the readings, not an empty list (a copy of the model
    reads the field afresh, from a stream already read)."""
    from test_tools import ComputedModel

    answer = await _tool_answer(ComputedModel.of(iter([20, 21, 22])))
    assert answer.get("output", answer) == {"values": [20, 21, 22]}, answer


async def test_a_models_aliases_reach_the_model() -> None:
    """A tool returning a pydantic model with aliased fields (`sensorName`), a stream in
    it: the model is told the fields by the names the tool's model gives them."""
    from pydantic import BaseModel, ConfigDict, Field

    class Reading(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

        sensor_name: str = Field(alias="sensorName")
        values: Any

    answer = await _tool_answer(Reading(sensor_name="thermometer", values=iter([20, 21])))
    assert answer == {"output": {"sensorName": "thermometer", "values": [20, 21]}}, answer


async def test_a_result_that_holds_itself_is_answered_as_not_json() -> None:
    """A tool whose result holds itself (a dict of readings with a link back to it): the
    model is told the result is not JSON, a circular reference, as pydantic names it."""
    readings: dict[str, Any] = {"values": iter([20, 21])}
    readings["all"] = readings
    answer = await _tool_answer(readings)
    assert "not JSON" in answer.get("error", "") and "ircular" in answer["error"], answer


@pytest.mark.parametrize("kind", ["dataclass", "model with a computed field", "model"])
async def test_a_tools_record_reaches_the_model_as_its_output_whatever_its_kind(
    kind: str,
) -> None:
    """A tool returning a record (a dataclass, a pydantic model) is answered as its
    output, as a plain dict alone is the answer itself: since stop 57 walked dataclasses
    and models into dicts, a dataclass's or a computed-field model's fields became the
    answer's own, and a record's `error` field told the model that the tool failed."""
    import dataclasses

    from pydantic import BaseModel, computed_field

    @dataclasses.dataclass
    class Check:
        ok: bool
        error: str

    class CheckModel(BaseModel):
        ok: bool

        @computed_field  # type: ignore[prop-decorator]
        @property
        def error(self) -> str:
            return "the lid is open"

    class PlainModel(BaseModel):
        ok: bool
        error: str

    record = {
        "dataclass": Check(ok=False, error="the lid is open"),
        "model with a computed field": CheckModel(ok=False),
        "model": PlainModel(ok=False, error="the lid is open"),
    }[kind]
    answer = await _tool_answer(record)
    assert answer == {"output": {"ok": False, "error": "the lid is open"}}, answer
