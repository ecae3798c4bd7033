"""Checking a ``setup`` message the way the service does, and reading its options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from device.sim.vad import DEFAULT_SILENCE_MS, threshold_for
from device.sim.wire import INVALID, POLICY, ProtocolError, has, pick

DEFAULT_MODELS = frozenset({
    "gemini-3.8-live",
    "gemini-3.1-flash-live-preview",
    "gemini-2.5-flash-native-audio-preview-12-2025",
    "gemini-live-2.5-flash-native-audio",
})
STRICT_MODEL = "gemini-3.8-live"


@dataclass(frozen=True)
class SessionOptions:
    """The parts of a setup that change how the local model behaves."""

    model: str
    manual_activity: bool
    interruptible: bool
    silence_ms: int
    threshold: float
    input_transcription: bool
    output_transcription: bool
    resumption: bool
    resume_handle: str | None
    compression: bool


def model_name(model: Any) -> str:
    """'models/X', 'projects/../models/X' or 'X' -> 'X'."""
    if not isinstance(model, str) or not model:
        raise ProtocolError(INVALID, "Invalid argument: setup.model is required.")
    return model.rsplit("models/", 1)[-1]


def check_model_rules(name: str, setup: dict[str, Any]) -> None:
    """Enforce the rules of gemini-3.8-live (PROTOCOL.md, Models)."""
    if name != STRICT_MODEL:
        return
    gen = pick(setup, "generation_config") or {}
    modalities = pick(gen, "response_modalities")
    if modalities is not None and [str(m).upper() for m in modalities] != ["AUDIO"]:
        raise ProtocolError(INVALID, f"{name} supports only the AUDIO response modality.")
    if has(gen, "thinking_config"):
        raise ProtocolError(INVALID, f"{name} does not accept thinking_config; omit it.")
    if has(gen, "enable_affective_dialog") or has(setup, "enable_affective_dialog"):
        raise ProtocolError(INVALID, f"{name} does not support enable_affective_dialog.")
    if pick(pick(setup, "proactivity"), "proactive_audio") is False:
        raise ProtocolError(INVALID, f"{name} always uses proactive audio; it cannot be false.")


def read_setup(setup: Any, known_models: frozenset[str] | set[str]) -> SessionOptions:
    """Validate ``setup`` and extract the options; raise ProtocolError like the service."""
    if not isinstance(setup, dict):
        raise ProtocolError(INVALID, "Invalid argument: setup must be an object.")
    name = model_name(pick(setup, "model"))
    if name not in known_models:
        raise ProtocolError(
            POLICY,
            f"models/{name} is not found for API version, or is not supported for "
            "bidiGenerateContent.",
        )
    check_model_rules(name, setup)
    ric = pick(setup, "realtime_input_config") or {}
    aad = pick(ric, "automatic_activity_detection") or {}
    resumption = pick(setup, "session_resumption")
    return SessionOptions(
        model=name,
        manual_activity=bool(pick(aad, "disabled", False)),
        interruptible=pick(ric, "activity_handling") != "NO_INTERRUPTION",
        silence_ms=int(pick(aad, "silence_duration_ms") or DEFAULT_SILENCE_MS),
        threshold=threshold_for(pick(aad, "start_of_speech_sensitivity")),
        input_transcription=has(setup, "input_audio_transcription"),
        output_transcription=has(setup, "output_audio_transcription"),
        resumption=resumption is not None,
        resume_handle=pick(resumption, "handle"),
        compression=has(setup, "context_window_compression"),
    )
