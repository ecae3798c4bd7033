"""PortAudio devices: list them and choose one from the configuration.

Hardware is chosen by configuration, never probed at import time: every function
here takes a ``pyaudio.PyAudio`` the caller opened and will terminate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyaudio

DeviceSpec = int | str | None  # None: the default device; int: index; str: name substring
Direction = Literal["input", "output"]


class AudioDeviceError(RuntimeError):
    """No device matches the configuration; the message lists what there is."""


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
            raise AudioDeviceError(
                f"no default {direction} device; available:\n{describe(devices)}"
            ) from None
        return _info(raw)
    if isinstance(spec, int):
        found = [d for d in usable if d.index == spec]
    else:
        found = [d for d in usable if spec.lower() in d.name.lower()]
        exact = [d for d in found if d.name.lower() == spec.lower()]
        found = exact or found
    if not found:
        raise AudioDeviceError(
            f"no {direction} device matches {spec!r}; available:\n{describe(devices)}"
        )
    if len(found) > 1:
        raise AudioDeviceError(f"{spec!r} matches several {direction} devices:\n{describe(found)}")
    return found[0]


def supports_rate(pa: pyaudio.PyAudio, device: DeviceInfo, rate: int, direction: Direction) -> bool:
    """Whether the device can run mono s16le at ``rate`` in the given direction."""
    kwargs = (
        {"input_device": device.index, "input_channels": 1, "input_format": pyaudio.paInt16}
        if direction == "input"
        else {"output_device": device.index, "output_channels": 1, "output_format": pyaudio.paInt16}
    )
    try:
        return bool(pa.is_format_supported(rate, **kwargs))
    except ValueError:
        return False


def pick_rate(pa: pyaudio.PyAudio, device: DeviceInfo, wanted: int, direction: Direction) -> int:
    """``wanted`` if the device can do it, else the device's own default rate."""
    return wanted if supports_rate(pa, device, wanted, direction) else device.default_rate
