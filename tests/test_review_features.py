"""Review of the Live API features as configured: settings that cannot go together are
refused at start with one line naming them, and edge values reach the setup as sent."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from test_tools import FakeActions
from wire import at, config_for, function_names, instruction, searches, tool_responses

from device import cli, config
from device.config import ToolsConfig
from device.live.setup import connect_config, make_client
from device.tools import Device, Registry, ToolBox
from rig.server.server import LiveServer


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key or setting from this shell (the command line runs in this process too)."""
    overrides = [name for name in os.environ if name.startswith(config.ENV_PREFIX)]
    for name in ("CREDENTIALS_DIRECTORY", *config.KEY_ENV_VARS, *overrides):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# ---- settings that cannot go together ----------------------------------------------------


@pytest.mark.parametrize("setting", ["compression_trigger_tokens", "compression_target_tokens"])
def test_compression_token_counts_with_compression_off_stop_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str
) -> None:
    """`compression = false` sends no compression at all: token counts set beside it went
    unused without a word, and the owner who tuned them got sessions cut at 15 minutes."""
    path = write(tmp_path, f"[live]\ncompression = false\n{setting} = 2000\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value) == (
        f"{path}: [live] {setting}: set with compression = false, which sends no context "
        "window compression; remove it, or set compression = true"
    )
    assert cli.main(["run", "--config", str(path)]) == 2
    assert f"[live] {setting}" in capsys.readouterr().err


def test_a_target_above_the_services_own_trigger_stops_the_start(tmp_path: Path) -> None:
    """Unset, the trigger is the service's: 80% of the context window (104857 tokens). A
    window kept larger than where it is cut never slides: the SDK says target must be
    below trigger."""
    path = write(tmp_path, "[live]\ncompression_target_tokens = 120000\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value) == (
        f"{path}: [live] compression_target_tokens (120000) must be below "
        "compression_trigger_tokens, which is 104857 (80% of the context window) when "
        "unset; lower it, or set compression_trigger_tokens above it"
    )


@pytest.mark.parametrize("text", [
    "[live]\ncompression_target_tokens = 104856\n",
    "[live]\ncompression_trigger_tokens = 131072\ncompression_target_tokens = 120000\n",
    "[live]\ncompression = false\n",
])
def test_compression_settings_that_work_together_load(tmp_path: Path, text: str) -> None:
    config.load(write(tmp_path, text), key=False)


# ---- edge values on the wire ----------------------------------------------------------------


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch):
    async with LiveServer(pace=0, reply_seconds=0.2) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


async def received_setup(server: LiveServer, cfg: config.Config) -> dict:
    async with make_client(cfg).aio.live.connect(model=cfg.live.model,
                                                 config=connect_config(cfg, None)):
        pass
    return server.log.connections()[-1].setup


async def test_zero_padding_and_the_bounds_of_detection_and_compression_reach_the_wire(server):
    """0 ms of padding is a value, not "unset"; the bounds go out as written, in ms."""
    cfg = config_for(
        server, button={"mode": "toggle"},
        conversation={"prefix_padding_ms": 0, "silence_ms": 10000},
        live={"compression_trigger_tokens": 131072, "compression_target_tokens": 500},
    )
    setup = await received_setup(server, cfg)
    detection = at(setup, "realtime_input_config", "automatic_activity_detection")
    assert (at(detection, "prefix_padding_ms"), at(detection, "silence_duration_ms")) == (0, 10000)
    assert at(setup, "context_window_compression") == {
        "trigger_tokens": 131072, "sliding_window": {"target_tokens": 500}}


async def test_a_unicode_persona_voice_and_language_reach_the_wire_as_written(server):
    persona = "Du bist ein Küchenhelfer 🍳 — 短く答えて。"
    cfg = config_for(server, live={"system_instruction": persona, "voice": "Zubenelgenubi",
                                   "language": "zh-Hans-CN"})
    setup = await received_setup(server, cfg)
    assert instruction(setup) == (
        f"{persona}\n\nSpeak zh-Hans-CN (a BCP-47 language code) unless asked otherwise.")
    assert at(setup, "generation_config", "speech_config", "voice_config",
              "prebuilt_voice_config", "voice_name") == "Zubenelgenubi"


async def test_transcripts_off_leaves_both_transcriptions_out_and_search_rides_with_tools(server):
    cfg = config_for(server, live={"transcripts": False},
                     tools={"enabled": ("end_conversation",), "google_search": True})
    setup = await received_setup(server, cfg)
    assert at(setup, "input_audio_transcription") is None
    assert at(setup, "output_audio_transcription") is None
    assert (function_names(setup), searches(setup)) == (["end_conversation"], 1)


@pytest.mark.parametrize("silence_s", [2, 3])
def test_hands_free_hanging_up_before_the_services_end_of_speech_stops_the_start(
    tmp_path: Path, silence_s: int
) -> None:
    """Hands-free, the box hangs up `end_after_silence_s` after the last word; the service
    ends the turn only `silence_ms` after it, and answers later still. A slow talker's
    silence_ms = 3000 beside end_after_silence_s = 2 hung up on every question."""
    path = write(tmp_path, (
        "[button]\nmode = 'toggle'\n"
        f"[conversation]\nsilence_ms = 3000\nend_after_silence_s = {silence_s}\n"
    ))
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value) == (
        f"{path}: [conversation] end_after_silence_s ({silence_s} s) must be above silence_ms "
        "(3000 ms) in toggle mode: the box would hang up before the service hears the end "
        "of what was said"
    )
    # Push-to-talk the service does not detect speech: silence_ms is not used.
    config.load(write(tmp_path, path.read_text().replace("toggle", "push_to_talk")), key=False)


# ---- tool results on the wire ---------------------------------------------------------------


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
    server: LiveServer, name: str, sent: dict[str, Any]
) -> None:
    """A set or a path in a tool's dict failed the SDK's send (TypeError), NaN went out as
    JSON no parser takes: the call was never answered, and the connection ended with the
    error ("a failing tool never ends the conversation")."""
    tools = ToolsConfig(enabled=(name,))
    registry = owners_tools()
    toolbox = ToolBox(tools, FakeActions(), registry=registry)
    call_id = server.queue_tool_call(name, {})
    cfg = config_for(server)
    async with make_client(cfg).aio.live.connect(
        model=cfg.live.model, config=connect_config(cfg, None)
    ) as session:
        await session.send_realtime_input(text="what have we got?")
        message = await anext(aiter(session.receive()))
        (call,) = message.tool_call.function_calls
        response = await toolbox.run(call)
        await session.send_tool_response(function_responses=[response])
        assert [m async for m in session.receive() if m.data]  # the reply after it
    (response,) = tool_responses(server)
    assert (response["id"], response["name"]) == (call_id, name)
    if "error" in sent:  # the words after it differ between Python versions
        assert response["response"]["error"].startswith(sent["error"])
    else:
        assert response["response"] == sent
