"""Typed settings from one TOML file plus environment overrides, validated at start.

Every section is a frozen dataclass; the loader checks each value against the
field's type and bounds, so a bad file fails once, at start, with a message that
names the file, the key and what is allowed, instead of a traceback at the first
button press. The API key is held in a `Secret` whose repr hides it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import grp
import math
import os
import re
import stat
import sys
import time
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from device.errors import (
    ConfigError,
    ConfigFileUnusable,
    ConfigUnreadable,
    UnusableKey,
    remember_secret,
    url_without_password,
)
from device.live.models import MODELS, V1ALPHA, check_model_settings

DEFAULT_PATH = Path("/etc/live-appliance/config.toml")
ENV_PATH = "LIVE_APPLIANCE_CONFIG"
ENV_PREFIX = "LIVE_APPLIANCE_"
#: Names under the prefix that are not settings: the file to read, the log format
#: (device/logs.py), and the HIL runs' own (tests/hil, hil/, .ci/run), which the daemons
#: those runs start inherit. Any other name under the prefix is meant as a setting.
ENV_NOT_SETTINGS = frozenset(
    {ENV_PATH, *(ENV_PREFIX + name for name in ("LOG_FORMAT", "HIL", "HIL_STRICT", "HIL_CACHE"))}
)
CREDENTIAL_NAME = "api-key"
KEY_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
#: Quotation marks no key or token starts or ends with (letters, digits, "-", "_", "/").
QUOTES = "\"'`"
#: How an ephemeral token starts (served on the Gemini API's v1alpha only).
TOKEN_PREFIX = "auth_tokens/"
#: The longest an ephemeral token lives (its expire_time: less than 20 hours after it was
#: made): a token file written longer ago holds none that opens a session.
TOKEN_LIFE_S = 20 * 3600
#: Where the Pi installer keeps the key (root only): the service gets it as its
#: credential, and `doctor`, `ask` and `run` outside systemd read it when run as root.
INSTALLED_KEY_FILE = Path("/etc/live-appliance/api-key")
DEFAULT_SOCKET = "/run/live-appliance/control.sock"
#: Hands-free, the silence that hangs up (from the last word) leaves the model this long
#: beyond the service's own end-of-speech silence (`silence_ms`) to begin its answer.
ANSWER_MARGIN_S = 1.0
#: The highest BCM GPIO number on the 40-pin header (every Pi since the B+, and the Pi 5):
#: the SoC's lines above it are its own (Wi-Fi, Bluetooth, the jack), and gpiozero refuses
#: them ("29 is not a valid pin name") only as the service opens them, tried again for
#: ever. A header pin number (the wiring table's "pins 29 / 31 / 33") is one of them.
GPIO_LIMIT = 27
#: The API versions each backend serves (google-genai uses v1 on the Gemini API and
#: v1beta1 on Vertex AI when none is set): another fails every session's connection.
API_VERSIONS = {"gemini": ("v1", "v1beta", "v1alpha"), "vertex": ("v1", "v1beta1")}
#: Those defaults, given the client rather than left to it: it takes GOOGLE_GENAI_API_VERSION
#: from the environment otherwise, past the check above (a bare 404 at every press).
DEFAULT_API_VERSION = {"gemini": "v1", "vertex": "v1beta1"}
#: The Live API's prebuilt voices: any other name fails every session's setup.
VOICES = (
    "Zephyr", "Puck", "Charon", "Kore", "Fenrir", "Leda", "Orus", "Aoede", "Callirrhoe",
    "Autonoe", "Enceladus", "Iapetus", "Umbriel", "Algieba", "Despina", "Erinome", "Algenib",
    "Rasalgethi", "Laomedeia", "Achernar", "Alnilam", "Schedar", "Gacrux", "Pulcherrima",
    "Achird", "Zubenelgenubi", "Vindemiatrix", "Sadachbia", "Sadaltager", "Sulafat",
)  # fmt: skip
#: The Live models' context window (their input token limit): compression must start
#: within it, or the session is cut at the limit after all.
CONTEXT_WINDOW_TOKENS = 131072
#: Where the service starts compressing when `compression_trigger_tokens` is unset: 80% of
#: the context window, leaving the rest for the next turn and its reply.
DEFAULT_TRIGGER_TOKENS = CONTEXT_WINDOW_TOKENS * 8 // 10
#: A BCP-47 language tag as RFC 5646 spells one: a language, then subtags of one to
#: eight letters or digits ("en", "de-DE", "cmn-CN", "zh-Hans-CN", "es-419",
#: "en-US-u-ca-gregory"). Not "German" spelled out, nor "en_US".
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
#: A Google Cloud location as Vertex AI names one ("us-central1", "europe-west4", "global"):
#: it becomes part of the host of every connection (LOCATION-aiplatform.googleapis.com).
REGION = re.compile(r"[a-z]+(-[a-z0-9]+)*")
#: A model's name as the services write one: lower-case letters, digits, "." and "-", after
#: an optional path ("models/", or a Vertex AI resource's "projects/.../models/").
MODEL_NAME = re.compile(r"([A-Za-z0-9._-]+/)*[a-z0-9][a-z0-9.-]*")


class Secret:
    """A string that never shows itself in logs, reprs or tracebacks: nor does any text
    the journal, a state's reason or an error takes it into (whenever it was read)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        remember_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _bounded(low: float, high: float, *, octal: bool = False) -> dict[str, Any]:
    return {"bounds": (low, high), "octal": octal}


@dataclass(frozen=True)
class LiveConfig:
    """How to reach the Live API and what to ask of it."""

    model: str = "gemini-3.8-live"
    backend: Literal["gemini", "vertex"] = "gemini"
    base_url: str | None = None
    api_version: str | None = None
    api_key_file: str | None = None
    project: str | None = None
    location: str | None = None
    voice: str | None = None
    language: str | None = None
    system_instruction: str | None = None
    #: The persona from a file instead (it wins over `system_instruction`).
    system_instruction_file: str | None = None
    #: Ask the service for transcripts of both sides (input and output transcription).
    transcripts: bool = True
    #: Write the words of those transcripts to the journal; false keeps them out (privacy).
    log_transcripts: bool = True
    #: Model-specific features; unset leaves them out of the setup.
    proactive_audio: bool | None = None
    affective_dialog: bool | None = None
    #: Sliding-window context compression: without it a session is cut at 15 min (2 with video).
    compression: bool = True
    #: Both within the Live models' context window: a trigger above it is never reached.
    compression_trigger_tokens: int | None = field(
        default=None, metadata=_bounded(1000, CONTEXT_WINDOW_TOKENS)
    )
    compression_target_tokens: int | None = field(
        default=None, metadata=_bounded(500, CONTEXT_WINDOW_TOKENS)
    )
    #: Seconds to reach the service and finish setup before the press shows an error.
    connect_timeout_s: float = field(default=5.0, metadata=_bounded(0.5, 120))
    #: How often to ping an otherwise quiet connection.
    keepalive_s: float = field(default=10.0, metadata=_bounded(1, 300))
    #: A connection that shows no traffic at all (messages or pongs) this long is dead.
    dead_after_s: float = field(default=30.0, metadata=_bounded(2, 600))
    #: How long to keep reconnecting a dropped session before showing an error.
    reconnect_for_s: float = field(default=30.0, metadata=_bounded(1, 600))


#: What a hands-free box does with its microphone while it speaks.
MicDuringPlayback = Literal["cancel", "gate", "attenuate", "open"]


@dataclass(frozen=True)
class AudioConfig:
    """Which PortAudio devices to use and how to chunk the microphone."""

    #: A substring of the PortAudio name, or its index (no box lists a thousand devices).
    input_device: int | str | None = field(default=None, metadata=_bounded(0, 1023))
    output_device: int | str | None = field(default=None, metadata=_bounded(0, 1023))
    #: Microphone chunk sent to the service: 20-40 ms is what it wants; every chunk wakes
    #: the event loop and passes the SDK, so 40 ms halves what streaming costs.
    chunk_ms: int = field(default=40, metadata=_bounded(10, 100))
    earcons: bool = True
    #: In a hands-free conversation the speaker must not feed the microphone: "cancel" takes
    #: the box's own voice out, so a person can talk over it (echo cancellation; "gate"
    #: where the module has no wheel), "gate" mutes the microphone while the box speaks,
    #: "attenuate" lowers it, "open" leaves it.
    mic_during_playback: MicDuringPlayback = "cancel"
    attenuation_db: float = field(default=30.0, metadata=_bounded(0, 90))
    #: Steady noise (a fan, a fridge) taken out of the microphone by the module "cancel"
    #: uses. Off unless asked: it softens the onsets of words said over the box's voice
    #: and holds the microphone back 6 ms more (README, "Hands-free with the speaker").
    noise_suppression: bool = False
    #: Hands-free: a microphone quieter than this (RMS, dBFS) for a second is no longer
    #: sent (the service is told the stream paused) until it hears more, the moments
    #: before that going first. Silence costs CPU, bandwidth and tokens. -100: always send.
    pause_below_dbfs: float = field(default=-50.0, metadata=_bounded(-100, 0))
    #: Audio from just before a press that is sent with it: people talk as they press.
    preroll_ms: int = field(default=100, metadata=_bounded(0, 1000))
    #: Seconds of microphone audio held while the connection is not ready.
    hold_s: float = field(default=8.0, metadata=_bounded(1, 60))
    #: A microphone chunk this loud (RMS, dBFS) is someone talking: the silence that ends
    #: a conversation, or a button held with nobody talking, counts from the last one.
    speech_dbfs: float = field(default=-40.0, metadata=_bounded(-90, 0))
    #: The speaker's PortAudio period: how much the sound card takes at a time. Neither a
    #: reply's first sound (it starts into an idle device) nor the silence after a barge-in
    #: (what the device holds is dropped) waits on it.
    period_ms: int = field(default=10, metadata=_bounded(5, 50))
    #: Speaker volume, 0..1 (the set_volume tool changes it and keeps it across restarts).
    volume: float = field(default=1.0, metadata=_bounded(0, 1))
    #: Seconds before the first try to reopen an audio device that failed or vanished
    #: (each try that fails doubles the wait, up to a minute).
    reopen_s: float = field(default=3.0, metadata=_bounded(0.5, 60))


@dataclass(frozen=True)
class ButtonConfig:
    """The one button and what pressing it means."""

    pin: int = field(default=17, metadata=_bounded(0, GPIO_LIMIT))
    #: The pin reads high while pressed: a module that drives it (a touch sensor), read with
    #: the pull-down. False: a button to ground, read with the pull-up, pressed when low.
    active_high: bool = False
    mode: Literal["push_to_talk", "toggle"] = "push_to_talk"
    bounce_ms: int = field(default=20, metadata=_bounded(0, 500))
    #: Holding this long with nobody talking ends the session (push-to-talk; someone
    #: talking ends their turn at the release instead); 0 turns it off.
    long_press_s: float = field(default=10.0, metadata=_bounded(0, 120))


@dataclass(frozen=True)
class ConversationConfig:
    """Session lifetime and the server's voice activity detection (toggle mode)."""

    idle_timeout_s: float = field(default=60.0, metadata=_bounded(1, 3600))
    end_after_silence_s: float = field(default=30.0, metadata=_bounded(1, 3600))
    silence_ms: int = field(default=800, metadata=_bounded(100, 10000))
    start_sensitivity: Literal["low", "high"] = "high"
    end_sensitivity: Literal["low", "high"] = "high"
    prefix_padding_ms: int | None = field(default=None, metadata=_bounded(0, 2000))
    #: Hands-free: new speech during a reply stops the reply (the service's barge-in).
    #: A push-to-talk press always does.
    barge_in: bool = True
    error_display_s: float = field(default=3.0, metadata=_bounded(0.5, 60))
    #: Push-to-talk: a turn whose reply has not started after this long ends with the error
    #: earcon (a tool that never answers, a reply lost with its connection). Hands-free,
    #: what went out this long ago with no answer is not sent again on a next connection.
    reply_timeout_s: float = field(default=30.0, metadata=_bounded(2, 600))
    #: One reply plays at most this long: a service streaming without end stops here
    #: (hands-free, the microphone then listens for `end_after_silence_s` and hangs up).
    longest_reply_s: float = field(default=300.0, metadata=_bounded(10, 3600))
    #: Push-to-talk: the microphone streams at most this long at one go, whatever it hears
    #: (the room's steady sound, a TV, keeps the silence timer from running out): a held
    #: press ends as a release does.
    longest_turn_s: float = field(default=120.0, metadata=_bounded(10, 3600))
    #: Hands-free: a conversation lasts at most this long, whatever it hears: the box hangs
    #: up, after the answer playing.
    longest_conversation_s: float = field(default=900.0, metadata=_bounded(30, 14400))


@dataclass(frozen=True)
class HardwareConfig:
    """A preset for a known board; every value it sets can be overridden key by key."""

    profile: str = "breadboard"


@dataclass(frozen=True)
class LedsConfig:
    """How the state LEDs are wired (BCM pin numbers) or which APA102 pixels to drive."""

    kind: Literal["single", "multi", "rgb", "apa102", "none"] = "rgb"
    pins: tuple[int, ...] = (5, 6, 13)
    active_high: bool = True
    #: Overall brightness of APA102 pixels, 0..1 (their global brightness field).
    brightness: float = field(default=1.0, metadata=_bounded(0, 1))
    #: APA102 pixels: how many, on which SPI bus and chip select.
    count: int = field(default=3, metadata=_bounded(1, 255))
    spi_bus: int = field(default=0, metadata=_bounded(0, 6))
    spi_device: int = field(default=0, metadata=_bounded(0, 3))
    #: APA102 on plain GPIO pins instead of SPI (bit-banged): both pins or neither.
    data_pin: int | None = field(default=None, metadata=_bounded(0, GPIO_LIMIT))
    clock_pin: int | None = field(default=None, metadata=_bounded(0, GPIO_LIMIT))
    #: A pin that switches the pixels' power on (some HATs have one).
    power_pin: int | None = field(default=None, metadata=_bounded(0, GPIO_LIMIT))


@dataclass(frozen=True)
class CameraConfig:
    """The camera that lets the model see, only while someone is talking to the box."""

    enabled: bool = True
    source: Literal["picamera2", "synthetic"] = "picamera2"
    fps: float = field(default=1.0, metadata=_bounded(0.1, 1.0))
    quality: int = field(default=80, metadata=_bounded(10, 100))
    #: Frames are square, this many pixels a side (768 is what the Live API sees best).
    size: int = field(default=768, metadata=_bounded(64, 2048))
    #: Keep the camera running this long after the last frame, for a quick follow-up.
    linger_s: float = field(default=3.0, metadata=_bounded(0, 60))
    #: A pin that lights an LED while the camera runs.
    led_pin: int | None = field(default=None, metadata=_bounded(0, GPIO_LIMIT))


@dataclass(frozen=True)
class ToolsConfig:
    """What the model may do on the device, and whether it may search the web."""

    #: Names of device tools to offer the model (see README); none by default.
    enabled: tuple[str, ...] = ()
    google_search: bool = False
    timeout_s: float = field(default=5.0, metadata=_bounded(0.1, 120))


@dataclass(frozen=True)
class ServiceConfig:
    """Where the daemon keeps what must survive a restart."""

    #: Default: $STATE_DIRECTORY (set by systemd), else /var/lib/live-appliance.
    state_dir: str | None = None


@dataclass(frozen=True)
class ControlConfig:
    """The UNIX socket that `live-appliance ctl` and tests talk to."""

    socket: str = DEFAULT_SOCKET
    mode: int = field(default=0o660, metadata=_bounded(0o600, 0o666, octal=True))


@dataclass(frozen=True)
class Config:
    """All settings, plus where they came from and the resolved credential."""

    live: LiveConfig = LiveConfig()
    audio: AudioConfig = AudioConfig()
    button: ButtonConfig = ButtonConfig()
    conversation: ConversationConfig = ConversationConfig()
    hardware: HardwareConfig = HardwareConfig()
    leds: LedsConfig = LedsConfig()
    camera: CameraConfig = CameraConfig()
    tools: ToolsConfig = ToolsConfig()
    control: ControlConfig = ControlConfig()
    service: ServiceConfig = ServiceConfig()
    path: Path | None = None
    api_key: Secret | None = field(default=None, repr=False)
    api_key_source: str | None = None

    @property
    def speech_interrupts(self) -> bool:
        """Speech over a reply stops it: a push-to-talk press always, hands-free words
        with `barge_in`. Without it the person hears a reply to its end, then the answer."""
        return self.button.mode == "push_to_talk" or self.conversation.barge_in


SECTIONS: dict[str, type] = {
    name: hint
    for name, hint in typing.get_type_hints(Config).items()
    if isinstance(hint, type) and dataclasses.is_dataclass(hint)
}


def resolve_path(cli_path: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """The file to read and whether the owner named it (a named file must exist)."""
    if cli_path:
        return Path(cli_path), True
    if env := os.environ.get(ENV_PATH):
        return Path(env), True
    return DEFAULT_PATH, False


def load(
    cli_path: str | os.PathLike[str] | None = None, *, whole: bool = True, key: bool = True
) -> Config:
    """Read, override from the environment, validate; raise ConfigError on any fault.

    `whole=False` leaves out what costs time (the persona file, the tools' declarations
    and their pydantic): `ctl` needs the socket's path only, and answers at once.
    `key=False` leaves the key out (the doctor judges a bad one as the key, not as the
    configuration, whose every other check can then still run)."""
    path, named = resolve_path(cli_path)
    raw = _read_toml(path, must_exist=named)
    where = str(path)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        name, value = unknown[0], raw[unknown[0]]
        if not isinstance(value, dict):  # `voice = "Puck"` before the first [section] line
            owners = _owners_of(name)
            where_it_goes = (
                _where_it_goes(name, owners, variable=False)
                if owners
                else _not_a_key_setting(name) or f"no section has a setting {name}"
            )
            raise ConfigError(  # not the value: it may be a key pasted in the wrong place
                f"{where}: {name} = ... is above every section line; {where_it_goes}"
            )
        near = [s for s in SECTIONS if s == name.lower()]
        near = near or difflib.get_close_matches(name.lower(), SECTIONS, 1, 0.75)
        hint = f" (did you mean [{near[0]}]?)" if near else ""
        raise ConfigError(
            f"{where}: unknown section [{name}]{hint}; allowed: {', '.join(SECTIONS)}"
        )
    for name, values in raw.items():
        if not isinstance(values, dict):  # `hardware = "respeaker-2mic"`, `[[audio]]`
            raise ConfigError(
                f"{where}: [{name}] must be a table of settings: a line [{name}], its "
                f"settings on the lines below (got {name} = {_shown(values)})"
            )
    from_env = _env_overrides()
    for (section, setting), (_, value) in from_env.items():
        raw.setdefault(section, {})[setting] = value
    origin = {spot: variable for spot, (variable, _) in from_env.items()}
    with _naming_variables(origin):
        presets = _profile_presets(where, raw.get("hardware", {}))
    sections = {
        name: _build_section(where, name, cls, raw.get(name, {}), presets.get(name, {}), origin)
        for name, cls in SECTIONS.items()
    }
    config = Config(**sections, path=path if path.exists() else None)
    with _naming_variables(origin):
        _check_consistency(where, config, whole)
    return with_api_key(config) if whole and key else config


def with_api_key(config: Config) -> Config:
    """`config` with the key find_api_key finds, and where (raising as it does)."""
    found, source = find_api_key(config.live)
    return dataclasses.replace(config, api_key=found, api_key_source=source)


@contextlib.contextmanager
def _naming_variables(origin: dict[tuple[str, str], str]) -> Iterator[None]:
    """A check's ConfigError names the settings it refuses as `[section] key`, after the
    file: where a variable set one (a drop-in's Environment=), the owner would look for
    it in a file that does not hold it. The error says which variable did."""
    try:
        yield
    except UnusableKey:
        raise
    except ConfigError as exc:
        message = str(exc)
        named = [
            f"environment variable {variable} sets [{section}] {key}"
            for (section, key), variable in origin.items()
            if f"[{section}]" in message and re.search(rf"\b{re.escape(key)}\b", message)
        ]
        if not named:
            raise
        raise ConfigError(f"{message} ({'; '.join(named)})") from None


def _read_toml(path: Path, must_exist: bool) -> dict[str, Any]:
    try:
        text = read_text(path, CONFIG_FILE_LIMIT, str(path), edited=True)
    except FileNotFoundError:
        if must_exist:
            raise ConfigFileUnusable(f"{path}: no such configuration file") from None
        return {}
    except PermissionError as exc:
        problem = f"{path}: cannot read: {exc.strerror}"
        raise ConfigUnreadable(problem, _let_the_service_read(path)) from None
    except ConfigError as exc:  # a directory, over the bound, not UTF-8
        raise ConfigFileUnusable(str(exc)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileUnusable(_toml_problem(path, text, exc)) from None
    except RecursionError:  # a value nested thousands deep: no setting is
        raise ConfigFileUnusable(f"{path}: not valid TOML: nested too deep") from None
    except ValueError:  # tomllib's int() of a decimal past Python's digit limit
        digits = sys.get_int_max_str_digits()
        raise ConfigFileUnusable(
            f"{path}: not valid TOML: a number of over {digits} digits"
        ) from None


#: Where tomllib puts its error: "(at line 4, column 13)", or "(at end of document)".
_TOML_AT = re.compile(r" \(at (?:line (\d+), column \d+|end of document)\)$")
#: tomllib's words for a key or table written twice, in the owner's.
_TOML_TWICE = {"Cannot overwrite a value": "set twice", "Cannot declare": "declared twice"}
_TOML_HEADER = re.compile(r"\s*\[\[?\s*([^\]]+?)\s*\]")


def _toml_problem(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's message, with the line and the key or table on it named: its own says
    only "Cannot overwrite a value (at line 4, column 13)" of a volume set twice. The
    key's name, never the line: a value there may be a secret."""
    message = str(exc)
    at = _TOML_AT.search(message)
    lines = text.split("\n")  # as tomllib counts them (splitlines breaks at more)
    if at is None:
        return f"{path}: not valid TOML: {message}"
    if at[1] is not None:
        number = int(at[1])
    else:  # a key on the last line, no newline after it
        number = max((i for i, line in enumerate(lines, 1) if line.strip()), default=1)
    reason = next(
        (said for words, said in _TOML_TWICE.items() if message.startswith(words)), message
    )
    name = _toml_name(lines[:number])
    value = lines[number - 1].partition("=")[2].partition("#")[0]
    if name and name.endswith(" mode") and (mode := _as_octal(value)):  # chmod's 0660
        reason = f"TOML numbers have no leading 0: a file mode is written {mode}"
    return f"{path} line {number}: not valid TOML: {f'{name}: ' if name else ''}{reason}"


def _as_octal(text: str) -> str | None:
    """A file mode written as for chmod ("0660", "660") as TOML writes it ("0o660")."""
    digits = re.fullmatch(r"\s*(?:0o)?([0-7]{3,4})\s*", text)
    return f"0o{digits[1].lstrip('0') or '0'}" if digits else None


def _toml_name(lines: list[str]) -> str | None:
    """The key or table the last of `lines` writes, in the README's words ("[audio]
    volume"), from the table above it; None for a line that is neither, or that a
    string or array begun above goes on through (its words are a value, maybe a secret)."""
    if not lines or not _starts_a_statement(lines, len(lines) - 1):
        return None
    if header := _TOML_HEADER.match(lines[-1]):
        return f"[{header[1]}]"
    key, equals, _ = lines[-1].partition("=")
    if not equals or not key.strip():
        return None
    table = next(
        (
            h[1]
            for i in reversed(range(len(lines) - 1))
            if (h := _TOML_HEADER.match(lines[i])) and _starts_a_statement(lines, i)
        ),
        None,
    )
    return f"[{table}] {key.strip()}" if table else key.strip()


def _starts_a_statement(lines: list[str], index: int) -> bool:
    """Line `index` begins a key or table, not a line of a multi-line string or array
    ("[note] be brief" in a persona): the lines above it are whole TOML."""
    try:
        tomllib.loads("".join(line + "\n" for line in lines[:index]))  # a CRLF line whole
    except (tomllib.TOMLDecodeError, RecursionError, ValueError):
        return False
    return True


def _let_the_service_read(path: Path) -> str:
    """What lets the reader of an unreadable configuration in: the owner's fix (sudo, the
    group) unless systemd runs us (its credential directory says so), as the service's
    own user and group, where the journal would tell the service to use sudo."""
    if not os.environ.get("CREDENTIALS_DIRECTORY"):
        return ConfigUnreadable.FIX
    gid = os.getegid()
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return (
        f"The service (group {group}) may not read it: sudo chgrp {group} {path} && "
        f"sudo chmod 0640 {path} (and let the service into the directories above it), "
        "then restart the service."
    )


def _env_overrides() -> dict[tuple[str, str], tuple[str, Any]]:
    """`LIVE_APPLIANCE_AUDIO_CHUNK_MS=40` overrides `[audio] chunk_ms` (TOML syntax, or
    text): {(section, key): (variable, value)}. A variable for no section
    (`LIVE_APPLIANCE_LED_KIND`, `LIVE_APPLIANCE_SPEAKER_VOLUME`) is an error, not
    silently nothing; only ENV_NOT_SETTINGS are not settings."""
    found: dict[tuple[str, str], tuple[str, Any]] = {}
    for name, value in os.environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            if rest in SECTIONS:
                raise ConfigError(
                    f"environment variable {name}: names section [{rest}] but no setting in "
                    f"it: {name}_<SETTING>, e.g. {ENV_PREFIX}AUDIO_CHUNK_MS"
                )
            if near := difflib.get_close_matches(rest.split("_")[0], SECTIONS, 1, 0.75):
                raise ConfigError(
                    f"environment variable {name}: no section [{rest.split('_')[0]}]; "
                    f"did you mean {ENV_PREFIX}{near[0].upper()}_...?"
                )
            if rest in ("api_key", "key"):
                raise ConfigError(
                    f"environment variable {name}: not a setting; the key goes in "
                    f"{KEY_ENV_VARS[0]}, or in a file named by [live] api_key_file"
                )
            if owner := [s for s, cls in SECTIONS.items() if rest in _field_names(cls)]:
                raise ConfigError(
                    f"environment variable {name}: a setting's variable names its section: "
                    f"{ENV_PREFIX}{owner[0].upper()}_{rest.upper()}"
                )
            raise ConfigError(
                f"environment variable {name}: no section [{rest.split('_')[0]}]; a setting's "
                f"variable is {ENV_PREFIX}<SECTION>_<SETTING>, the sections: {', '.join(SECTIONS)}"
            )
        key = rest[len(section) + 1 :]
        _check_utf8(name, value)
        found[section, key] = (name, _env_value(value, _hints(SECTIONS[section]).get(key)))
    return found


def _check_utf8(name: str, value: str) -> None:
    """A variable set from a terminal that is not UTF-8 (Latin-1's umlauts as single bytes)
    holds them as lone surrogates, which no setting can use: a persona's went to the
    service in every setup (the file's own check says where it is not UTF-8)."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        byte = ord(value[exc.start]) & 0xFF  # surrogateescape: U+DC80..U+DCFF
        raise ConfigError(
            f"environment variable {name}: is not UTF-8 text: byte 0x{byte:02x} at character "
            f"{exc.start + 1}; set it from a UTF-8 terminal, or write the setting in the "
            "configuration file"
        ) from None


def _env_value(text: str, hint: Any) -> Any:
    """The variable's text read as TOML (`40`, `true`, `[5, 6]`), else as it is; the
    text as it is too where the setting takes a string and not the TOML value:
    `LIVE_APPLIANCE_LIVE_PROJECT=123456789012` is a project, not a number."""
    try:
        parsed = tomllib.loads(f"v = {text}")["v"]
    except (ValueError, RecursionError):  # not TOML, past int's digit limit, too deep
        return text
    if hint is None or _coerce(hint, parsed) is not _INVALID:
        return parsed
    return text if _coerce(hint, text) is not _INVALID else parsed


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A section's settings and their types, resolved once (every load asks)."""
    return typing.get_type_hints(cls)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


#: Names an owner gives the key when writing it into the configuration, where it does not go.
KEY_SETTING_NAMES = frozenset(
    {"api_key", "apikey", "key", "token", "gemini_api_key", "google_api_key"}
)


def _not_a_key_setting(name: str) -> str | None:
    """Where the key goes, when `name` is what an owner calls it in the configuration."""
    if name.lower().replace("-", "_") not in KEY_SETTING_NAMES:
        return None
    return (
        f"the API key does not go in the configuration: put it alone in {INSTALLED_KEY_FILE}"
        f" (sudoedit {INSTALLED_KEY_FILE}), or name a file holding it with [live] api_key_file"
    )


def _owners_of(key: str) -> list[str]:
    """The sections that have a setting `key` (active_high: [button] and [leds])."""
    return [name for name, cls in SECTIONS.items() if key in _field_names(cls)]


def _where_it_goes(key: str, owners: list[str], variable: bool) -> str:
    """'it is a setting of [leds]: write it below the line [leds]', or of each owner."""
    sections = " and ".join(f"[{owner}]" for owner in owners)
    if variable:
        place = " or ".join(f"{ENV_PREFIX}{owner.upper()}_{key.upper()}" for owner in owners)
        return f"it is a setting of {sections}: set {place}"
    line = f"the line [{owners[0]}]" if len(owners) == 1 else "the line of the one meant"
    return f"it is a setting of {sections}: write it below {line}"


def _profile_presets(where: str, hardware: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings the chosen `[hardware] profile` implies, section by section."""
    from device.hw.profiles import PROFILES

    name = hardware.get("profile", HardwareConfig.profile)
    if not isinstance(name, str) or name not in PROFILES:
        raise ConfigError(
            f"{where}: [hardware] profile: must be one of {', '.join(map(repr, PROFILES))} "
            f"(got {_shown(name)})"
        )
    return PROFILES[name]


def _build_section(
    where: str,
    name: str,
    cls: type,
    values: dict[str, Any],
    preset: dict[str, Any],
    origin: dict[tuple[str, str], str],
) -> Any:
    """One section from the file's values laid over the profile's preset; a value from
    the environment (`origin`) is named by its variable in an error."""
    values = {**preset, **values}
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}

    def label(key: str) -> str:
        variable = origin.get((name, key))
        return f"environment variable {variable}" if variable else f"{where}: [{name}] {key}"

    unknown = sorted(set(values) - set(fields))
    if unknown:
        key = unknown[0]
        variable = origin.get((name, key))
        setting = f" [{name}] {key}" if variable else ""
        if owners := _owners_of(key):  # under the wrong header: say which one is right
            where_it_goes = _where_it_goes(key, owners, variable=bool(variable))
            raise ConfigError(f"{label(key)}: unknown setting{setting}; {where_it_goes}")
        if not variable and (elsewhere := _not_a_key_setting(key)):
            raise ConfigError(f"{label(key)}: unknown setting; {elsewhere}")
        hint = ""
        if near := _nearest(key, fields):
            meant = f"{ENV_PREFIX}{name.upper()}_{near.upper()}" if variable else near
            hint = f" (did you mean {meant}?)"
        raise ConfigError(
            f"{label(key)}: unknown setting{setting}{hint}; allowed: {', '.join(fields)}"
        )
    checked = {
        key: _check_value(label(key), hints[key], fields[key], value)
        for key, value in values.items()
    }
    return cls(**checked)


def _nearest(key: str, names: Collection[str]) -> str | None:
    """The setting a misspelt `key` most likely meant (a letter off, a wrong case, a unit
    suffix left out: `idle_timout_s`, `Volume`, `long_press`), if one is close."""
    lower = key.lower()
    if lower in names:
        return lower
    near = difflib.get_close_matches(lower, names, 1, 0.8)
    return near[0] if near else None


def _check_value(label: str, hint: Any, spec: dataclasses.Field[Any], value: Any) -> Any:
    allowed = _describe(hint)
    result = _coerce(hint, value)
    if result is _INVALID:
        mode = _as_octal(value) if spec.metadata.get("octal") and isinstance(value, str) else None
        octal = f": a file mode is written {mode}" if mode else ""  # a string, as for chmod
        raise ConfigError(f"{label}: must be {allowed} (got {_shown(value)}){octal}")
    bounds = spec.metadata.get("bounds")
    if bounds and isinstance(result, int | float) and not bounds[0] <= result <= bounds[1]:
        if spec.metadata.get("octal"):  # file modes: 660 is not 0o660
            low, high = oct(bounds[0]), oct(bounds[1])
            got = f"{_shown(value)}, which is {oct(value)}" if _short(value) else _shown(value)
        else:
            low, high, got = bounds[0], bounds[1], _shown(value)
        raise ConfigError(f"{label}: must be between {low} and {high} (got {got})")
    return result


def _short(value: Any) -> bool:
    """Not an integer too long to write in an error: TOML's hex, octal and binary have no
    digit limit, and Python refuses to write one of thousands of digits in decimal."""
    return not isinstance(value, int) or value.bit_length() <= 128


def _shown(value: Any) -> str:
    """A value for an error line: a text pasted into the wrong setting is cut short, an
    integer too long to write (alone, or in a list or a table) is described."""
    if not _short(value):
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        shown = repr(value)
    except ValueError:  # such an integer inside a list or a table
        kind = "table" if isinstance(value, dict) else "list"
        return f"a {kind} holding an integer of thousands of digits"
    return shown if len(shown) <= 80 else f"{shown[:60]}... ({len(shown)} characters)"


_INVALID = object()


def _coerce(hint: Any, value: Any) -> Any:
    """The value as the type wants it, or _INVALID. TOML already typed most of it."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(hint):
            result = _coerce(option, value)
            if result is not _INVALID:
                return result
        return _INVALID
    if origin is Literal:
        return value if value in typing.get_args(hint) else _INVALID
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            return _INVALID
        items = [_coerce(item, v) for v in value]
        return _INVALID if _INVALID in items else tuple(items)
    if hint is type(None):
        return _INVALID  # TOML has no null; None only comes from defaults
    if hint is bool:
        return value if isinstance(value, bool) else _INVALID
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return _INVALID
        try:
            return float(value)
        except OverflowError:  # an integer past any float: past any bound too
            return math.inf if value > 0 else -math.inf
    if hint is str:  # only spaces is as empty as an empty persona file
        return value if isinstance(value, str) and value.strip() else _INVALID
    return _INVALID


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        parts = [_describe(a) for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(parts)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return f"a list of {_PLURALS.get(item, _describe(item))}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a non-empty string"}
    return names.get(hint, str(hint))


_PLURALS = {int: "integers", str: "non-empty strings"}


def _check_speech_is_sent(where: str, config: Config) -> None:
    """Hands-free, a second below `pause_below_dbfs` holds the microphone back, and what is
    held back is neither sent nor heard as speech: a `speech_dbfs` below it (lowered for
    someone who speaks softly) would have their words dropped once the room was quiet."""
    audio = config.audio
    if config.button.mode == "toggle" and audio.speech_dbfs < audio.pause_below_dbfs:
        raise ConfigError(
            f"{where}: [audio] speech_dbfs ({audio.speech_dbfs:g} dBFS) must not be below "
            f"pause_below_dbfs ({audio.pause_below_dbfs:g} dBFS) in toggle mode: speech that "
            "quiet would count as someone talking, but after a second of it the microphone "
            "would no longer be sent; lower pause_below_dbfs too (-100: always send)"
        )


def _check_consistency(where: str, config: Config, whole: bool) -> None:
    live = config.live
    if live.backend == "vertex" and not (live.project and live.location):
        raise ConfigError(
            f"{where}: [live] backend = 'vertex' needs project and location "
            "(e.g. project = 'my-project', location = 'us-central1')"
        )
    if live.backend == "vertex" and live.api_key_file is not None:
        # The Vertex AI client is never given a key: a token minter's file named here
        # would go unread, and every press fail for want of the credentials it does use.
        raise ConfigError(
            f"{where}: [live] api_key_file: not used with backend 'vertex', which signs in "
            "with application default credentials (an API key or ephemeral token is for "
            "backend 'gemini'); remove api_key_file, or set backend = 'gemini'"
        )
    _check_live(where, live)
    leds = config.leds
    wanted = {"single": 1, "rgb": 3}.get(leds.kind)
    if wanted is not None and len(leds.pins) != wanted:
        raise ConfigError(
            f"{where}: [leds] pins: kind '{leds.kind}' needs {wanted} pin(s) (got {len(leds.pins)})"
        )
    _check_socket_mode(where, config.control.mode)
    if leds.kind == "multi" and not 1 <= len(leds.pins) <= 3:
        # A red, a green and a blue LED, any of them: a fourth pin has no colour, and the
        # service would run with its LEDs off, trying them again for ever.
        raise ConfigError(
            f"{where}: [leds] pins: kind 'multi' needs at least one pin and at most 3 "
            f"(red, green, blue; got {len(leds.pins)})"
        )
    if bad := [pin for pin in leds.pins if not 0 <= pin <= GPIO_LIMIT]:
        raise ConfigError(
            f"{where}: [leds] pins: must be between 0 and {GPIO_LIMIT} (got {bad[0]})"
        )
    if (leds.data_pin is None) != (leds.clock_pin is None):
        raise ConfigError(
            f"{where}: [leds] data_pin and clock_pin: set both (pixels on GPIO) or neither (SPI)"
        )
    _check_pins(where, config)
    conv = config.conversation
    # In whole milliseconds: the least the line names, written as it says, is not refused.
    least_ms = conv.silence_ms + round(ANSWER_MARGIN_S * 1000)
    if config.button.mode == "toggle" and round(conv.end_after_silence_s * 1000) < least_ms:
        # The silence timer runs from the last word; the service ends the turn silence_ms
        # after it, and only then answers (whose first sound stops the timer).
        raise ConfigError(
            f"{where}: [conversation] end_after_silence_s ({conv.end_after_silence_s:g} s) "
            f"must be at least silence_ms ({conv.silence_ms} ms) and {ANSWER_MARGIN_S:g} s "
            "more in toggle mode: the box would hang up before the service has heard the "
            "end of what was said and the model begun its answer"
        )
    _check_speech_is_sent(where, config)
    for label, named in (
        ("[live] api_key_file", live.api_key_file),
        ("[live] system_instruction_file", live.system_instruction_file),
        ("[control] socket", config.control.socket),
        ("[service] state_dir", config.service.state_dir),
    ):
        if named is not None and "\0" in named:
            raise ConfigError(f"{where}: {label}: a path cannot hold a NUL character")
    # `~` is expanded for the key file: the home of whoever runs it.
    key_file = live.api_key_file if not (live.api_key_file or "").startswith("~") else None
    for label, place in (
        ("[live] api_key_file", key_file),
        ("[live] system_instruction_file", live.system_instruction_file),
        ("[control] socket", config.control.socket),
        ("[service] state_dir", config.service.state_dir),
    ):
        if place is not None and not os.path.isabs(place):
            # The service runs in /run/live-appliance: a path that works from the owner's
            # shell (or `ctl` elsewhere) would never find the file there.
            raise ConfigError(f"{where}: {label}: must be an absolute path (got {place!r})")
    if live.system_instruction_file and whole:
        _prefixed(where, read_instruction_file, live.system_instruction_file)
    if live.keepalive_s >= live.dead_after_s:
        raise ConfigError(
            f"{where}: [live] keepalive_s ({live.keepalive_s:g}) must be below dead_after_s "
            f"({live.dead_after_s:g}): a quiet link is pinged before it counts as dead"
        )
    if live.base_url is not None:
        _check_url(where, live.base_url)
    socket_bytes = len(os.fsencode(config.control.socket))
    if socket_bytes > SOCKET_PATH_LIMIT:
        raise ConfigError(
            f"{where}: [control] socket: the path is {socket_bytes} bytes; a UNIX socket's "
            f"may have at most {SOCKET_PATH_LIMIT}"
        )
    _check_compression(where, live)
    check_model_settings(live, where)
    if config.tools.enabled and whole:
        from device.tools import DEVICE_TOOLS  # pydantic, not the Live SDK; tools.py imports us

        _prefixed(where, DEVICE_TOOLS.select, config.tools.enabled)


def _check_live(where: str, live: LiveConfig) -> None:
    """What the service would refuse at every press: a version, voice or language it
    does not know."""
    served = API_VERSIONS[live.backend]
    if live.api_version is not None and live.api_version not in served:
        raise ConfigError(
            f"{where}: [live] api_version: backend '{live.backend}' serves "
            f"{', '.join(map(repr, served))} (got {live.api_version!r})"
        )
    if live.voice is not None and live.voice not in VOICES:
        # A name in the wrong case or with a stray space is the likeliest mistake.
        near = [v for v in VOICES if v.lower() == live.voice.strip().lower()]
        near = near or difflib.get_close_matches(live.voice.strip().title(), VOICES, 1, 0.8)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(
            f"{where}: [live] voice: must be a prebuilt voice: {', '.join(VOICES)} "
            f"(got {live.voice!r}){hint}"
        )
    if not MODEL_NAME.fullmatch(live.model):
        # A name pasted from a heading ("Gemini 3.8 Live") or with a stray space; a name
        # of the right shape missing from the table may be a newer model, and loads.
        name = re.sub(r"[\s_]+", "-", live.model.strip().rsplit("/", 1)[-1].lower())
        near = difflib.get_close_matches(name, MODELS, 1, 0.8)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(
            f"{where}: [live] model: must be a model's name, in lower case without spaces, "
            f"such as {LiveConfig.model!r} (got {live.model!r}){hint}"
        )
    instruction = live.system_instruction
    if instruction is not None and len(instruction.encode()) > INSTRUCTION_FILE_LIMIT:
        # The persona file's bound: a config file may hold a MiB, past the model's context.
        raise ConfigError(
            f"{where}: [live] system_instruction: is over {INSTRUCTION_FILE_LIMIT // 1024} KiB"
        )
    if live.location is not None and not REGION.fullmatch(live.location):
        raise ConfigError(
            f"{where}: [live] location: must be a Google Cloud region such as 'us-central1', "
            f"'europe-west4' or 'global' (got {live.location!r})"
        )
    if live.language is not None and not LANGUAGE_TAG.fullmatch(live.language):
        raise ConfigError(
            f"{where}: [live] language: must be a BCP-47 language tag such as 'en-US', "
            f"'de-DE' or 'cmn-CN' (got {live.language!r})"
        )


def _check_compression(where: str, live: LiveConfig) -> None:
    """Token counts that would go unused, and a window kept larger than where it is cut
    (the SDK: target below trigger), which never slides."""
    trigger, target = live.compression_trigger_tokens, live.compression_target_tokens
    if not live.compression:
        for name, value in (("compression_trigger_tokens", trigger),
                            ("compression_target_tokens", target)):
            if value is not None:
                raise ConfigError(
                    f"{where}: [live] {name}: set with compression = false, which sends no "
                    "context window compression; remove it, or set compression = true"
                )
        return
    if target is None:
        return
    if trigger is not None and target >= trigger:
        raise ConfigError(
            f"{where}: [live] compression_target_tokens ({target}) must be below "
            f"compression_trigger_tokens ({trigger})"
        )
    if trigger is None and target >= DEFAULT_TRIGGER_TOKENS:
        raise ConfigError(
            f"{where}: [live] compression_target_tokens ({target}) must be below "
            f"compression_trigger_tokens, which is {DEFAULT_TRIGGER_TOKENS} (80% of the "
            "context window) when unset; lower it, or set compression_trigger_tokens above it"
        )


def _check_pins(where: str, config: Config) -> None:
    """Each GPIO pin does one thing: a button on an LED's pin would never be read, and one
    on the pixels' SPI lines or the HAT's sound lines would stop them."""
    from device.hw.profiles import SOUND_PINS, SPI_PINS

    leds = config.leds
    used = [("[button] pin", config.button.pin)]
    if leds.kind in ("single", "multi", "rgb"):
        used += [("[leds] pins", pin) for pin in leds.pins]
    elif leds.kind == "apa102":
        for name in ("data_pin", "clock_pin", "power_pin"):
            if (pin := getattr(leds, name)) is not None:
                used.append((f"[leds] {name}", pin))
        if leds.data_pin is None and leds.spi_bus in SPI_PINS:
            mosi, sclk, selects = SPI_PINS[leds.spi_bus]
            spi = f"the pixels' SPI{leds.spi_bus}"
            used += [(f"{spi} MOSI", mosi), (f"{spi} SCLK", sclk)]
            # The kernel holds the bus's chip selects, not only the pixels' one: all of
            # SPI0's with dtparam=spi=on, SPI1's up to the pixels' (the spi1-Ncs overlay).
            taken = len(selects) if leds.spi_bus == 0 else leds.spi_device + 1
            used += [(f"{spi} CE{n}", pin) for n, pin in enumerate(selects[:taken])]
    if config.camera.enabled and config.camera.led_pin is not None:
        used.append(("[camera] led_pin", config.camera.led_pin))
    profile = config.hardware.profile
    sound = SOUND_PINS.get(profile, {})
    used += [(f"the {profile} HAT's {line}", pin) for pin, line in sound.items()]
    first: dict[int, str] = {}
    for label, pin in used:
        if pin in first:
            raise ConfigError(
                f"{where}: {first[pin]} and {label} both name GPIO {pin}; each pin can do "
                "one thing"
            )
        first[pin] = label


def host_and_port(url: str) -> tuple[str, int]:
    """The host and port a connect to `url` opens; ValueError says why there is none: a
    port out of range or not a number, a bracket left open, no host, or a name the IDNA
    codec refuses (websockets encodes a host that is not ASCII, Python's resolver every
    host, ASCII too: live..example.com; the failure would be said as a message of the
    service's). A port of letters is not quoted when the URL has a password: it is then
    the password's first part, cut at a '/' pasted unencoded."""
    parts = urllib.parse.urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        if url_without_password(url) == url:
            raise
        raise ValueError("its port is not a number (a '/' in a password is written %2F)") from None
    if not host:
        raise ValueError("it names no host")
    try:
        host.encode("idna")
    except UnicodeError:
        raise ValueError("its host is not a valid name (an empty or too long label)") from None
    return host, port or 443


def _check_socket_mode(where: str, mode: int) -> None:
    """The control socket is the owner's, or the group's too, and nobody else's: `ctl
    press` opens the microphone, so a socket others may connect to lets any account on
    the box listen in on the room. Connecting takes write permission: a mode that lets
    the group read it but not write leaves them refused, a mistake for 0o660."""
    fixed = mode & ~0o007
    if fixed & 0o040:
        fixed |= 0o020
    if mode & 0o007:
        raise ConfigError(
            f"{where}: [control] mode: {oct(mode)} lets others on the box use the socket "
            f"(ctl press opens the microphone); it is the owner's alone or the group's "
            f"too: use {oct(fixed)}"
        )
    if fixed != mode:
        raise ConfigError(
            f"{where}: [control] mode: {oct(mode)} lets the group read the socket but not "
            f"connect to it, which takes write: use {oct(fixed)}"
        )


def _check_url(where: str, url: str) -> None:
    """`base_url` as the SDK takes it: http(s)://host[:port][/path]."""
    why = ""
    try:
        host_and_port(url)
        usable = urllib.parse.urlsplit(url).scheme in ("http", "https")
    except ValueError as exc:
        usable, why = False, f": {exc}"
    if not usable:
        raise ConfigError(
            f"{where}: [live] base_url: must be an http:// or https:// URL with a host "
            f"(got {url_without_password(url)!r}{why})"
        )


def _prefixed(where: str, check: Callable[[Any], object], value: Any) -> None:
    """Run a check that raises ConfigError; its message names the file too."""
    try:
        check(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


#: The most bytes of a file the configuration names, read whole: a path to something
#: else (a FIFO that never ends, /dev/zero, a log) is an error, not a hang or a gigabyte
#: read. A persona file holds pages of instructions; a key or token one line.
CONFIG_FILE_LIMIT = 1024 * 1024
INSTRUCTION_FILE_LIMIT = 64 * 1024
KEY_FILE_LIMIT = 16 * 1024
#: A UNIX socket's path, in bytes, at most (sun_path less its terminating NUL).
SOCKET_PATH_LIMIT = 107


@functools.cache
def read_instruction_file(path: str) -> str:
    """The persona file's text, read once (it is a start-time setting, like the rest)."""
    what = f"[live] system_instruction_file: {path}"
    try:
        text = read_text(path, INSTRUCTION_FILE_LIMIT, what, edited=True).strip()
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist") from None
    except PermissionError as exc:
        raise ConfigError(f"{what}: cannot read: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"[live] system_instruction_file: {path} is empty")
    return text


def read_text(path: str | Path, limit: int, what: str, *, edited: bool = False) -> str:
    """A regular file's UTF-8 text (a byte-order mark an editor added dropped), at most
    `limit` bytes; `what` names it in a ConfigError. Opening does not block on a FIFO.
    FileNotFoundError and PermissionError pass for the caller to explain. A file the
    owner `edited` (the configuration, the persona) that is not UTF-8 is said where, and
    how to convert it: an editor set to Latin-1 saved its umlauts as single bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):
        raise
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError(f"{what}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"{what} is {kind}")
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(limit + 1)
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise ConfigError(f"{what} is over {limit // 1024} KiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if not edited:
            raise ConfigError(f"{what} is not UTF-8 text") from None
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{what} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line}; save it "
            "as UTF-8 (from Latin-1: iconv -f latin1 -t utf-8)"
        ) from None


#: What to do about a key that is there but unusable, by where it is and why.
REWRITE_KEY_FILE = "Write the key into that file again."
REWRITE_KEY_VARIABLE = "Set the variable to the key again: no quotes, spaces or line breaks."
UNREADABLE_KEY_FILE = (
    "The key file is the service's and root's: run the doctor with sudo, or check its "
    "owner and mode (sudo ls -l on it)."
)


def find_api_key(live: LiveConfig) -> tuple[Secret | None, str | None]:
    """The key (or ephemeral `auth_tokens/...` token) and where it was found.

    Order: the systemd credential, `api_key_file`, GEMINI_API_KEY and GOOGLE_API_KEY,
    then the installer's INSTALLED_KEY_FILE (what was named wins over the default
    place). Vertex AI may run without one (application default credentials). Every
    new session reads it again, so a token written later is checked here too.
    """
    key, source = _find_api_key(live)
    if key is not None and source is not None:
        _check_token_version(live, key, source)
    return key, source


def _check_token_version(live: LiveConfig, key: Secret, source: str) -> None:
    """The Gemini API takes an ephemeral token on v1alpha only (chosen when api_version
    is unset): another version set by hand would fail every connection."""
    token = key.reveal().startswith(TOKEN_PREFIX)
    if token and live.backend == "gemini" and live.api_version not in (None, V1ALPHA):
        raise UnusableKey(
            f"[live] api_version: the ephemeral token from {source} is served on {V1ALPHA} "
            f"only (got {live.api_version!r}); remove api_version or set it to '{V1ALPHA}'",
            f"Remove [live] api_version from the configuration, or set it to '{V1ALPHA}'.",
        )


def _find_api_key(live: LiveConfig) -> tuple[Secret | None, str | None]:
    # (file, what it is, where to correct a bad key): the credential is systemd's copy,
    # made at the service's start, of the file the owner edits.
    candidates: list[tuple[Path, str, str]] = []
    if cred_dir := os.environ.get("CREDENTIALS_DIRECTORY"):
        path = Path(cred_dir) / CREDENTIAL_NAME
        fix = f" into {INSTALLED_KEY_FILE} and restart the service"
        candidates.append((path, f"systemd credential {path}", fix))
    if live.api_key_file:
        try:
            path = Path(live.api_key_file).expanduser()
        except RuntimeError:  # ~someone who has no home here
            raise UnusableKey(
                f"[live] api_key_file: {live.api_key_file}: no such home",
                "Write [live] api_key_file as a full path, without ~.",
            ) from None
        candidates.append((path, f"api_key_file {path}", ""))
    for path, source, fix in candidates:
        try:
            key = _read_key(path, source)
            if key:
                return _checked_key(key, source, REWRITE_KEY_FILE), source
        except FileNotFoundError:
            continue  # a named file not written yet: each new session looks again
        except PermissionError as exc:
            problem = f"{source}: cannot read: {exc.strerror}"
            raise UnusableKey(problem, UNREADABLE_KEY_FILE, source) from None
        except UnusableKey as exc:
            raise UnusableKey(f"{exc}{fix}", exc.fix, source) from None
    for name in KEY_ENV_VARS:
        if key := os.environ.get(name, "").strip():
            source = f"environment variable {name}"
            return _checked_key(key, source, REWRITE_KEY_VARIABLE), source
    if installed := _installed_key():
        source = f"the installer's key file {INSTALLED_KEY_FILE}"
        return _checked_key(installed, source, REWRITE_KEY_FILE), source
    return None, None


def _checked_key(key: str, source: str, fix: str) -> Secret:
    """The key as a Secret, if an HTTP header can carry it: a pasted line break or a
    zero-width space would fail every connection, with the key in the error's text.
    `fix` says how to put it right where it was found."""
    for position, char in enumerate(key, 1):
        if not "!" <= char <= "~":  # printable ASCII, no spaces
            kind = "a space or control character" if char.isascii() else "a non-ASCII character"
            raise UnusableKey(
                f"{source}: the API key has {kind} at position {position}, which no "
                "key has; copy the key again",
                fix,
            )
    if key[0] in QUOTES or key[-1] in QUOTES:  # from a TOML or JSON file, or a shell line
        raise UnusableKey(
            f"{source}: the API key is in quotation marks; write it without them", fix
        )
    if "=" in key:  # a line of an .env file: GEMINI_API_KEY=AIza...
        raise UnusableKey(
            f"{source}: holds NAME=value, not the API key alone; write only the key", fix
        )
    return Secret(key)


def _installed_key() -> str | None:
    """The installer's key file, if this user may read it; PermissionError is for
    `require_credentials` to explain (only root may read it)."""
    try:
        return _read_key(INSTALLED_KEY_FILE, str(INSTALLED_KEY_FILE)) or None
    except OSError:
        return None


def _read_key(path: Path, source: str) -> str:
    """A key file's key; its errors say to write the key again."""
    try:
        return read_text(path, KEY_FILE_LIMIT, source).strip()
    except ConfigError as exc:
        raise UnusableKey(f"{exc}; write the key again", REWRITE_KEY_FILE) from None


def installed_key_barred() -> bool:
    """Outside the service, the installer's key file is there and only root may read it:
    what the service may well use (its credential is that file's copy) is not seen here."""
    if os.environ.get("CREDENTIALS_DIRECTORY"):  # the service: it reads the credential
        return False
    try:
        os.close(os.open(INSTALLED_KEY_FILE, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except PermissionError:
        return True
    except OSError:
        pass
    return False


def key_file_changed_since_start() -> Path | None:
    """Under systemd, the installer's key file if it was written after systemd copied it
    into the service's credential (at the start): the service holds the key of then until
    it restarts. Blocking: two stats (the service may not read the file, but may stat it).

    Not one written before this boot, whatever the copy's time says: a Pi has no clock of
    its own, and one unplugged within the hour after its key was written came back at the
    time last saved (fake-hwclock's hourly save), before the key, when systemd copied it;
    each refusal of that key then said to restart the service, which changes nothing."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if not cred_dir:
        return None
    try:
        copied = (Path(cred_dir) / CREDENTIAL_NAME).stat().st_mtime
        written = INSTALLED_KEY_FILE.stat().st_mtime
    except OSError:
        return None
    return INSTALLED_KEY_FILE if written > max(copied, booted_at()) else None


def booted_at() -> float:
    """When this machine booted, by the wall clock as it is set now (NTP may have stepped it
    since the boot: a file's time written before the step is on the old clock's scale)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def require_credentials(config: Config) -> None:
    """Fail at start, not at the first press, when the daemon cannot authenticate."""
    if config.api_key is None and config.live.backend == "gemini":
        raise ConfigError(f"no API key: {where_to_put_the_key(config)}")


def where_to_put_the_key(config: Config) -> str:
    """What to do about a missing key, in words: where it is looked for. A shell's
    GEMINI_API_KEY is no place for the service's own configuration: the doctor passed
    the key it saw there, and the service never did."""
    live = config.live
    if installed_key_barred():  # the service's credential, read before api_key_file
        return f"only root may read {INSTALLED_KEY_FILE}, where the installer keeps it: use sudo"
    if live.api_key_file:  # what writes it (a token minter) has not yet
        return f"[live] api_key_file {live.api_key_file} is missing or empty"
    if os.environ.get("CREDENTIALS_DIRECTORY"):  # the service: its credential is empty
        return f"put it in {INSTALLED_KEY_FILE} and restart the service"
    export = "" if config.path == DEFAULT_PATH else ", or export GEMINI_API_KEY"
    return (
        f"put it in {INSTALLED_KEY_FILE} (the service's credential), "
        f"set [live] api_key_file{export}"
    )
