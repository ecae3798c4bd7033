"""PortAudio devices: list them, choose one from the configuration, show the choice.

Hardware is chosen by configuration, never probed at import time: every function
here that asks PortAudio takes a ``pyaudio.PyAudio`` the caller opened and will
terminate, except ``print_devices`` (the `live-appliance devices` command), which
opens its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

import pyaudio

from device.audio.alsa import card_device, without_numbers
from device.audio.portaudio import open_portaudio

if TYPE_CHECKING:
    from device.config import AudioConfig

DeviceSpec = int | str | None  # None: the default device; int: index; str: name substring
Direction = Literal["input", "output"]
#: How `devices` names the directions, and what PortAudio calls them.
_WAYS: tuple[tuple[str, Direction], ...] = (("in", "input"), ("out", "output"))
#: The Pi's own outputs, where a voice box's speaker is not: HDMI (a screen, if any) and
#: the headphone jack. Not "bcm2835" alone: a voice HAT's I2S device is named after it too.
_BUILT_IN = ("hdmi", "bcm2835 headphones", "bcm2835 alsa")
#: What the kernel lists of its sound cards and their devices, by the names PortAudio's
#: are made of.
ASOUND = Path("/proc/asound")
#: A line of /proc/asound/pcm: the card and device numbers it begins with.
_PCM_LINE = re.compile(r"(\d+)-(\d+):")
#: The sound cards' device files: PortAudio lists no card this user may not open.
SOUND_NODES = Path("/dev/snd")
#: Sound servers: reachable, ALSA's "default" goes through them to the owner's choice.
_SERVERS = ("pulse", "pipewire")
#: What names the program that holds a sound card. With sudo: without it fuser sees only
#: the owner's own programs, and of the service's, another user's PipeWire or a music
#: player's daemon (each its own user) it prints nothing.
WHO_HOLDS = "sudo fuser -v /dev/snd/*"
#: What frees a card another program holds: neither plugging it in (it is in) nor
#: choosing another device (the Pi's jack, where nobody listens).
HELD_FIX = (
    f"free it: {WHO_HOLDS} names the program that holds it (on Raspberry Pi OS "
    "Desktop, the logged-in user's PipeWire: the box wants Raspberry Pi OS Lite)"
)


class AudioDeviceError(RuntimeError):
    """No device (or several) matches the configuration; the message lists the candidates.

    ``summary`` is the first part alone, for one-line reports (doctor, devices); ``fix``
    what to do when it is not to plug a device in or to choose another (None).
    """

    def __init__(
        self,
        summary: str,
        devices: list[DeviceInfo],
        heading: str = "available",
        *,
        fix: str | None = None,
    ) -> None:
        super().__init__(f"{summary}; {heading}:\n{describe(devices)}")
        self.summary = summary
        self.fix = fix


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate: int

    def channels(self, direction: Direction) -> int:
        return self.max_input_channels if direction == "input" else self.max_output_channels

    def __str__(self) -> str:
        return (
            f"#{self.index} {self.name!r} (in {self.max_input_channels}, "
            f"out {self.max_output_channels}, {self.default_rate} Hz)"
        )


def _info(raw: dict) -> DeviceInfo:
    return DeviceInfo(
        index=int(raw["index"]),
        name=str(raw["name"]),
        max_input_channels=int(raw["maxInputChannels"]),
        max_output_channels=int(raw["maxOutputChannels"]),
        default_rate=int(raw["defaultSampleRate"]),
    )


def list_devices(pa: pyaudio.PyAudio) -> list[DeviceInfo]:
    """Every device PortAudio knows, in index order."""
    return [_info(pa.get_device_info_by_index(i)) for i in range(pa.get_device_count())]


def describe(devices: list[DeviceInfo]) -> str:
    return "\n".join(f"  {d}" for d in devices) or "  (no devices)"


def choose_device(pa: pyaudio.PyAudio, spec: DeviceSpec, direction: Direction) -> DeviceInfo:
    """The device a config spec names, able to record (input) or play (output)."""
    if direction not in ("input", "output"):
        raise ValueError(f"direction must be 'input' or 'output', not {direction!r}")
    devices = list_devices(pa)
    usable = [d for d in devices if d.channels(direction) > 0]
    if spec is None:
        try:
            raw = (
                pa.get_default_input_device_info()
                if direction == "input"
                else pa.get_default_output_device_info()
            )
        except OSError:
            summary = f"no default {direction} device"
            if not sound_cards_refused() and _unlisted(direction, devices):
                summary += ": the card is there, but another program holds it"
                raise AudioDeviceError(summary, devices, fix=HELD_FIX) from None
            raise AudioDeviceError(summary, devices) from None
        return _default_or_the_card(_info(raw), usable)
    if isinstance(spec, int):
        found = [d for d in usable if d.index == spec]
    else:
        found = [d for d in usable if spec.lower() in d.name.lower()]
        exact = [d for d in found if d.name.lower() == spec.lower()]
        found = exact or found
    if not found:
        summary = f"no {direction} device matches {spec!r}"
        named = isinstance(spec, str) and not any(spec.lower() in d.name.lower() for d in devices)
        if named and not sound_cards_refused() and _held_elsewhere(str(spec)):
            summary += ": the card is there, but another program holds it"
            raise AudioDeviceError(summary, devices, fix=HELD_FIX)
        raise AudioDeviceError(summary, devices)
    if len(found) > 1:
        # A microphone on a card that also plays (a speakerphone, a HAT) before one that
        # only records (a USB webcam's, beside it, named "... USB Audio" too).
        found = [d for d in found if d.max_input_channels and d.max_output_channels] or found
    if len(found) > 1:
        raise AudioDeviceError(f"{spec!r} matches several {direction} devices", found, "namely")
    return found[0]


def _held_elsewhere(spec: str) -> bool:
    """The kernel has a card or device `spec` names that PortAudio did not list: it
    leaves out what it cannot open as it lists them, a card another program holds."""
    listed = ""
    for name in ("cards", "pcm"):
        with contextlib.suppress(OSError):
            listed += (ASOUND / name).read_text()
    return spec.lower() in listed.lower()


def _unlisted(direction: Direction, devices: list[DeviceInfo]) -> bool:
    """The kernel has a card's device that records (plays) that PortAudio did not list:
    one another program holds (/proc/asound/pcm: "02-00: USB Audio : USB Audio :
    playback 1 : capture 1")."""
    listed = {card_device(d.name) for d in devices if d.channels(direction) > 0}
    way = "capture" if direction == "input" else "playback"
    try:
        lines = (ASOUND / "pcm").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        numbers = _PCM_LINE.match(line)
        if numbers and f": {way} " in line and (int(numbers[1]), int(numbers[2])) not in listed:
            return True
    return False


def found_again(
    pa: pyaudio.PyAudio, spec: DeviceSpec, info: DeviceInfo, direction: Direction
) -> DeviceSpec:
    """How to find `info` the next time the devices are listed (a reopen): an index says
    only where PortAudio listed it this time, and a card plugged back under another
    number, or another card plugged in meanwhile, moves the devices after it; another
    microphone there must not be taken for this one. So an index becomes the device's
    name without its hw: number, unless that name finds another device too (two of the
    same USB card): then its whole name, which finds it under the same number only. A
    name, or the default, stays as it is."""
    if not isinstance(spec, int):
        return spec
    name = without_numbers(info.name).strip()
    with contextlib.suppress(AudioDeviceError):
        if name and choose_device(pa, name, direction) == info:
            return name
    return info.name


def _card(device: DeviceInfo) -> int | None:
    """The ALSA card number of a card's own device; None for a plugin ("default")."""
    numbers = card_device(device.name)
    return numbers[0] if numbers else None


def _default_or_the_card(default: DeviceInfo, usable: list[DeviceInfo]) -> DeviceInfo:
    """The system default, unless it is a Pi's own HDMI or headphone jack, or ALSA's
    "default" with no sound server (on Raspberry Pi OS: card 0, one of those), while
    exactly one other card can do the job: the USB speakerphone or voice HAT plugged in.

    PortAudio's default output is ALSA's "default" when it opens, else the first card's
    device; on a Pi both are built in, and the replies went where nobody listens.
    """
    if _card(default) is not None and not _built_in(default):
        return default
    if any(d.name.lower() in _SERVERS for d in usable):
        return default
    others = [d for d in usable if _card(d) is not None and not _built_in(d)]
    return others[0] if len({_card(d) for d in others}) == 1 else default


def _built_in(device: DeviceInfo) -> bool:
    name = device.name.lower()
    return any(word in name for word in _BUILT_IN)


def supports_rate(
    pa: pyaudio.PyAudio, device: DeviceInfo, rate: int, direction: Direction, channels: int = 1
) -> bool:
    """Whether the device can run s16le at ``rate`` with ``channels`` in the given direction."""
    kwargs = (
        {"input_device": device.index, "input_channels": channels, "input_format": pyaudio.paInt16}
        if direction == "input"
        else {
            "output_device": device.index,
            "output_channels": channels,
            "output_format": pyaudio.paInt16,
        }
    )
    try:
        return bool(pa.is_format_supported(rate, **kwargs))
    except ValueError:
        return False


@dataclass(frozen=True)
class StreamFormat:
    rate: int
    channels: int


def pick_format(
    pa: pyaudio.PyAudio, device: DeviceInfo, wanted: int, direction: Direction
) -> StreamFormat:
    """Mono at ``wanted`` if the device can; else at its own rate; else with its own channels.

    Raw ``hw:`` devices of voice HATs take no mono (a WM8960 records only stereo, an
    AC108 four channels) and ALSA's ``hw`` plugin converts nothing; the streams convert
    to and from mono themselves. When nothing fits, mono at the device's rate lets
    PortAudio say what is wrong when the stream opens.
    """
    for channels in _channel_counts(device, direction):
        for rate in (wanted, device.default_rate):
            if supports_rate(pa, device, rate, direction, channels):
                return StreamFormat(rate, channels)
    return StreamFormat(device.default_rate, 1)


def _channel_counts(device: DeviceInfo, direction: Direction) -> list[int]:
    """The channel counts the streams try, in this order: mono, stereo, all the device has."""
    most = device.channels(direction)
    return [channels for channels in dict.fromkeys((1, min(2, most), most)) if channels > 0]


def runs_at(pa: pyaudio.PyAudio, device: DeviceInfo, rate: int, direction: Direction) -> bool:
    """Whether the streams can run the device at ``rate``, with any channels they try (a
    HAT that takes no mono records at 16 kHz in stereo)."""
    counts = _channel_counts(device, direction)
    return any(supports_rate(pa, device, rate, direction, channels) for channels in counts)


def choose_format(
    pa: pyaudio.PyAudio,
    spec: DeviceSpec,
    direction: Direction,
    wanted: int,
    forced: tuple[int | None, int | None] = (None, None),
) -> tuple[DeviceInfo, StreamFormat]:
    """The configured device and the format to run it in (`forced` rate and channels win)."""
    info = choose_device(pa, spec, direction)
    rate, channels = forced
    best = pick_format(pa, info, rate or wanted, direction)
    return info, StreamFormat(rate or best.rate, channels or best.channels)


#: The rates that matter: the Live API's input and output, and what most cards run at.
RATES = (16000, 24000, 48000)


def rate_support(pa: pyaudio.PyAudio, device: DeviceInfo, rate: int) -> str:
    """ "in/out", "in", "out" or "-": the directions in which ``device`` can run at ``rate``."""
    ways: list[str] = []
    for name, direction in _WAYS:
        if runs_at(pa, device, rate, direction):
            ways.append(name)
    return "/".join(ways) or "-"


def selected_rates(pa: pyaudio.PyAudio, device: DeviceInfo, direction: Direction) -> list[int]:
    """Which of RATES the device supports in one direction."""
    return [rate for rate in RATES if runs_at(pa, device, rate, direction)]


def select_devices(
    pa: pyaudio.PyAudio, audio: AudioConfig
) -> dict[Direction, DeviceInfo | AudioDeviceError]:
    """The configured input and output device, or the error that says why there is none."""
    chosen: dict[Direction, DeviceInfo | AudioDeviceError] = {}
    specs: tuple[tuple[Direction, DeviceSpec], ...] = (
        ("input", audio.input_device),
        ("output", audio.output_device),
    )
    for direction, spec in specs:
        try:
            chosen[direction] = choose_device(pa, spec, direction)
        except AudioDeviceError as exc:
            chosen[direction] = exc
    return chosen


def _spec_text(spec: DeviceSpec) -> str:
    return "the default device" if spec is None else f"[audio] {spec!r}"


def print_devices(audio: AudioConfig, out: TextIO = sys.stdout) -> int:
    """Print every device with its channels and rates, marking the configured ones.

    Returns 0 when both configured devices exist, 1 (with the reason) when one does not.
    """
    pa = open_portaudio()
    try:
        devices = list_devices(pa)
        chosen = select_devices(pa, audio)
        marks: dict[int, list[str]] = {}
        for direction, found in chosen.items():
            if isinstance(found, DeviceInfo):
                marks.setdefault(found.index, []).append(direction)
        rates = {d.index: [rate_support(pa, d, rate) for rate in RATES] for d in devices}
    finally:
        pa.terminate()
    widths = (5, 3, 3, 7, *(6 for _ in RATES))
    header = ("index", "in", "out", "default", *map(str, RATES))

    def row(cells: tuple[str, ...] | list[str], name: str) -> str:
        return "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)) + f"  {name}"

    print(row(header, "name"), file=out)
    for d in devices:
        cells = [str(d.index), str(d.max_input_channels), str(d.max_output_channels)]
        cells += [str(d.default_rate), *rates[d.index]]
        mark = f"  <- {' and '.join(marks[d.index])}" if d.index in marks else ""
        print(row(cells, d.name + mark), file=out)
    if not devices:
        print("(PortAudio sees no audio devices)", file=out)
    status = 0
    for direction, spec in (("input", audio.input_device), ("output", audio.output_device)):
        found = chosen[direction]
        if isinstance(found, DeviceInfo):
            print(f"{direction}: #{found.index} {found.name!r} ({_spec_text(spec)})", file=out)
        else:
            status = 1
            fix = found.fix or _device_fix(direction, devices, spec)
            print(f"{direction}: {found.summary}: {fix}", file=out)
    return status


def _device_fix(direction: Direction, devices: list[DeviceInfo], spec: DeviceSpec) -> str:
    """What to do about a configured device that is not there: plug it back in (a card
    named in the configuration and unplugged: what is listed then is the Pi's own jack
    and HDMI, where nobody listens) or choose another from the list, or, when none listed
    can record (play), plug one in: a Pi's own sound (HDMI, the jack) has no microphone,
    and a box with its USB card unplugged lists nothing."""
    if any(d.channels(direction) > 0 for d in devices):
        choose = f"set [audio] {direction}_device to a name or index above"
        return choose if spec is None else f"plug it in, or {choose}"
    if refused := sound_cards_refused():
        return refused
    part, can = ("microphone", "record") if direction == "input" else ("speaker", "play")
    return f"plug in a {part} (no device above can {can})"


def sound_cards_refused() -> str | None:
    """What to do when the kernel has sound cards this user may not open (not in the
    audio group, as users added after the first are not): PortAudio lists none of them,
    and "plug one in" would send the owner to a card that is there."""
    nodes = list(SOUND_NODES.glob("pcmC*"))
    if not nodes or any(os.access(node, os.R_OK | os.W_OK) for node in nodes):
        return None
    return (
        f"this user may not open the sound cards ({SOUND_NODES}): run it with sudo, or "
        "add the user to the audio group (sudo usermod -a -G audio USER, then log in again)"
    )
