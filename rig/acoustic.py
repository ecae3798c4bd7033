"""The room between the box's speaker and its microphone, on the loopback.

A box has its speaker a few centimetres from its microphone, so what it plays
comes back in: this puts that path into the PulseAudio loopback. PulseAudio's
own `module-loopback` carries the speaker sink's monitor into the microphone
sink, with its latency as the delay and its stream volume as the gain; for a
room, the way goes through TAP's reverberator (LADSPA, Debian's `tap-plugins`)
in a `module-ladspa-sink` first. A fan is steady pink noise played into the
microphone sink beside it.

All of it runs inside the sound server. Piping `parec | sox | pacat` instead
was tried: pacat refills after every underrun, and the delay grew from 80 ms to
500 ms within 20 seconds, which no echo canceller (nor any room) does.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from dataclasses import dataclass

import numpy as np

from device.audio import pcm
from rig.loopback import MIC_SINK, SPEAKER_SINK, LoopbackError, PulseLoopback, _pa_client

ROOM_SINK = "appliance_room"
NOISE_RATE = 16000
#: TAP Reverberator's controls: decay (ms), dry level (dB), wet level (dB), comb, allpass
#: and bandpass filters, enhanced stereo, and the reverb type (4: "Small Room").
REVERB_TYPE = 4


@dataclass(frozen=True)
class Room:
    """How the box's speaker reaches its microphone."""

    delay_ms: int = 10  # speaker to microphone, as the sound server's loopback latency
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
        """The speaker sink's monitor into the microphone sink, through the room if any."""
        into = MIC_SINK
        if self.room.reverb_ms is not None:
            into = ROOM_SINK
            self._load(
                "module-ladspa-sink",
                f"sink_name={ROOM_SINK}",
                f"master={MIC_SINK}",
                "plugin=tap_reverb",
                "label=tap_reverb",
                "channels=2",
                "channel_map=left,right",
                f"control={self.room.reverb_ms},0,{self.room.wet_db},1,1,1,0,{REVERB_TYPE}",
            )
        module = self._load(
            "module-loopback",
            f"source={SPEAKER_SINK}.monitor",
            f"sink={into}",
            f"latency_msec={self.room.delay_ms}",
            # No rate adjustment: both sinks run on one clock, as a box's speaker and
            # microphone share one codec. After an underrun the delay stays where it
            # went, rather than sliding back over seconds as no room's echo does.
            "adjust_time=0",
            "source_dont_move=true",
            "sink_dont_move=true",
        )
        volume = f"{gain_db}dB"
        self.loopback.pactl("set-sink-input-volume", str(self._sink_input(module)), volume)

    def stop(self) -> None:
        self._stop_fan()
        for module in reversed(self._modules):
            self.loopback.pactl("unload-module", str(module))
        self._modules.clear()

    def __enter__(self) -> AcousticPath:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _load(self, *args: str) -> int:
        module = int(self.loopback.pactl("load-module", *args).strip())
        self._modules.append(module)
        return module

    def _sink_input(self, module: int) -> int:
        """The playback stream a module created (its volume is the path's gain)."""
        for stream in json.loads(self.loopback.pactl("--format=json", "list", "sink-inputs")):
            if str(stream.get("owner_module")) == str(module):
                return int(stream["index"])
        raise LoopbackError(f"module {module} made no sink input")

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
