"""Review: the USB microphone and speaker over months (unplugged, browned out, back)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import select
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fakes import config, running
from helpers import until

from device.audio import capture as capture_module
from device.audio import playback as playback_module
from device.audio import stream as stream_module
from device.audio.alsa import AlsaError
from device.audio.capture import Capture
from device.audio.earcons import earcon
from device.audio.keeper import AudioKeeper
from device.audio.playback import RATE, Playback
from device.states import DeviceFailed, DeviceRecovered, Earcon, Event


class _Device:
    """An output stream that keeps what it was handed: what the speaker sounded."""

    frame_bytes = 2
    output_latency = 0.0

    def __init__(self) -> None:
        self.active = False
        self.written = bytearray()
        self.lock = threading.Lock()

    def start(self) -> None:
        self.active = True

    def write(self, frames: bytes) -> bool:
        with self.lock:
            self.written += frames
        return False

    def stop(self) -> None:
        self.active = False

    abort = stop

    def is_active(self) -> bool:
        return self.active

    def close(self) -> None:
        self.active = False


class _Speaker(Playback):
    """Playback on `_Device`s: a new one at each open (a card plugged back)."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: list[_Device] = []

    def _open(self, pa: object) -> _Device:  # type: ignore[override]
        self.device_rate, self.channels = RATE, 1
        self.devices.append(_Device())
        return self.devices[-1]


async def test_an_error_beep_while_the_speaker_is_gone_is_not_played_when_it_comes_back() -> None:
    """A press while the card is unplugged gets the error earcon; nobody hears it then. It
    must not sound minutes later, as the owner plugs the card back and all is well."""
    player = _Speaker()
    player.start()
    player.stop()  # the audio keeper closed the speaker: its card went
    player.feed(earcon(Earcon.ERROR))  # a press in the error state
    player.start()  # the card is back
    try:
        await asyncio.sleep(0.3)
        assert bytes(player.devices[-1].written) == b"", "a stale error beep at recovery"
        assert player.drained.is_set()
        player.feed(earcon(Earcon.LISTEN_START))  # the next press's, heard
        await until(lambda: len(player.devices[-1].written) > 0)
    finally:
        player.stop()


async def test_presses_while_the_microphone_is_unplugged_beep_nothing_when_it_is_back(
    tmp_path: Path,
) -> None:
    """The keeper closes the speaker with the microphone: presses meanwhile cannot be
    heard, and their error beeps (up to a second of them) sounded as the owner plugged
    the card back, on a box that was fine again."""
    cfg = config(audio={"earcons": True, "reopen_s": 0.1})
    async with running(tmp_path, cfg) as box:
        box.mic.vanish()
        await until(lambda: box.state == "error")
        for _ in range(5):
            await box.ctl("press")
            await box.ctl("release")
        box.mic.alive = True
        await until(lambda: box.state == "idle", within=3)
        assert box.speaker.opened
        assert bytes(box.speaker.buffered) == b"", "stale error beeps at recovery"


class _OneMicrophone:
    """PortAudio listing one USB microphone (the speakerphone's), every format supported."""

    def get_device_count(self) -> int:
        return 1

    def get_device_info_by_index(self, index: int) -> dict[str, Any]:
        name = "Jabra SPEAK 410 USB: Audio (hw:2,0)"
        return {"index": 0, "name": name, "maxInputChannels": 1, "maxOutputChannels": 2,
                "defaultSampleRate": 16000.0}  # fmt: skip

    def get_default_input_device_info(self) -> dict[str, Any]:
        return self.get_device_info_by_index(0)

    def is_format_supported(self, rate: int, **kwargs: int) -> bool:
        return True

    def terminate(self) -> None:
        """Nothing to let go of."""


class _ZerosPcm:
    """An ALSA capture device that delivers on time, and nothing but zeros: its capture
    switch off in alsamixer, the speakerphone's mute button, a driver that lost its input
    after a brown-out. `level` makes it a working one (a quiet room's noise)."""

    level: ClassVar[int] = 0

    def __init__(
        self, name: str, rate: int, channels: int, period_frames: int, buffer_frames: int
    ) -> None:
        self.name, self.rate, self.channels = name, rate, channels
        self.period_frames, self.buffer_frames = period_frames, buffer_frames

    def register(self, poller: select.poll) -> None:
        """Nothing to wait for: the reader reads on its own timer or at once."""

    def acknowledge(self, events: list[tuple[int, int]]) -> None:
        """Never called: nothing registered."""

    def start(self) -> None:
        """Nothing to start."""

    def read(self) -> tuple[bytes, int]:
        sample = self.level.to_bytes(2, "little", signed=True)
        return sample * self.period_frames * self.channels, 0

    def close(self) -> None:
        """Nothing to close."""


@pytest.mark.parametrize("level", [0, 1])
async def test_a_microphone_that_records_only_zeros_through_a_turn_is_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    """The keeper sees a microphone that reads on time; a muted one (or one a brown-out
    left delivering zeros) looked the same, and the box answered every press with
    nothing, the journal silent. No room is that quiet: a turn of digital silence is
    said once, naming the device; a quiet room's noise is not."""
    monkeypatch.setattr(capture_module, "open_portaudio", _OneMicrophone)
    monkeypatch.setattr(capture_module, "CapturePcm", _ZerosPcm)
    monkeypatch.setattr(_ZerosPcm, "level", level)
    monkeypatch.setattr(capture_module, "DIGITAL_SILENCE_S", 0.3, raising=False)
    caplog.set_level(logging.INFO, logger="device.audio.capture")
    mic = Capture(lambda chunk, t: None, preroll=5)
    mic.start(asyncio.get_running_loop())
    try:
        await asyncio.sleep(0.5)  # between turns: a quiet room may be this quiet
        for _ in range(2):  # two turns: said once
            mic.forward()
            await asyncio.sleep(0.5)
            mic.hold()
    finally:
        mic.close_stream()
    said = [r for r in caplog.records if getattr(r, "LIVE_DEVICE", None) == "microphone"]
    if level:
        assert said == []
    else:
        assert [r.levelname for r in said] == ["WARNING"]
        assert "Jabra SPEAK 410" in said[0].getMessage()


class _Speakerphone:
    """A USB speakerphone on a Pi 4 whose [audio] devices are unset (the breadboard
    profile): PortAudio lists the jack, the speakerphone while it is plugged in, and
    ALSA's "default" (the jack, playback only)."""

    def __init__(self, nodes: Path) -> None:
        self.plugged = True
        self.node = nodes / "pcmC2D0p"
        self.node.touch()

    def unplug(self) -> None:
        self.plugged = False
        self.node.unlink()

    def plug(self) -> None:
        self.plugged = True
        self.node.touch()

    def listing(self) -> Any:
        devices = [("bcm2835 Headphones: - (hw:0,0)", 0, 8, 44100)]
        if self.plugged:
            devices.append(("Jabra SPEAK 410 USB: Audio (hw:2,0)", 1, 2, 48000))
        devices.append(("default", 0, 128, 44100))
        return _Listing(devices)


class _Listing:
    """PortAudio's answers for `devices`: every format supported; the default in each
    direction "default" if it works that way, else the first device that does."""

    def __init__(self, devices: list[tuple[str, int, int, int]]) -> None:
        self.devices = devices

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, index: int) -> dict[str, Any]:
        name, inputs, outputs, rate = self.devices[index]
        return {"index": index, "name": name, "maxInputChannels": inputs,
                "maxOutputChannels": outputs, "defaultSampleRate": float(rate)}  # fmt: skip

    def _default(self, key: str) -> dict[str, Any]:
        found = [self.get_device_info_by_index(i) for i in range(len(self.devices))]
        found = [d for d in found if d[key] > 0]
        if not found:
            raise OSError("No Default Device Available")
        return next((d for d in found if d["name"] == "default"), found[0])

    def get_default_input_device_info(self) -> dict[str, Any]:
        return self._default("maxInputChannels")

    def get_default_output_device_info(self) -> dict[str, Any]:
        return self._default("maxOutputChannels")

    def is_format_supported(self, rate: int, **kwargs: int) -> bool:
        return True

    def terminate(self) -> None:
        """Nothing to let go of."""


class _Output:
    """A PortAudio output stream that opens on any listed device and is never written to."""

    frame_bytes, output_latency = 2, 0.01

    def __init__(self, *args: object) -> None:
        """Opened."""

    def close(self) -> None:
        """Closed."""


async def test_an_unplugged_speakerphone_is_not_said_back_while_its_speaker_opens_the_jack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Unset devices take the one USB card. Unplugged, the microphone has nowhere to go,
    but the speaker's "default" is the Pi's jack, which opens: at each try the keeper
    said "speaker is back" (and dropped it from the faults) while the speakerphone lay
    on the table, only to close it again with the microphone."""
    cable = _Speakerphone(tmp_path)
    monkeypatch.setattr(playback_module, "SOUND_NODES", tmp_path)
    monkeypatch.setattr(stream_module, "open_portaudio", cable.listing)
    monkeypatch.setattr(capture_module, "open_portaudio", cable.listing)
    monkeypatch.setattr(playback_module, "OutputStream", _Output)

    class CablePcm(_ZerosPcm):
        level = 1

        def read(self) -> tuple[bytes, int]:
            if not cable.plugged:
                raise AlsaError(errno.ENODEV, "read: No such device")
            return super().read()

    monkeypatch.setattr(capture_module, "CapturePcm", CablePcm)
    events: list[Event] = []
    speaker, mic = Playback(), Capture(lambda chunk, t: None, preroll=5)
    keeper = AudioKeeper({"speaker": speaker, "microphone": mic}, events.append, 0.05)
    await keeper.open()
    assert "Jabra" in speaker.device_name and "Jabra" in mic.device_name
    keeping = asyncio.create_task(keeper.keep())
    try:
        cable.unplug()
        await until(lambda: set(keeper.failures) == {"speaker", "microphone"})
        await asyncio.sleep(0.5)  # tries at 0.05, 0.1, 0.2 s
        assert [e for e in events if isinstance(e, DeviceRecovered)] == []
        assert set(keeper.failures) == {"speaker", "microphone"}
        cable.plug()
        await until(lambda: not keeper.failures, within=3)
        assert "Jabra" in speaker.device_name
        assert sorted(type(e).__name__ for e in events) == sorted(
            [DeviceFailed.__name__] * 2 + [DeviceRecovered.__name__] * 2
        )
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        await keeper.close()
