"""Turns the owner's settings into a google-genai client and a Live session setup.

Kept apart from the connection code so that what goes into `setup` can be read
(and tested) in one place.
"""

from __future__ import annotations

from google import genai
from google.genai import types

from device.config import Config

EPHEMERAL_PREFIX = "auth_tokens/"


def make_client(cfg: Config) -> genai.Client:
    """A client for the Gemini API (key or ephemeral token) or Vertex AI.

    The TLS context is built here, once, from SSL_CERT_FILE or certifi.
    """
    live = cfg.live
    api_version = live.api_version
    key = cfg.api_key.reveal() if cfg.api_key else None
    if key and key.startswith(EPHEMERAL_PREFIX) and api_version is None:
        api_version = "v1alpha"  # ephemeral tokens are served on v1alpha only
    http_options = types.HttpOptions(base_url=live.base_url, api_version=api_version)
    if live.backend == "vertex":
        return genai.Client(
            vertexai=True,
            project=live.project,
            location=live.location,
            http_options=http_options,
        )
    return genai.Client(api_key=key, http_options=http_options)


def connect_config(cfg: Config, resumption_handle: str | None) -> types.LiveConnectConfig:
    """The session setup: audio replies, voice, persona, activity detection, resumption."""
    live, conv = cfg.live, cfg.conversation
    push_to_talk = cfg.button.mode == "push_to_talk"
    speech = None
    if live.voice or live.language:
        speech = types.SpeechConfig(
            voice_config=(
                types.VoiceConfig(
                    prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=live.voice)
                )
                if live.voice
                else None
            ),
            language_code=live.language,
        )
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
            silence_duration_ms=conv.silence_ms,
        )
    transcription = types.AudioTranscriptionConfig() if live.transcripts else None
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        speech_config=speech,
        system_instruction=live.system_instruction,
        realtime_input_config=types.RealtimeInputConfig(automatic_activity_detection=detection),
        input_audio_transcription=transcription,
        output_audio_transcription=transcription,
        session_resumption=types.SessionResumptionConfig(handle=resumption_handle),
        context_window_compression=types.ContextWindowCompressionConfig(
            sliding_window=types.SlidingWindow()
        ),
    )
