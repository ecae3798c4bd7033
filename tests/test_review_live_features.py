"""Review (stop 54) of the Live features an owner configures: what a declared tool does
to the call when it fails in an unusual way, and settings the service would refuse."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeActions
from google.genai import types
from helpers import until
from wire import tool_responses

from device import cli, config
from device.config import Config, LiveConfig, Secret, ToolsConfig
from device.live.setup import connect_config, make_client
from device.tools import Device, Registry, ToolBox, declarations
from rig.server.server import LiveServer

REPLY_S = 0.2


@pytest.fixture
async def server():
    async with LiveServer(pace=0, reply_seconds=REPLY_S) as live:
        yield live


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
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
    toolbox = ToolBox(ToolsConfig(enabled=("garage",)), FakeActions(), registry=cli_tools())
    call_id = server.queue_tool_call("garage", {"command": "lift"})
    cfg = Config(live=LiveConfig(base_url=server.base_url), api_key=Secret(server.api_key))
    client = make_client(cfg)
    async with client.aio.live.connect(model=cfg.live.model,
                                       config=connect_config(cfg, None)) as session:
        await session.send_realtime_input(text="open the garage")
        message = await anext(aiter(session.receive()))
        (call,) = message.tool_call.function_calls
        try:
            response = await toolbox.run(call)
        except SystemExit as exc:  # pragma: no cover - the defect
            pytest.fail(f"the tool's exit left the call unanswered: SystemExit({exc.code})")
        await session.send_tool_response(function_responses=[response])
        assert b"".join([m.data async for m in session.receive() if m.data])
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
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
    toolbox = ToolBox(ToolsConfig(enabled=("humidity",)), FakeActions(), registry=faulty_tools())
    call_id = server.queue_tool_call("humidity", {})
    cfg = Config(live=LiveConfig(base_url=server.base_url), api_key=Secret(server.api_key))
    async with make_client(cfg).aio.live.connect(model=cfg.live.model,
                                                 config=connect_config(cfg, None)) as session:
        await session.send_realtime_input(text="how damp is it?")
        message = await anext(aiter(session.receive()))
        (call,) = message.tool_call.function_calls
        response = await toolbox.run(call)
        await session.send_tool_response(function_responses=[response])
        assert b"".join([m.data async for m in session.receive() if m.data])
    (sent,) = tool_responses(server)
    assert (sent["id"], sent["name"]) == (call_id, "humidity")
    assert sent["response"]["error"].startswith("SensorFault")
    (record,) = [r for r in caplog.records if r.name == "device.tools"]
    assert (record.levelno, record.LIVE_TOOL_RESULT) == (logging.WARNING, "error")


@pytest.mark.parametrize(("model", "meant"), [
    ("Gemini-3.8-Live", "gemini-3.8-live"),
    ("gemini-3.8-live ", "gemini-3.8-live"),
    ("models/GEMINI-3.1-FLASH-LIVE-PREVIEW", "gemini-3.1-flash-live-preview"),
    ("gemini 3.8 live", "gemini-3.8-live"),
])
def test_a_model_name_no_model_has_stops_the_start_naming_the_one_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, meant: str
) -> None:
    """Model names are lower case, with no spaces: one pasted from a web page's heading
    ("Gemini 3.8 Live") or with a stray space loaded, was unknown to the model table (so
    every setting went out as written), and the service refused its setup at every press."""
    path = tmp_path / "config.toml"
    path.write_text(f"[live]\nmodel = {model!r}\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value).startswith(f"{path}: [live] model: ")
    assert str(caught.value).endswith(f"(got {model!r}); did you mean {meant!r}?")
    assert cli.main(["run", "--config", str(path)]) == 2
    assert "[live] model" in capsys.readouterr().err


@pytest.mark.parametrize("model", [
    "gemini-3.8-live", "models/gemini-3.8-live", "gemini-9.1-live-preview-06-2027",
    "projects/p/locations/us-central1/publishers/google/models/gemini-3.8-live",
])
def test_a_model_name_as_the_service_writes_one_loads(tmp_path: Path, model: str) -> None:
    """A model missing from the table (a newer one) still loads: only the shape is checked."""
    path = tmp_path / "config.toml"
    path.write_text(f"[live]\nmodel = {model!r}\n")
    assert config.load(path, key=False).live.model == model


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
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
    toolbox = ToolBox(ToolsConfig(enabled=("songs",)), FakeActions(), registry=music_tools())
    call_id = server.queue_tool_call("songs", {})
    cfg = Config(live=LiveConfig(base_url=server.base_url), api_key=Secret(server.api_key))
    async with make_client(cfg).aio.live.connect(model=cfg.live.model,
                                                 config=connect_config(cfg, None)) as session:
        await session.send_realtime_input(text="what songs are on the stick?")
        message = await anext(aiter(session.receive()))
        (call,) = message.tool_call.function_calls
        await session.send_tool_response(function_responses=[await toolbox.run(call)])
        assert b"".join([m.data async for m in session.receive() if m.data])
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
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
    toolbox = ToolBox(ToolsConfig(enabled=("play",)), FakeActions(), registry=player_tools())
    server.queue_tool_call("play", {})
    cfg = Config(live=LiveConfig(base_url=server.base_url), api_key=Secret(server.api_key))
    async with make_client(cfg).aio.live.connect(model=cfg.live.model,
                                                 config=connect_config(cfg, None)) as session:
        await session.send_realtime_input(text="play something")
        message = await anext(aiter(session.receive()))
        (call,) = message.tool_call.function_calls
        await session.send_tool_response(function_responses=[await toolbox.run(call)])
        assert b"".join([m.data async for m in session.receive() if m.data])
    (sent,) = tool_responses(server)
    assert unicode_text(sent), f"a lone surrogate reached the service: {sent!r}"
    assert sent["response"]["error"] == "RuntimeError: cannot decode caf\\udce9.mp3"


README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(("section", "name"), [
    ("conversation", "silence_ms"),
    ("conversation", "start_sensitivity"),
    ("conversation", "end_sensitivity"),
    ("conversation", "prefix_padding_ms"),
    ("live", "compression_trigger_tokens"),
    ("live", "compression_target_tokens"),
])
def test_the_readme_gives_each_detection_and_compression_setting_its_line_and_range(
    section: str, name: str
) -> None:
    """An owner tuning the service's speech detection or compression reads the README's
    sample: each setting on a line of its own, with what it takes (the values, or the
    range that stops the start when left), not named in passing after another's."""
    spec = next(f for f in dataclasses.fields(config.SECTIONS[section]) if f.name == name)
    (line,) = [line for line in README.read_text().splitlines()
               if re.match(rf"#? ?{name} = ", line)]
    if "bounds" in spec.metadata:
        low, high = spec.metadata["bounds"]
        assert f"{low:g}-{high:g}" in line, line
    else:
        assert '"low" or "high"' in line, line
    assert "toggle mode" in line or section == "live", line


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


def test_a_variable_that_is_not_utf8_stops_the_start_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A persona exported from a Latin-1 terminal ("für" as single bytes): Python reads the
    bytes that are not UTF-8 as lone surrogates, and the start ended in a traceback
    (UnicodeEncodeError, from the persona's size check), naming no variable; a text
    setting checked no further ([live] project) loaded them for the service to refuse.
    The configuration file's own check says where it is not UTF-8: so does this."""
    latin1 = "Antworte kurz und f\xfcr Kinder.".encode("latin-1")
    monkeypatch.setenv("LIVE_APPLIANCE_LIVE_SYSTEM_INSTRUCTION",
                       latin1.decode("utf-8", "surrogateescape"))
    path = tmp_path / "config.toml"
    path.write_text("")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value).startswith(
        "environment variable LIVE_APPLIANCE_LIVE_SYSTEM_INSTRUCTION: is not UTF-8 text: "
        "byte 0xfc at character 20")
    assert cli.main(["run", "--config", str(path)]) == 2
    assert "LIVE_APPLIANCE_LIVE_SYSTEM_INSTRUCTION" in capsys.readouterr().err


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
