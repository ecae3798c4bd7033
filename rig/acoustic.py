"""The room between the box's speaker and its microphone, on the loopback.

A box has its speaker a few centimetres from its microphone, so what it plays
comes back in: this puts that path into the PulseAudio loopback. While a path is
loaded the box's speaker plays into a filter sink whose output goes into the
microphone sink: TAP's echo (LADSPA, Debian's `tap-plugins`) as a pure delay at a
gain, and for a room TAP's reverberator ahead of it. A fan is steady pink noise
played into the microphone sink beside it.

A filter sink has no buffer or clock of its own: the microphone sink renders it
as it renders everything else, so the echo stays exactly the configured delay
behind what the speaker played, as it does in a box whose speaker and microphone
share one codec. PulseAudio's `module-loopback` from the speaker sink's monitor
did not: every few minutes of speech it ran dry and moved its delay by several
milliseconds (87 to 141 samples at 16 kHz in one reply), and the echo canceller
let the next loud words through while it caught up. Piping `parec | sox | pacat`
was worse: pacat refills after every underrun, and the delay grew from 80 ms to
500 ms within 20 seconds.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from dataclasses import dataclass

import numpy as np

from device.audio import pcm
from rig.loopback import MIC_SINK, PulseLoopback, _pa_client

ROOM_SINK = "appliance_room"
PATH_SINK = "appliance_path"
NOISE_RATE = 16000
#: TAP Reverberator's controls: decay (ms), dry level (dB), wet level (dB), comb, allpass
#: and bandpass filters, enhanced stereo, and the reverb type (4: "Small Room").
REVERB_TYPE = 4
#: TAP Stereo Echo's levels (dB) range from this (its "off") up to +10.
TAP_FLOOR_DB = -70.0


@dataclass(frozen=True)
class Room:
    """How the box's speaker reaches its microphone."""

    delay_ms: int = 10  # speaker to microphone: the echo comes this much later
    gain_db: float | None = -6.0  # the speaker's sound at the microphone; None: not at all
    reverb_ms: int | None = None  # a room's reverberation with this decay time
    wet_db: float = -6.0  # the reverberation's level against the direct sound
    fan_dbfs: float | None = None  # steady noise at the microphone, RMS


class AcousticPath:
    """Loads the room into a running loopback; `stop()` (or leaving `with`) removes it."""

    def __init__(self, loopback: PulseLoopback, room: Room) -> None:
        self.loopback = loopback
        self.room = room
        self._modules: list[int] = []
        self._fan: subprocess.Popen[bytes] | None = None
        self._fan_thread: threading.Thread | None = None
        self._fan_stop = threading.Event()

    def start(self) -> AcousticPath:
        try:
            if self.room.gain_db is not None:
                self._speaker_path(self.room.gain_db)
            if self.room.fan_dbfs is not None:
                self._start_fan(self.room.fan_dbfs)
        except BaseException:
            self.stop()
            raise
        return self

    def _speaker_path(self, gain_db: float) -> None:
        """The speaker into the microphone sink: delayed and quieter, through the room if any.

        TAP Stereo Echo with no feedback and its dry sound off is a delay line at a gain;
        the sinks are stereo because the plugins are (mono is spread to both and mixed
        back)."""
        delay, room = self.room.delay_ms, self.room.reverb_ms
        if not TAP_FLOOR_DB < gain_db <= 10:
            raise ValueError(f"the path's gain must be above {TAP_FLOOR_DB} and at most 10 dB")
        top = self._filter(
            PATH_SINK, MIC_SINK, "tap_echo", "tap_stereo_echo",
            delay, 0, delay, 0, gain_db, gain_db, TAP_FLOOR_DB, 0, 0, 0,
        )  # fmt: skip
        if room is not None:
            top = self._filter(
                ROOM_SINK, PATH_SINK, "tap_reverb", "tap_reverb",
                room, 0, self.room.wet_db, 1, 1, 1, 0, REVERB_TYPE,
            )  # fmt: skip
        self.loopback.route_speaker(top)

    def _filter(self, name: str, into: str, plugin: str, label: str, *controls: float) -> str:
        """A sink that runs a LADSPA plugin over what it is given and plays it into `into`."""
        self._load(
            "module-ladspa-sink",
            f"sink_name={name}",
            f"sink_master={into}",
            f"plugin={plugin}",
            f"label={label}",
            "channels=2",
            "channel_map=left,right",
            "control=" + ",".join(f"{value:g}" for value in controls),
        )
        return name

    def stop(self) -> None:
        self._stop_fan()
        self.loopback.route_speaker(None)
        for module in reversed(self._modules):
            self.loopback.pactl("unload-module", str(module))
        self._modules.clear()

    def __enter__(self) -> AcousticPath:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _load(self, *args: str) -> None:
        self._modules.append(int(self.loopback.pactl("load-module", *args).strip()))

    # -- the fan ------------------------------------------------------------------------

    def _start_fan(self, dbfs: float) -> None:
        """Pink noise at `dbfs` into the microphone sink, from a thread that keeps pacat
        fed (it blocks on the pipe, so pacat never runs dry), until stopped."""
        noise = pcm.from_float(pink_noise(10.0, NOISE_RATE, dbfs))
        argv = _pa_client(self.loopback, "pacat", MIC_SINK, NOISE_RATE, latency_ms=50)
        self._fan = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.loopback.child_env()
        )
        self._fan_stop.clear()
        fan = self._fan

        def feed() -> None:
            assert fan.stdin is not None
            try:
                while not self._fan_stop.is_set():
                    fan.stdin.write(noise)
            except (BrokenPipeError, ValueError):
                pass  # stopped

        self._fan_thread = threading.Thread(target=feed, name="rig-fan", daemon=True)
        self._fan_thread.start()

    def _stop_fan(self) -> None:
        fan, self._fan = self._fan, None
        if fan is None:
            return
        self._fan_stop.set()
        fan.terminate()
        fan.wait()
        if self._fan_thread is not None:
            self._fan_thread.join(5)
        if fan.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                fan.stdin.close()


def pink_noise(seconds: float, rate: int, dbfs: float, seed: int = 0) -> np.ndarray:
    """Steady noise falling 3 dB an octave, like a fan, at RMS `dbfs`; loops without a click
    (made in the frequency domain, so it is periodic over its length)."""
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    spectrum[freqs < 20] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise * pcm.db_to_amplitude(dbfs) / np.sqrt(np.mean(noise**2))
