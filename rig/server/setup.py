"""Checking a ``setup`` message the way the service does, and reading its options.

What each model refuses is kept here, as the service's answers (close code and
reason), and not read from ``device.models``: the local server is the witness
the client's own table is tested against, so it must not share that table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device.live.wire import CLOSE_INTERNAL, CLOSE_INVALID, CLOSE_POLICY
from rig.server.vad import DEFAULT_SILENCE_MS, threshold_for
from rig.server.wire import ProtocolError, has, pick

DEFAULT_MODELS = frozenset({
    "gemini-3.8-live",
    "gemini-3.1-flash-live-preview",
    "gemini-2.5-flash-native-audio-preview-12-2025",
    "gemini-live-2.5-flash-native-audio",
})


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
        raise ProtocolError(CLOSE_INVALID, "Invalid argument: setup.model is required.")
    return model.rsplit("models/", 1)[-1]


# ---- what a setup asks for ---------------------------------------------------------------


def _generation(setup: dict[str, Any]) -> dict[str, Any]:
    return pick(setup, "generation_config") or {}


def asks_for_text(setup: dict[str, Any]) -> bool:
    """Response modalities other than exactly [AUDIO] (TEXT alone, or TEXT beside AUDIO)."""
    modalities = pick(_generation(setup), "response_modalities")
    return modalities is not None and [str(m).upper() for m in modalities] != ["AUDIO"]


def sets_thinking(setup: dict[str, Any]) -> bool:
    return has(_generation(setup), "thinking_config")


def sets_affective_dialog(setup: dict[str, Any]) -> bool:
    """The SDK writes it into generationConfig; raw clients may put it at the top."""
    return has(_generation(setup), "enable_affective_dialog") or has(
        setup, "enable_affective_dialog"
    )


def sets_proactivity(setup: dict[str, Any]) -> bool:
    return has(setup, "proactivity")


def turns_proactive_audio_off(setup: dict[str, Any]) -> bool:
    return pick(pick(setup, "proactivity"), "proactive_audio") is False


# ---- what each model refuses ---------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A setup the model does not take, and how the service closes the connection on it."""

    applies: Callable[[dict[str, Any]], bool]
    code: int
    reason: str  # `{model}` is replaced by the model's name


#: Native audio models speak only: asking for TEXT replies is closed with 1007 and this
#: reason (seen on the 2.5 native audio previews: google-gemini/cookbook#793,
#: livekit/livekit#4103; pipecat-ai/pipecat#4175: every recent Live model takes AUDIO only).
NO_VOICE_FOR_TEXT = Refusal(
    asks_for_text, CLOSE_INVALID, "Cannot extract voices from a non-audio request."
)

REFUSALS: dict[str, tuple[Refusal, ...]] = {
    # PROTOCOL.md (Models): audio is the only response modality, thinking_config must be
    # omitted, proactive audio is always on, affective dialog is gone.
    "gemini-3.8-live": (
        Refusal(asks_for_text, CLOSE_INVALID, "{model} supports only the AUDIO response modality."),
        Refusal(sets_thinking, CLOSE_INVALID, "{model} does not accept thinking_config; omit it."),
        Refusal(sets_affective_dialog, CLOSE_INVALID,
                "{model} does not support enable_affective_dialog."),
        Refusal(turns_proactive_audio_off, CLOSE_INVALID,
                "{model} always uses proactive audio; it cannot be false."),
    ),
    # Its model page (ai.google.dev/gemini-api/docs/models/gemini-3.1-flash-live-preview,
    # "Migrating"): no proactive audio or affective dialog yet, remove their configuration.
    # TEXT replies end the setup with 1011, not 1007 (googleapis/python-genai#2238).
    "gemini-3.1-flash-live-preview": (
        Refusal(asks_for_text, CLOSE_INTERNAL, "Internal error encountered."),
        Refusal(sets_proactivity, CLOSE_INVALID, "{model} does not support proactive audio."),
        Refusal(sets_affective_dialog, CLOSE_INVALID, "{model} does not support affective dialog."),
    ),
    "gemini-2.5-flash-native-audio-preview-12-2025": (NO_VOICE_FOR_TEXT,),
    "gemini-live-2.5-flash-native-audio": (NO_VOICE_FOR_TEXT,),
}


def check_model_rules(name: str, setup: dict[str, Any]) -> None:
    """Close like the service when the setup asks `name` for what it does not do."""
    for refusal in REFUSALS.get(name, ()):
        if refusal.applies(setup):
            raise ProtocolError(refusal.code, refusal.reason.format(model=name))


def read_setup(setup: Any, known_models: frozenset[str] | set[str]) -> SessionOptions:
    """Validate ``setup`` and extract the options; raise ProtocolError like the service."""
    if not isinstance(setup, dict):
        raise ProtocolError(CLOSE_INVALID, "Invalid argument: setup must be an object.")
    name = model_name(pick(setup, "model"))
    if name not in known_models:
        raise ProtocolError(
            CLOSE_POLICY,
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
