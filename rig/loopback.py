"""A real loopback sound device in user space: PulseAudio with two null sinks.

The appliance records from the default source (the monitor of ``appliance_mic``) and
plays to the default sink (``appliance_speaker``), through PortAudio and ALSA's pulse
plugin, exactly as it would on a Pi. The test side plays into ``appliance_mic`` with
``pacat`` and records ``appliance_speaker.monitor`` with ``parec``.

The sound server is an ordinary child process with its own runtime directory and
socket, so tests control its whole life and end it by its own process id.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import numpy as np

from device.audio import pcm

MIC_SINK = "appliance_mic"
SPEAKER_SINK = "appliance_speaker"
Side = Literal["mic", "speaker"]
#: What a player keeps buffered in the sound server. At 10 ms, pacat ran dry under load
#: (six busy processes on two cores: 8 of 10 two-second sweeps had gaps in the sink, and
#: CI failed on one while the daemon reconnected); at 50 ms, none. The first sample
#: still plays at once: pacat fills the buffer from its file before the stream starts.
PLAYER_LATENCY_MS = 50
_SINKS: dict[Side, str] = {"mic": MIC_SINK, "speaker": SPEAKER_SINK}


class LoopbackError(RuntimeError):
    """The sound server could not be started or controlled; carries its stderr."""


class PulseLoopback:
    """PulseAudio with a microphone-side and a speaker-side null sink.

    ``rate`` is the null sinks' own sample rate (mono s16le); clients at other rates
    are resampled by PulseAudio, as on a real card.
    """

    def __init__(
        self, rate: int = 48000, start_timeout: float = 10.0, witness: bool = False
    ) -> None:
        """`witness`: record the microphone sink for as long as it exists (`heard()`)."""
        self.rate = rate
        self.start_timeout = start_timeout
        self.runtime_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._modules: dict[Side, int] = {}
        self._room_tone: dict[Side, subprocess.Popen[bytes]] = {}
        self._saved_env: dict[str, str | None] = {}
        self._witness_wanted = witness
        self._witness: Recorder | None = None
        #: Where the box's speaker plays (`route_speaker`): the speaker sink, or the top of
        #: an acoustic path that ends in the microphone sink.
        self.speaker_sink = SPEAKER_SINK

    # -- life ------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        assert self.runtime_dir is not None, "loopback not started"
        return self.runtime_dir / "native"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        """The PulseAudio command line: a foreground per-user server, nothing implicit."""
        return [
            "pulseaudio",
            "--daemonize=no",  # our child, so we can end it by pid
            "-n",  # no default.pa: only the modules we ask for
            "--use-pid-file=no",
            "--exit-idle-time=-1",  # never leave between tests
            "--system=no",
            "--disallow-module-loading=no",  # unload/load sinks later
            "--log-target=stderr",
            "--log-level=notice",
            "--load",
            f"module-native-protocol-unix socket={self.socket_path} auth-anonymous=1",
        ]

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs to reach this server and nothing else."""
        assert self.runtime_dir is not None, "loopback not started"
        routed = {} if self.speaker_sink == SPEAKER_SINK else {"PULSE_SINK": self.speaker_sink}
        return {
            **routed,
            "PULSE_SERVER": f"unix:{self.socket_path}",
            "PULSE_RUNTIME_PATH": str(self.runtime_dir),
            # A client must never autospawn a second, default-configured server.
            "PULSE_CLIENTCONFIG": str(self.runtime_dir / "client.conf"),
            # PortAudio also probes JACK; stop it from trying to launch jackd.
            "JACK_NO_START_SERVER": "1",
        }

    def child_env(self) -> dict[str, str]:
        """This process's environment plus the loopback's, for a child process."""
        return {**os.environ, **self.env}

    def start(self) -> PulseLoopback:
        """Start the server, wait until it answers, then create the two sinks."""
        for tool in ("pulseaudio", "pactl", "pacat"):
            if shutil.which(tool) is None:  # one line for the demo, not a traceback
                raise LoopbackError(f"{tool} is missing; run scripts/setup")
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="appliance-pulse-"))
        (self.runtime_dir / "client.conf").write_text("autospawn = no\n")
        server_env = {
            **os.environ,
            **self.env,
            # Keep cookie and state files inside the runtime dir, not in ~root.
            "HOME": str(self.runtime_dir),
            "XDG_CONFIG_HOME": str(self.runtime_dir / "config"),
            "PULSE_STATE_PATH": str(self.runtime_dir / "state"),
        }
        self._log = open(self.runtime_dir / "server.log", "w+b")  # noqa: SIM115
        self._proc = subprocess.Popen(
            self.command(),
            env=server_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
        )
        try:
            self._wait_ready()
            self.load_sinks(*_SINKS)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LoopbackError(
                    f"pulseaudio exited with {self._proc.returncode}:\n{self.server_log()}"
                )
            if self.socket_path.exists():
                probe = self._run("pactl", "info", check=False)
                if probe.returncode == 0:
                    return
            time.sleep(0.05)
        raise LoopbackError(
            f"pulseaudio did not answer in {self.start_timeout}s:\n{self.server_log()}"
        )

    def server_log(self) -> str:
        """Everything the server has written so far (its stderr)."""
        if self.runtime_dir is None or not (self.runtime_dir / "server.log").exists():
            return ""
        return (self.runtime_dir / "server.log").read_text(errors="replace")

    def stop(self, timeout: float = 5.0) -> None:
        """End the server by its pid (SIGTERM, then SIGKILL) and remove its directory."""
        self.restore_env()
        self._stop_witness()
        for side in list(self._room_tone):
            self._stop_room_tone(side)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None
        self._modules.clear()

    def __enter__(self) -> PulseLoopback:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- environment -----------------------------------------------------------

    def apply_env(self) -> None:
        """Point this process's PortAudio/ALSA at the loopback (undone by stop())."""
        for key, value in self.env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    # -- control ---------------------------------------------------------------

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, env=self.child_env(), capture_output=True, text=True, timeout=10
        )
        if check and result.returncode != 0:
            raise LoopbackError(
                f"{' '.join(argv)} failed: {result.stderr.strip()}\n"
                f"server log:\n{self.server_log()}"
            )
        return result

    def pactl(self, *args: str) -> str:
        """Run pactl against this server and return its output."""
        return self._run("pactl", *args).stdout

    def load_sinks(self, *sides: Side) -> None:
        """(Re)create sinks that start streams at once, as a real sound card does.

        An idle null sink renders blocks of about 2 s: a new recording of its
        monitor waits that long for its first audio, a new player for its second
        callback. Each sink therefore gets a room tone, digital silence played for
        as long as the sink exists, which keeps it rendering in small blocks and
        adds nothing to what is recorded; the first block is waited out here,
        once, instead of inside whatever a test or a benchmark measures next.
        """
        for side in sides:
            self._create_sink(side)
        # Setting a default sink moves every stream not pinned to another, the other
        # side's room tone too: all of them (re)start after it, on their own sinks.
        for side in self._modules:
            self._stop_room_tone(side)
            self._room_tone[side] = self._silence_into(_SINKS[side])
        warming = {side: self.record(16000, side) for side in sides}
        try:
            for recorder in warming.values():
                recorder.wait_started(timeout=10)
        finally:
            if self._witness_wanted and "mic" in warming:
                self._stop_witness()
                self._witness = warming.pop("mic")
            for recorder in warming.values():
                recorder.stop()

    def heard(self, after: float) -> bytes:
        """What the microphone sink carried from `after` on (with `witness` only).

        The sound server itself now and then drops or repeats a few milliseconds on
        a busy machine, in every recording of the sink alike: this is what a test
        compares the daemon's audio with, rather than what it played.
        """
        assert self._witness is not None, "PulseLoopback(witness=True) records the microphone"
        samples, times = self._witness.timeline()
        return pcm.from_float(samples[times >= after])

    def _stop_witness(self) -> None:
        witness, self._witness = self._witness, None
        if witness is not None:
            witness.stop()

    def _silence_into(self, sink: str) -> subprocess.Popen[bytes]:
        """pacat playing zeros into `sink` until stopped (8 kHz: it costs next to nothing)."""
        with open("/dev/zero", "rb") as zeros:
            return subprocess.Popen(
                _pa_client(self, "pacat", sink, 8000, latency_ms=20),
                stdin=zeros,
                stderr=subprocess.DEVNULL,
                env=self.child_env(),
            )

    def _stop_room_tone(self, side: Side) -> None:
        proc = self._room_tone.pop(side, None)
        if proc is not None:
            proc.terminate()
            proc.wait()

    def load_sink(self, side: Side) -> None:
        """(Re)create one side's sink, as if the USB device had been plugged back in."""
        self.load_sinks(side)

    def _create_sink(self, side: Side) -> None:
        """One side's null sink, with the defaults pointing at the loopback."""
        name = _SINKS[side]
        index = self.pactl(
            "load-module",
            "module-null-sink",
            f"sink_name={name}",
            f"rate={self.rate}",
            "channels=1",
            "format=s16le",
            f"sink_properties=device.description={name}",
            # A sound card behind a sound server never loses the start of a stream: the
            # server rewinds into what the card has not played yet. A null sink's monitor
            # has already recorded what it rewinds over, so it lost 0-4.4 ms (2.4 median)
            # of each start. Without rewinds it starts a stream at its next block instead.
            # The microphone's sink too: an acoustic path (`rig.acoustic`) plays the box's
            # speaker into it, and a rewind there reaches audio the box's microphone has
            # already read (a hands-free test through the path took 9 s instead of 7 and
            # interrupted itself in 5 runs of 14 with rewinds, 2 of 22 without).
            "norewinds=1",
        )
        self._modules[side] = int(index.strip())
        if side == "speaker":
            self.pactl("set-default-sink", SPEAKER_SINK)
        else:
            self.pactl("set-default-source", f"{MIC_SINK}.monitor")

    def unload_sink(self, side: Side) -> None:
        """Remove one side's sink, as if the USB device had been pulled out."""
        if side == "mic":
            self._stop_witness()
        self._stop_room_tone(side)
        self.pactl("unload-module", str(self._modules.pop(side)))

    def sinks(self) -> list[str]:
        """Names of the sinks the server has now."""
        lines = self.pactl("list", "short", "sinks").splitlines()
        return [line.split("\t")[1] for line in lines if line.strip()]

    # -- test-side audio -------------------------------------------------------

    def route_speaker(self, sink: str | None) -> None:
        """Send the box's speaker into `sink` (None: back to the speaker sink).

        A process started from now on plays there by default (`PULSE_SINK` in
        `env`; the default sink itself is left alone, since changing it moves every
        stream), and the speaker side's recordings and players use it.
        """
        self.speaker_sink = sink or SPEAKER_SINK

    def _sink(self, side: Side) -> str:
        return self.speaker_sink if side == "speaker" else _SINKS[side]

    def play(self, data: bytes, rate: int, side: Side = "mic") -> Player:
        """Play mono s16le PCM into a sink (default: into the microphone)."""
        return Player.start(self, data, rate, self._sink(side))

    def record(self, rate: int, side: Side = "speaker") -> Recorder:
        """Record what reaches a sink (default: the speaker) as mono s16le."""
        return Recorder.start(self, rate, f"{self._sink(side)}.monitor")


def _pa_client(
    loopback: PulseLoopback, tool: str, device: str, rate: int, latency_ms: int
) -> list[str]:
    return [
        tool,
        f"--server={loopback.env['PULSE_SERVER']}",
        f"--device={device}",
        "--raw",
        "--format=s16le",
        "--channels=1",
        f"--rate={rate}",
        f"--latency-msec={latency_ms}",
    ]


@dataclass
class Player:
    """A ``pacat`` child playing one buffer of PCM into a sink."""

    proc: subprocess.Popen[bytes]
    started: float  # time.monotonic() just before the child was spawned
    duration: float  # seconds of audio

    @classmethod
    def start(cls, loopback: PulseLoopback, data: bytes, rate: int, sink: str) -> Player:
        source = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the child
        source.write(data)
        source.seek(0)
        argv = _pa_client(loopback, "pacat", sink, rate, latency_ms=PLAYER_LATENCY_MS)
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=source, stderr=subprocess.PIPE, env=loopback.child_env()
        )
        source.close()
        return cls(proc, started, len(data) / 2 / rate)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until pacat has played everything (it drains before exiting)."""
        if timeout is None:
            timeout = self.duration + 10
        _, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise LoopbackError(f"pacat failed ({self.proc.returncode}): {err.decode()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.communicate()


@dataclass
class Recorder:
    """A ``parec`` child whose output a thread stores with arrival times."""

    proc: subprocess.Popen[bytes]
    rate: int
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _first_data: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, loopback: PulseLoopback, rate: int, source: str) -> Recorder:
        argv = _pa_client(loopback, "parec", source, rate, latency_ms=5)
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=loopback.child_env()
        )
        rec = cls(proc, rate)
        rec._thread = threading.Thread(target=rec._read, name="loopback-recorder", daemon=True)
        rec._thread.start()
        return rec

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        carry = b""
        while data := os.read(fd, 4096):
            now = time.monotonic()
            data, carry = carry + data, b""
            if len(data) % 2:  # keep whole samples per chunk
                data, carry = data[:-1], data[-1:]
            self.chunks.append((now, data))
            self._first_data.set()

    def wait_started(self, timeout: float = 5.0) -> None:
        """Block until audio flows, so what is played next is not missed."""
        if not self._first_data.wait(timeout):
            raise LoopbackError("parec delivered no audio")

    def stop(self) -> bytes:
        """Stop recording and return all the PCM."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        if self._thread is not None:
            self._thread.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.pcm()

    def pcm(self) -> bytes:
        return b"".join(data for _, data in list(self.chunks))

    def timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """Samples (float, -1..1) and the estimated monotonic time of each one.

        A chunk's last sample arrived when the chunk was read; earlier samples are
        placed back from there at the sample rate. A late read bunches its audio and
        places it back over the chunk before: every sample was recorded no later than
        any sample after it, so the times never run backwards (a cut at a time keeps
        one piece, never a hole in the middle).
        """
        chunks = list(self.chunks)
        samples = [pcm.to_float(data) for _, data in chunks]
        times = [
            t - (len(s) - 1 - np.arange(len(s))) / self.rate
            for (t, _), s in zip(chunks, samples, strict=True)
        ]
        if not samples:
            return np.zeros(0), np.zeros(0)
        latest = np.minimum.accumulate(np.concatenate(times)[::-1])[::-1]
        return np.concatenate(samples), latest

    def first_sound(self, after: float = 0.0, threshold_dbfs: float = -40.0) -> float | None:
        """Time of the first sample louder than the threshold at or after ``after``."""
        samples, times = self.timeline()
        loud = (np.abs(samples) > pcm.db_to_amplitude(threshold_dbfs)) & (times >= after)
        hits = np.flatnonzero(loud)
        return float(times[hits[0]]) if hits.size else None

    def silent_from(self, threshold_dbfs: float = -40.0) -> float | None:
        """Time from which the recording stays below the threshold to its end."""
        samples, times = self.timeline()
        if not samples.size:
            return None
        loud = np.flatnonzero(np.abs(samples) > pcm.db_to_amplitude(threshold_dbfs))
        if not loud.size:
            return float(times[0])
        if loud[-1] + 1 >= samples.size:
            return None  # still sounding at the end
        return float(times[loud[-1] + 1])


def measure_latency(loopback: PulseLoopback, rate: int = 48000, repeats: int = 5) -> list[float]:
    """Seconds from a click's place in the stream to seeing it in ``parec``, per repeat.

    Each click is played by a fresh ``pacat`` after ``lead`` of silence, so the figure
    covers PulseAudio's client buffers, the null sink and the monitor recording, plus
    the part of pacat's start-up not hidden by the lead: an upper bound of what the
    loopback adds, for benchmarks to report beside the appliance's own numbers.

    A fresh stream per click is deliberate: audio written to a pacat stream after it
    had underrun did not reliably reach the monitor while the speaker sink rewound
    (not re-checked since it does not). The speaker sink renders each block at once,
    a few milliseconds ahead of its time, so a figure can read just below zero.
    """
    lead = 0.1
    click = np.concatenate(
        [np.zeros(int(rate * lead)), np.full(rate // 1000, 0.5), np.zeros(rate // 50)]
    )
    recorder = loopback.record(rate, side="speaker")
    results = []
    try:
        recorder.wait_started()
        for _ in range(repeats):
            player = loopback.play(pcm.from_float(click), rate, side="speaker")
            player.wait()
            heard = recorder.first_sound(after=player.started)
            deadline = time.monotonic() + 2.0
            while heard is None and time.monotonic() < deadline:
                time.sleep(0.01)
                heard = recorder.first_sound(after=player.started)
            if heard is None:
                raise LoopbackError("click never reached the speaker monitor")
            results.append(heard - player.started - lead)
    finally:
        recorder.stop()
    return results
