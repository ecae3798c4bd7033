"""What each Live model accepts in its setup, and the owner's settings checked against it.

Pure data and the rules that read it, with no SDK import, so that the config
loader can refuse a setting the chosen model cannot honour at start (one line,
exit 2) instead of the service closing the session at the first press.

Sources: PROTOCOL.md (Models) and the Live API guides. On the Gemini API,
proactive audio and affective dialog are v1alpha features and 3.1 Flash Live
has neither; on gemini-3.8-live proactive audio is always on and affective
dialog is gone. Native audio models (every model below) pick the language they
speak themselves and take no speech language code: the guides say to name the
language in the system instruction instead, which is what the setup does.
A model missing from the table (new ones appear) gets every setting as configured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from device.errors import ConfigError

if TYPE_CHECKING:
    from device.config import LiveConfig

#: How a model treats a feature: the owner chooses, it is always on, or it does not exist.
Support = Literal["choice", "always", "absent"]

#: The Gemini API version that serves proactive audio and affective dialog.
V1ALPHA = "v1alpha"


@dataclass(frozen=True)
class ModelCapabilities:
    """One model's answers to the settings that differ between models."""

    proactive_audio: Support
    affective_dialog: Support
    #: Accepts `speech_config.language_code`.
    language_code: bool
    backends: frozenset[str] = frozenset({"gemini"})


_NATIVE_AUDIO_2_5 = ModelCapabilities(
    proactive_audio="choice", affective_dialog="choice", language_code=False
)

MODELS: dict[str, ModelCapabilities] = {
    "gemini-3.8-live": ModelCapabilities(
        proactive_audio="always", affective_dialog="absent",
        language_code=False, backends=frozenset({"gemini", "vertex"}),
    ),
    "gemini-3.1-flash-live-preview": ModelCapabilities(
        proactive_audio="absent", affective_dialog="absent", language_code=False
    ),
    "gemini-2.5-flash-native-audio-preview-12-2025": _NATIVE_AUDIO_2_5,
    "gemini-live-2.5-flash-native-audio": replace(
        _NATIVE_AUDIO_2_5, backends=frozenset({"vertex"})
    ),
}

#: What a model missing from the table is assumed to accept: everything, as configured.
UNKNOWN_MODEL = ModelCapabilities(
    proactive_audio="choice", affective_dialog="choice",
    language_code=True, backends=frozenset({"gemini", "vertex"}),
)

_FEATURE_NAMES = {"proactive_audio": "proactive audio", "affective_dialog": "affective dialog"}


@dataclass(frozen=True)
class ModelSettings:
    """The model-specific parts of a setup, after the model's rules (None: left out)."""

    proactive_audio: bool | None
    affective_dialog: bool | None
    #: For `speech_config.language_code`; None when the model takes no language code.
    language_code: str | None
    #: The language to name in the system instruction when the model takes no language code.
    spoken_language: str | None
    #: The Gemini API serves these settings on v1alpha only.
    needs_v1alpha: bool


def capabilities(model: str) -> ModelCapabilities:
    """The table's entry for `model` ('models/' prefix allowed), or UNKNOWN_MODEL."""
    return MODELS.get(model.rsplit("/", 1)[-1], UNKNOWN_MODEL)


def sdk_model(live: LiveConfig) -> str:
    """The model's name as the SDK is given it. On Vertex AI without the Gemini API's
    "models/": the SDK keeps such a name as it is, and the setup named no model Vertex AI
    serves, where the bare name becomes its publisher model
    (projects/P/locations/L/publishers/google/models/NAME)."""
    if live.backend == "vertex":
        return live.model.removeprefix("models/")
    return live.model


def model_settings(live: LiveConfig) -> ModelSettings:
    """What the setup may carry for `live`; ConfigError when a setting cannot work."""
    caps = capabilities(live.model)
    if live.backend not in caps.backends:
        others = [name for name, known in MODELS.items() if live.backend in known.backends]
        raise ConfigError(
            f"[live] model: {live.model} is not served on backend '{live.backend}'; "
            f"choose {' or '.join(others)}"
        )
    proactive = _feature(live, caps, "proactive_audio")
    affective = _feature(live, caps, "affective_dialog")
    needs_v1alpha = live.backend == "gemini" and (proactive, affective) != (None, None)
    if needs_v1alpha and live.api_version not in (None, V1ALPHA):
        raise ConfigError(
            f"[live] api_version: proactive_audio and affective_dialog are served on "
            f"{V1ALPHA} only (got {live.api_version!r}); remove api_version"
        )
    takes_code = caps.language_code
    return ModelSettings(
        proactive_audio=proactive,
        affective_dialog=affective,
        language_code=live.language if takes_code else None,
        spoken_language=None if takes_code else live.language,
        needs_v1alpha=needs_v1alpha,
    )


def check_model_settings(live: LiveConfig, where: str = "") -> None:
    """Raise ConfigError (prefixed with `where: `) when `live` asks what its model cannot do."""
    try:
        model_settings(live)
    except ConfigError as exc:
        if not where:
            raise
        raise ConfigError(f"{where}: {exc}") from None


def _feature(live: LiveConfig, caps: ModelCapabilities, key: str) -> bool | None:
    """The value to send for a proactivity/affective setting, None to leave it out."""
    wanted: bool | None = getattr(live, key)
    support: Support = getattr(caps, key)
    if wanted is None or support == "choice":
        return wanted
    if support == "always" and not wanted:
        raise ConfigError(
            f"[live] {key}: {live.model} always uses {_FEATURE_NAMES[key]} and cannot turn it "
            f"off; remove the setting or choose {_models_with(key, live.backend)}"
        )
    if support == "absent" and wanted:
        raise ConfigError(
            f"[live] {key}: {live.model} does not support {_FEATURE_NAMES[key]}; remove it "
            f"or choose {_models_with(key, live.backend)}"
        )
    return None  # asked for what the model does anyway: nothing to send


def _models_with(key: str, backend: str) -> str:
    """The known models on `backend` where the owner may choose `key`."""
    names = [
        name for name, caps in MODELS.items()
        if getattr(caps, key) == "choice" and backend in caps.backends
    ]
    return " or ".join(names) or "another model"
