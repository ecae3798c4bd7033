"""Turns the owner's settings into a google-genai client and a Live session setup.

Kept apart from the connection code so that what goes into `setup` can be read
(and tested) in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from google import genai
from google.genai import types
from google.genai._live_converters import _LiveServerMessage_from_mldev

from device.config import (
    DEFAULT_API_VERSION,
    TOKEN_PREFIX,
    Config,
    LiveConfig,
    read_instruction_file,
)
from device.live.credentials import Token, load
from device.live.models import V1ALPHA, model_settings
from device.live.websocket import BoundedClose
from device.live.wire import REPLY_RATE, pcm_mime
from device.tools import declarations

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

#: A reply chunk as the service sends it (`warm_up` decodes it once at start).
REPLY_CHUNK = {
    "serverContent": {
        "modelTurn": {"parts": [{"inlineData": {"mimeType": pcm_mime(REPLY_RATE), "data": "AAAA"}}]}
    }
}

#: Passed through to `websockets.connect`. The link checks liveness itself: the
#: service answers pings late, and websockets' 20 s ping timeout drops healthy sessions.
#: No permessage-deflate: base64 audio hardly compresses, and deflating every 40 ms
#: chunk costs a small Pi more CPU than the bytes it saves on the link.
#: While the read-ahead is full nothing is read, and websockets holds at most `max_queue`
#: frames (then stops reading the socket) of at most `max_size` bytes each: a reply
#: frame is about 13 KB (0.2 s of audio); a frame over 1 MiB ends the connection (1009).
#: A close, the service's or ours, waits CLOSE_TIMEOUT_S for the other side, not
#: websockets' 10 s: a service that closed with 1011 while the box sent held speech
#: stopped reading it, never saw the box's answer to its close, and the box sat on the
#: dead connection for 10 s (its words lost into it, SIGTERM past TimeoutStopSec); a box
#: with nothing to send is held to it too (`device.live.websocket.BoundedClose`).
#: No opening handshake timeout of websockets' own (10 s): every connect is bounded by
#: `connect_timeout_s`, which an owner on a slow link may set higher.
CLOSE_TIMEOUT_S = 1.0
WEBSOCKET_OPTIONS: dict[str, Any] = {"ping_interval": None, "ping_timeout": None,
                                     "close_timeout": CLOSE_TIMEOUT_S, "compression": None,
                                     "max_queue": 4, "max_size": 2**20, "open_timeout": None,
                                     "create_connection": BoundedClose}


class Built(NamedTuple):
    """A client, and on Vertex AI the access token the box keeps fresh for it."""

    client: genai.Client
    token: Token | None


def build_client(cfg: Config) -> Built:
    """The client the daemon, `ask` and `doctor` connect with. Blocking: on Vertex AI it
    loads the credentials (a file, or a metadata server), which the token then refreshes
    within a connect's timeout."""
    credentials = load(cfg)
    token = None if credentials is None else Token(credentials, cfg.live.connect_timeout_s)
    return Built(make_client(cfg, credentials), token)


def make_client(cfg: Config, credentials: Credentials | None = None) -> genai.Client:
    """A client for the Gemini API (key or ephemeral token) or Vertex AI.

    The TLS context is built here, once, from SSL_CERT_FILE or certifi. On Vertex AI
    the client signs in with `credentials` (`device.live.credentials`, which keeps their
    token fresh); without them the SDK loads and refreshes its own in the loop's pool.
    """
    live = cfg.live
    key = cfg.api_key.reveal() if cfg.api_key else None
    http_options = types.HttpOptions(
        base_url=live.base_url,
        api_version=_api_version(live, key),
        async_client_args=dict(WEBSOCKET_OPTIONS),
    )
    if live.backend == "vertex":
        return genai.Client(
            vertexai=True,
            credentials=credentials,
            project=live.project,
            location=live.location,
            http_options=http_options,
        )
    # Said, not left to the SDK: it takes Vertex AI from GOOGLE_GENAI_USE_VERTEXAI (or
    # _ENTERPRISE) otherwise, and a shell set up for Google Cloud sent the key there.
    return genai.Client(vertexai=False, api_key=key, http_options=http_options)


def warm_up() -> None:
    """Decode one reply chunk the way the SDK's receive does, before the first reply.

    The SDK builds its message models the first time it uses them: 80 ms on a fast
    machine, most of a second on a Pi Zero, which would otherwise lie between the
    first reply's arrival and its sound.
    """
    response = _LiveServerMessage_from_mldev(dict(REPLY_CHUNK))
    types.LiveServerMessage._from_response(response=response, kwargs={})


def _api_version(live: LiveConfig, key: str | None) -> str:
    """The configured version, else v1alpha where the Gemini API serves only that, else
    the backend's default."""
    if live.api_version is not None:
        return live.api_version
    ephemeral = key is not None and key.startswith(TOKEN_PREFIX)
    if live.backend == "gemini" and (ephemeral or model_settings(live).needs_v1alpha):
        return V1ALPHA
    return DEFAULT_API_VERSION[live.backend]


def connect_config(cfg: Config, resumption_handle: str | None) -> types.LiveConnectConfig:
    """The session setup: audio replies, persona, tools, activity detection, resumption."""
    live = cfg.live
    model = model_settings(live)
    transcription = types.AudioTranscriptionConfig() if live.transcripts else None
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        speech_config=_speech(live.voice, model.language_code),
        system_instruction=_instruction(live, model.spoken_language),
        tools=list(declarations(cfg.tools)) or None,
        realtime_input_config=_realtime_input(cfg),
        input_audio_transcription=transcription,
        output_audio_transcription=transcription,
        session_resumption=types.SessionResumptionConfig(handle=resumption_handle),
        context_window_compression=_compression(live),
        proactivity=(
            types.ProactivityConfig(proactive_audio=model.proactive_audio)
            if model.proactive_audio is not None
            else None
        ),
        enable_affective_dialog=model.affective_dialog,
    )


def _speech(voice: str | None, language_code: str | None) -> types.SpeechConfig | None:
    if voice is None and language_code is None:
        return None
    voice_config = (
        types.VoiceConfig(prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=voice))
        if voice
        else None
    )
    return types.SpeechConfig(voice_config=voice_config, language_code=language_code)


def _instruction(live: LiveConfig, spoken_language: str | None) -> str | None:
    """The persona (the file wins over the inline text), plus the language to speak."""
    if live.system_instruction_file:
        persona: str | None = read_instruction_file(live.system_instruction_file)
    else:
        persona = live.system_instruction
    if spoken_language is None:
        return persona
    language = f"Speak {spoken_language} (a BCP-47 language code) unless asked otherwise."
    return f"{persona}\n\n{language}" if persona else language


def _realtime_input(cfg: Config) -> types.RealtimeInputConfig:
    """Push-to-talk marks turns itself, and a press always interrupts; toggle mode lets the
    server hear when speech ends, and `barge_in` says whether speech stops a reply."""
    conv = cfg.conversation
    push_to_talk = cfg.button.mode == "push_to_talk"
    if push_to_talk:
        detection = types.AutomaticActivityDetection(disabled=True)
    else:
        detection = types.AutomaticActivityDetection(
            disabled=False,
            start_of_speech_sensitivity=types.StartSensitivity(
                f"START_SENSITIVITY_{conv.start_sensitivity.upper()}"
            ),
            end_of_speech_sensitivity=types.EndSensitivity(
                f"END_SENSITIVITY_{conv.end_sensitivity.upper()}"
            ),
            prefix_padding_ms=conv.prefix_padding_ms,
            silence_duration_ms=conv.silence_ms,
        )
    # A press during a reply silences it on the box: the service must stop it too, or
    # the answer to the press would come only after the rest of the reply nobody hears.
    return types.RealtimeInputConfig(
        automatic_activity_detection=detection,
        activity_handling=None
        if cfg.speech_interrupts
        else types.ActivityHandling.NO_INTERRUPTION,
    )


def _compression(live: LiveConfig) -> types.ContextWindowCompressionConfig | None:
    """A sliding window makes sessions unbounded (15 min audio, 2 min video without it)."""
    if not live.compression:
        return None
    return types.ContextWindowCompressionConfig(
        trigger_tokens=live.compression_trigger_tokens,
        sliding_window=types.SlidingWindow(target_tokens=live.compression_target_tokens),
    )
