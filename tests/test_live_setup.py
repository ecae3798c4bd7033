"""The setup our code sends, as the local server receives it from the real SDK, and the
model rules that leave settings out or refuse them at start."""

from __future__ import annotations

import dataclasses

import google.auth
import pytest
from google import genai
from google.genai import errors, types
from helpers import trusted_server, until
from test_live_session import Credentials
from wire import at, config_for, function_names, instruction, searches

from device.config import (
    Config,
    ConfigError,
    LiveConfig,
    Secret,
    ToolsConfig,
)
from device.live.models import MODELS, check_model_settings
from device.live.session import LiveLink
from device.live.setup import connect_config, make_client
from device.outbox import Outbox
from device.states import Event, SetupComplete
from rig.server.server import LiveServer
from rig.server.setup import DEFAULT_MODELS
from rig.server.wire import has, pick

OLDER = "gemini-2.5-flash-native-audio-preview-12-2025"
PREVIEW_3_1 = "gemini-3.1-flash-live-preview"
VERTEX_ONLY = "gemini-live-2.5-flash-native-audio"


async def received_setup(server: LiveServer, cfg: Config, handle: str | None = None) -> dict:
    """Connect with our client and setup; what the server got (it answered setupComplete)."""
    client = make_client(cfg)
    async with client.aio.live.connect(model=cfg.live.model,
                                       config=connect_config(cfg, handle)):
        pass
    return server.log.connections()[-1].setup


# ---- defaults --------------------------------------------------------------------------------


async def test_default_setup_push_to_talk_audio_transcripts_resumption_compression(server):
    setup = await received_setup(server, config_for(server))
    assert setup["model"] == "models/gemini-3.8-live"
    assert at(setup, "generation_config", "response_modalities") == ["AUDIO"]
    assert at(setup, "realtime_input_config") == {"automatic_activity_detection": {
        "disabled": True}}
    assert at(setup, "input_audio_transcription") == {}
    assert at(setup, "output_audio_transcription") == {}
    assert at(setup, "session_resumption") == {}
    assert at(setup, "context_window_compression") == {"sliding_window": {}}
    for absent in ("tools", "system_instruction", "proactivity"):
        assert not has(setup, absent), absent
    assert not has(at(setup, "generation_config"), "speech_config")
    assert not has(at(setup, "generation_config"), "enable_affective_dialog")
    path = server.log.connections()[-1].path
    assert ".v1alpha." not in path  # the SDK's default version: nothing here needs v1alpha


async def test_the_client_turns_off_websocket_pings_and_compression_and_bounds_frames(server):
    """The link checks liveness itself (websockets' own 20 s ping timeout would cut
    sessions), deflating base64 audio costs more CPU than it saves bytes, and what
    websockets may hold unread is bounded."""
    cfg = config_for(server)
    async with make_client(cfg).aio.live.connect(model=cfg.live.model) as session:
        ws = session._ws  # the SDK's websockets ClientConnection: reachable in a test only
        assert (ws.ping_interval, ws.ping_timeout, ws.keepalive_task) == (None, None, None)
        assert ws.protocol.extensions == []
        # What it holds while the speaker is full: a few frames of bounded size.
        assert (ws.max_queue_high, ws.protocol.max_message_size) == (4, 2**20)
    plain = genai.Client(api_key=server.api_key,
                         http_options=types.HttpOptions(base_url=server.base_url))
    async with plain.aio.live.connect(model=cfg.live.model) as session:
        assert session._ws.ping_interval == 20 and session._ws.keepalive_task is not None
        assert [e.name for e in session._ws.protocol.extensions] == ["permessage-deflate"]


@pytest.mark.parametrize("variable", ["GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE"])
async def test_the_gemini_backend_ignores_a_shell_set_up_for_vertex_ai(
    server, monkeypatch, variable
):
    """The SDK takes Vertex AI from the environment unless told: a shell (or a drop-in)
    set up for Google Cloud sent a box configured for the Gemini API to Vertex AI."""
    monkeypatch.setenv(variable, "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "someone-elses-project")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
    await received_setup(server, config_for(server))
    path = server.log.connections()[-1].path
    assert ".generativelanguage." in path, path


# ---- tools and search ------------------------------------------------------------------------


@pytest.mark.parametrize(("tools", "names", "search"), [
    (ToolsConfig(), [], 0),
    (ToolsConfig(google_search=True), [], 1),
    (ToolsConfig(enabled=("get_time", "set_volume")), ["get_time", "set_volume"], 0),
    (ToolsConfig(enabled=("device_status", "end_conversation", "get_time", "set_volume"),
                 google_search=True),
     ["device_status", "end_conversation", "get_time", "set_volume"], 1),
])
async def test_setup_declares_exactly_the_enabled_tools_and_search(server, tools, names, search):
    setup = await received_setup(server, config_for(server, tools=vars(tools)))
    assert function_names(setup) == names
    assert searches(setup) == search


async def test_declared_parameters_reach_the_server_as_a_schema(server):
    setup = await received_setup(server, config_for(server, tools={"enabled": ("set_volume",)}))
    (tool,) = at(setup, "tools")
    (declaration,) = pick(tool, "function_declarations")
    assert declaration["parameters"] == {
        "type": "OBJECT",
        "properties": {"percent": {"type": "INTEGER", "minimum": 0.0, "maximum": 100.0,
                                   "description": "0 is silent, 100 is loudest"}},
        "required": ["percent"],
    }
    assert declaration["description"].startswith("Set the speaker volume in percent.")


# ---- persona, voice, language ----------------------------------------------------------------


async def test_persona_from_a_file_wins_over_the_inline_text(server, tmp_path):
    persona = tmp_path / "persona.txt"
    persona.write_text("You are a kitchen helper.\nAnswer in one or two sentences.\n")
    cfg = config_for(server, live={"system_instruction": "You are a pirate.",
                                   "system_instruction_file": str(persona)})
    setup = await received_setup(server, cfg)
    assert instruction(setup) == "You are a kitchen helper.\nAnswer in one or two sentences."


async def test_inline_persona_and_voice(server):
    cfg = config_for(server, live={"system_instruction": "You are a pirate.", "voice": "Kore"})
    setup = await received_setup(server, cfg)
    assert instruction(setup) == "You are a pirate."
    assert at(setup, "generation_config", "speech_config") == {
        "voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}}}


async def test_native_audio_models_get_the_language_in_the_instruction(server):
    cfg = config_for(server, live={"system_instruction": "You are a pirate.", "language": "de-DE"})
    setup = await received_setup(server, cfg)
    assert instruction(setup) == (
        "You are a pirate.\n\nSpeak de-DE (a BCP-47 language code) unless asked otherwise.")
    assert not has(at(setup, "generation_config"), "speech_config")


async def test_an_unknown_model_gets_the_language_code_as_configured(server):
    server.config.models.add("gemini-9-live")
    cfg = config_for(server, live={"model": "gemini-9-live", "language": "de-DE"})
    setup = await received_setup(server, cfg)
    assert at(setup, "generation_config", "speech_config") == {"language_code": "de-DE"}
    assert not has(setup, "system_instruction")


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    (b"\xff\xfe persona", "is not UTF-8 text"),
])
def test_a_bad_persona_file_is_a_config_error(tmp_path, text, message):
    persona = tmp_path / "bad-persona.txt"
    persona.write_bytes(text if isinstance(text, bytes) else text.encode())
    cfg = Config(live=LiveConfig(system_instruction_file=str(persona)))
    with pytest.raises(ConfigError, match=f"system_instruction_file: {persona} {message}"):
        connect_config(cfg, None)


# ---- activity detection, barge-in, compression, resumption -----------------------------------


async def test_toggle_mode_lets_the_server_detect_speech_with_the_owner_settings(server):
    cfg = config_for(
        server, button={"mode": "toggle"},
        conversation={"start_sensitivity": "low", "end_sensitivity": "low", "silence_ms": 500,
                      "prefix_padding_ms": 200, "barge_in": False},
    )
    setup = await received_setup(server, cfg)
    assert at(setup, "realtime_input_config") == {
        "automatic_activity_detection": {
            "disabled": False,
            "start_of_speech_sensitivity": "START_SENSITIVITY_LOW",
            "end_of_speech_sensitivity": "END_SENSITIVITY_LOW",
            "prefix_padding_ms": 200,
            "silence_duration_ms": 500,
        },
        "activity_handling": "NO_INTERRUPTION",
    }


async def test_a_push_to_talk_press_interrupts_the_reply_even_without_barge_in(server):
    """The press silences the reply on the box: with NO_INTERRUPTION the service went on
    with it, and the answer to the press came only after the rest nobody heard."""
    cfg = config_for(server, conversation={"barge_in": False})
    setup = await received_setup(server, cfg)
    assert at(setup, "realtime_input_config") == {
        "automatic_activity_detection": {"disabled": True},
    }


@pytest.mark.parametrize(("live", "expected"), [
    ({"compression": False}, None),
    ({"compression_target_tokens": 16000}, {"sliding_window": {"target_tokens": 16000}}),
    ({"compression_trigger_tokens": 32000, "compression_target_tokens": 16000},
     {"trigger_tokens": 32000, "sliding_window": {"target_tokens": 16000}}),
])
async def test_compression_only_when_on_with_the_owner_token_counts(server, live, expected):
    setup = await received_setup(server, config_for(server, live=live))
    assert at(setup, "context_window_compression") == expected


async def test_a_resumption_handle_is_sent_and_the_server_resumes(server):
    cfg = config_for(server)
    client = make_client(cfg)
    async with client.aio.live.connect(model=cfg.live.model,
                                       config=connect_config(cfg, None)) as session:
        await session.send_realtime_input(text="remember the number seven")
        async for _ in session.receive():
            pass
        update = (await anext(aiter(session.receive()))).session_resumption_update
    setup = await received_setup(server, cfg, update.new_handle)
    assert at(setup, "session_resumption") == {"handle": update.new_handle}
    assert server.sessions[update.new_handle].history == ["remember the number seven"]


# ---- model-specific settings -----------------------------------------------------------------


@pytest.mark.parametrize(("model", "live", "proactivity", "affective"), [
    ("gemini-3.8-live", {"proactive_audio": True, "affective_dialog": False}, None, None),
    (OLDER, {"proactive_audio": True, "affective_dialog": True}, {"proactive_audio": True}, True),
    (OLDER, {"proactive_audio": False, "affective_dialog": False},
     {"proactive_audio": False}, False),
    (PREVIEW_3_1, {"proactive_audio": False, "affective_dialog": False}, None, None),
    ("gemini-9-live", {"proactive_audio": False, "affective_dialog": True},
     {"proactive_audio": False}, True),
])
async def test_model_settings_are_sent_only_where_the_model_takes_them(
    server, model, live, proactivity, affective
):
    server.config.models.add("gemini-9-live")
    setup = await received_setup(server, config_for(server, live={"model": model, **live}))
    assert at(setup, "proactivity") == proactivity
    assert at(setup, "generation_config", "enable_affective_dialog") == affective
    path = server.log.connections()[-1].path
    assert (".v1alpha." in path) == (proactivity is not None or affective is not None)


@pytest.mark.parametrize(("live", "message"), [
    ({"proactive_audio": False},
     "[live] proactive_audio: gemini-3.8-live always uses proactive audio and cannot turn it "
     f"off; remove the setting or choose {OLDER}"),
    ({"affective_dialog": True},
     "[live] affective_dialog: gemini-3.8-live does not support affective dialog; remove it or "
     f"choose {OLDER}"),
    ({"model": PREVIEW_3_1, "proactive_audio": True},
     f"[live] proactive_audio: {PREVIEW_3_1} does not support proactive audio; remove it or "
     f"choose {OLDER}"),
    ({"model": "gemini-3.8-live", "backend": "vertex", "project": "p", "location": "l",
      "affective_dialog": True},
     "[live] affective_dialog: gemini-3.8-live does not support affective dialog; remove it or "
     f"choose {VERTEX_ONLY}"),
    ({"model": OLDER, "affective_dialog": True, "api_version": "v1beta"},
     "[live] api_version: proactive_audio and affective_dialog are served on v1alpha only "
     "(got 'v1beta'); remove api_version"),
])
def test_settings_the_model_cannot_honour_are_config_errors(live, message):
    cfg = LiveConfig(**live)
    with pytest.raises(ConfigError) as caught:
        check_model_settings(cfg, "/etc/live-appliance/config.toml")
    assert str(caught.value) == f"/etc/live-appliance/config.toml: {message}"
    with pytest.raises(ConfigError, match=r"^\[live\] "):
        connect_config(Config(live=cfg), None)


def test_vertex_takes_affective_dialog_without_v1alpha():
    live = LiveConfig(model=VERTEX_ONLY, backend="vertex", project="p", location="l",
                      proactive_audio=True, affective_dialog=True)
    check_model_settings(live)
    setup = connect_config(Config(live=live), None)
    assert setup.proactivity == types.ProactivityConfig(proactive_audio=True)
    assert setup.enable_affective_dialog is True
    assert make_client(Config(live=live))._api_client._http_options.api_version != "v1alpha"


@pytest.mark.parametrize(
    ("backend", "version"), [("gemini", "v1"), ("vertex", "v1beta1")]
)
def test_the_api_version_in_the_environment_does_not_pass_the_configurations_check(
    monkeypatch: pytest.MonkeyPatch, backend: str, version: str
) -> None:
    """GOOGLE_GENAI_API_VERSION=v1beta1 in a shell (or a drop-in) took the Gemini API to a
    version it does not serve: a bare 404 at every press, where the same value in
    [live] api_version stops the start with the versions served."""
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "v1beta1" if backend == "gemini" else "v1alpha")
    vertex = {"project": "p", "location": "l"} if backend == "vertex" else {}
    live = LiveConfig(backend=backend, **vertex)  # type: ignore[arg-type]
    client = make_client(Config(live=live, api_key=Secret("AIza-not-a-real-key-0123456789ab")))
    assert client._api_client._http_options.api_version == version


@pytest.mark.parametrize("model", sorted(m for m in MODELS if "gemini" in MODELS[m].backends))
async def test_the_local_server_accepts_our_setup_for_every_known_model(server, model):
    """Every allowed combination of the model settings, as the server's model rules see
    it, on the Gemini API (Vertex AI's own model is refused there by the config; its
    setup is the test above)."""
    assert set(MODELS) == set(DEFAULT_MODELS)
    accepted = 0
    for proactive in (None, True, False):
        for affective in (None, True, False):
            live = {"model": model, "proactive_audio": proactive, "affective_dialog": affective}
            try:
                check_model_settings(LiveConfig(**live))
            except ConfigError:
                continue
            try:
                await received_setup(server, config_for(server, live=live))
            except errors.APIError as exc:
                pytest.fail(f"{live} refused: {exc}")
            accepted += 1
    assert accepted >= 4  # every model takes at least "unset" or "as it does anyway"



def test_the_daemons_session_imports_the_sdk_only_when_prepared() -> None:
    """The daemon builds its session object before it opens the sound devices, and
    imports the SDK (37 MB) after: the two must not be in memory at once (peak RSS)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "import device.appliance, device.parts, device.live.session\n"
        "print('google.genai' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "False", run.stderr


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


async def setup_model(monkeypatch: pytest.MonkeyPatch, model: str) -> str:
    """The model the setup of one press names, on Vertex AI with `model` configured."""
    monkeypatch.setattr(Credentials, "made", [])  # this press's first: token-1
    monkeypatch.setattr(google.auth, "default", lambda **_: (Credentials(), "p"))
    events: list[Event] = []
    options = {"pace": 0, "reply_seconds": 0.2, "bearer_tokens": {"token-1"}}
    async with trusted_server(monkeypatch, **options) as server:
        live = {"backend": "vertex", "project": "p", "location": "l", "model": model}
        cfg = dataclasses.replace(config_for(server, live=live), api_key=None)
        link = LiveLink(cfg, Outbox(5), events.append, lambda _item, _t: None)
        link.open(1)
        await until(lambda: events)
        await link.close()
        assert isinstance(events[-1], SetupComplete), events
        return str(server.log.connections()[-1].setup["model"])


async def test_a_vertex_model_named_with_the_gemini_apis_prefix_is_the_publishers_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`model = "models/gemini-3.8-live"`, as the Gemini API's examples write it, loads
    (the config takes "models/" as the Gemini API does); on Vertex AI the SDK kept it as
    it was, and the setup named "models/gemini-3.8-live", where Vertex AI's publisher
    models are "projects/P/locations/L/publishers/google/models/NAME": the same model
    named without the prefix, which is what the owner meant."""
    bare = await setup_model(monkeypatch, "gemini-3.8-live")
    assert bare == "projects/p/locations/l/publishers/google/models/gemini-3.8-live"
    assert await setup_model(monkeypatch, "models/gemini-3.8-live") == bare
