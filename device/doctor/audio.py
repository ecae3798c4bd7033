"""The audio checks: which devices the configuration selects, the microphone, the speaker,
and how the box keeps its own voice out of the microphone.

They use the daemon's own Capture and Playback, so what they measure is what the
appliance will get: the same device choice, rates, resampling and chunking.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from device.audio import pcm
from device.audio.devices import WHO_HOLDS
from device.audio.keeper import CALL_TIMEOUT_S
from device.audio.portaudio import open_portaudio
from device.doctor.daemon import how_to_restart, what_runs, where_it_logs
from device.doctor.result import Context, Result, Status
from device.live.wire import MIC_RATE
from device.workers import in_own_thread

if TYPE_CHECKING:
    import pyaudio

    from device.audio.capture import Capture
    from device.audio.devices import AudioDeviceError
    from device.audio.playback import Playback
    from device.config import AudioConfig, Config

#: Below this RMS the microphone hears nothing: muted, gain at zero, or the wrong device.
SILENT_DBFS = -60.0
#: A sample this close to full scale has (nearly) clipped...
CLIP_LEVEL = 0.99
#: ...and more than this share of such samples means the gain is too high.
CLIP_SHARE = 0.001
START_GRACE_S = 5.0  # devices may take a while to deliver their first samples
#: Below this the box's replies and beeps are not heard (the volume is squared: -40 dB).
QUIET_VOLUME = 0.1
FIX_HUNG = "Unplug the sound card and plug it back in (or reboot), then run the doctor again."
FIX_SPEAKER = "Reconnect the speaker; if it persists, it is not a working playback device."

T = TypeVar("T")
TONE_HZ = 660.0
TONE_MS = 800.0
TONE_AMPLITUDE = 0.3

FIX_DEVICE = (
    "Plug the device in, or set [audio] {direction}_device to a name or index that "
    "live-appliance devices lists."
)
FIX_SILENT = (
    "Unmute the microphone or raise its capture level (alsamixer, F4), or set "
    "[audio] input_device to the microphone you speak into."
)
FIX_ECHO = (
    "Hands-free, the box mutes its microphone while it speaks, so nobody can interrupt it by "
    "voice. Echo cancellation needs pywebrtc-audio, which has wheels for 64-bit systems only: "
    "install Raspberry Pi OS (64-bit) and the appliance again, or set [audio] "
    'mic_during_playback = "gate" to keep it this way.'
)
FIX_NOISE = (
    "[audio] noise_suppression = true needs pywebrtc-audio, which has wheels for 64-bit "
    "systems only: install Raspberry Pi OS (64-bit) and the appliance again, or set "
    "[audio] noise_suppression = false."
)
FIX_FELL_BACK = (
    "A restart ({restart}) starts it with its audio processing again; if it fails again, "
    "report it with what {logs} says."
)
FIX_SOFT = (
    "If someone spoke, from where they talk to the box: raise the microphone's capture level "
    "(alsamixer, F4), or set [audio] speech_dbfs a few dB under the level above (hands-free, "
    "pause_below_dbfs no higher)."
)
FIX_CLIPPING = (
    "Lower the microphone's capture level (alsamixer, F4) until the peak stays below 0 dBFS."
)


def _describe_devices(pa: pyaudio.PyAudio, audio: AudioConfig) -> Result:
    from device.audio.devices import DeviceInfo, select_devices, selected_rates

    chosen = select_devices(pa, audio)
    parts: list[str] = []
    failures: list[tuple[str, AudioDeviceError]] = []
    data: dict[str, Any] = {}
    for direction, found in chosen.items():
        if isinstance(found, DeviceInfo):
            rates = selected_rates(pa, found, direction)
            listed = "/".join(str(r) for r in rates) or f"only {found.default_rate}"
            parts.append(f"{direction} #{found.index} {found.name!r} ({listed} Hz)")
            data[direction] = {"index": found.index, "name": found.name, "rates": rates}
        else:
            failures.append((direction, found))
    if failures:
        measured = "; ".join([*(error.summary for _, error in failures), *parts])
        fix = _fix_device(*failures[0])
        return Result("devices", Status.FAIL, measured, fix, data=data)
    return Result("devices", Status.PASS, "; ".join(parts), data=data)


def _fix_device(direction: str, error: AudioDeviceError) -> str:
    """Plug it in or choose another; or what the error knows better (a card another
    program holds); or, when this user may not open the sound cards at all, say so: none
    is listed then, though they are there."""
    from device.audio.devices import sound_cards_refused

    if fix := error.fix or sound_cards_refused():
        return f"{fix[0].upper()}{fix[1:]}."
    return FIX_DEVICE.format(direction=direction)


async def _in_own_thread(function: Callable[[], T]) -> T:
    """A blocking PortAudio or ALSA call, for at most CALL_TIMEOUT_S, the daemon's own
    limit (TimeoutError): a driver that never returns must neither hold the event loop
    (the checks' own timeouts could not fire) nor the doctor's exit."""
    async with asyncio.timeout(CALL_TIMEOUT_S):
        return await in_own_thread(function, "doctor-audio")


def _hung(name: str, what: str) -> Result:
    return Result(name, Status.FAIL, f"{what} did not return in {CALL_TIMEOUT_S:g} s", FIX_HUNG)


def _enumerate(audio: AudioConfig) -> Result:

    pa = open_portaudio()
    try:
        return _describe_devices(pa, audio)
    finally:
        pa.terminate()


async def check_devices(ctx: Context) -> Result:
    """The configured input and output exist, with the rates they support."""
    # PortAudio probes every ALSA device; that can take a moment, so not on the loop.
    try:
        return await _in_own_thread(functools.partial(_enumerate, ctx.cfg.audio))
    except TimeoutError:
        return _hung("devices", "listing the audio devices")


async def _open(name: str, direction: str, device: Capture | Playback) -> Result | None:
    """Start `device` as the daemon would, off the loop; the check's failure if it cannot
    (the mic and the speaker fail to open alike), None once it runs."""
    from device.audio.devices import AudioDeviceError

    try:
        await _in_own_thread(functools.partial(device.start, asyncio.get_running_loop()))
    except TimeoutError:
        return _hung(name, f"opening the {direction} device")
    except AudioDeviceError as exc:
        return Result(name, Status.FAIL, exc.summary, _fix_device(direction, exc))
    except Exception as exc:
        return Result(
            name,
            Status.FAIL,
            f"cannot open the {direction} device: {exc}",
            f"Close whatever else uses the device ({WHO_HOLDS}), or reconnect it.",
        )
    return None


def _db(value: float) -> str:
    return "-inf dBFS (digital silence)" if math.isinf(value) else f"{value:.1f} dBFS"


def _loudest_chunk_dbfs(recorded: bytes, chunk_ms: int) -> float:
    """The RMS of the loudest chunk: what the box compares with `speech_dbfs`, chunk by
    chunk (the whole recording's RMS counts the pauses between words too)."""
    size = MIC_RATE * chunk_ms // 1000 * 2
    chunks = (recorded[n : n + size] for n in range(0, len(recorded), size))
    return max((pcm.rms_dbfs(chunk) for chunk in chunks), default=-math.inf)


def _under_speech(loudest: float, cfg: Config) -> str | None:
    """What the box makes of a voice no louder than `loudest`, if it is under speech_dbfs."""
    audio = cfg.audio
    if loudest >= audio.speech_dbfs:
        return None
    said = (
        f"the loudest {audio.chunk_ms} ms at {_db(loudest)}, under [audio] speech_dbfs "
        f"({audio.speech_dbfs:g} dBFS): a voice that soft is not taken for someone talking"
    )
    if cfg.button.mode == "toggle" and loudest < audio.pause_below_dbfs:
        said += f", and under pause_below_dbfs ({audio.pause_below_dbfs:g} dBFS) not even sent"
    return said


def judge_level(recorded: bytes, seconds: float, rate: int | None, cfg: Config) -> Result:
    """PASS, or WARN for silence, clipping or a voice too soft to count as speech, from
    what the microphone delivered."""
    rms, peak = pcm.rms_dbfs(recorded), pcm.peak_dbfs(recorded)
    loudest = _loudest_chunk_dbfs(recorded, cfg.audio.chunk_ms)
    samples = pcm.to_float(recorded)
    clipped = float(np.mean(np.abs(samples) >= CLIP_LEVEL)) if samples.size else 0.0
    measured = f"RMS {_db(rms)}, peak {_db(peak)} over {seconds:g} s"
    if rate:
        measured += f" (device at {rate} Hz)"
    data = {
        "rms_dbfs": None if math.isinf(rms) else round(rms, 1),
        "peak_dbfs": None if math.isinf(peak) else round(peak, 1),
        "clipped_share": round(clipped, 4),
        "loudest_dbfs": None if math.isinf(loudest) else round(loudest, 1),
        "device_rate": rate,
    }
    if rms < SILENT_DBFS:
        return Result("mic", Status.WARN, f"{measured}: silence", FIX_SILENT, data=data)
    if clipped > CLIP_SHARE:
        return Result(
            "mic",
            Status.WARN,
            f"{measured}: clipping ({clipped:.1%} of samples at full scale)",
            FIX_CLIPPING,
            data=data,
        )
    if (soft := _under_speech(loudest, cfg)) is not None:
        return Result("mic", Status.WARN, f"{measured}: {soft}", FIX_SOFT, data=data)
    return Result("mic", Status.PASS, measured, data=data)


async def check_mic(ctx: Context) -> Result:
    """Record from the configured input as the daemon would, and judge the level."""
    from device.audio.capture import RATE, Capture

    seconds = ctx.options.mic_seconds
    wanted = int(seconds * RATE) * 2
    chunks: list[bytes] = []
    got = 0
    enough = asyncio.Event()

    def on_chunk(data: bytes, _t: float) -> None:
        nonlocal got
        chunks.append(data)
        got += len(data)
        if got >= wanted:
            enough.set()

    mic = Capture(on_chunk, device=ctx.cfg.audio.input_device, chunk_ms=ctx.cfg.audio.chunk_ms)
    if (failed := await _open("mic", "input", mic)) is not None:
        return failed
    try:
        async with ctx.progress.step(f"mic: listening for {seconds:g} s (say something)"):
            async with asyncio.timeout(seconds + START_GRACE_S):
                await enough.wait()
    except TimeoutError:
        return Result(
            "mic",
            Status.FAIL,
            f"the microphone delivered {got / 2 / RATE:.1f} s of audio in "
            f"{seconds + START_GRACE_S:g} s",
            "Reconnect the microphone; if it persists, it is not a working capture device.",
        )
    finally:
        await _close(mic)
    return judge_level(b"".join(chunks)[:wanted], seconds, mic.device_rate, ctx.cfg)


async def check_speaker(ctx: Context) -> Result:
    """Play a short tone on the configured output through the daemon's playback path."""
    volume = _kept_volume(ctx.cfg)
    if ctx.options.quiet:  # the volume the box plays at is read all the same
        if (quiet := too_quiet(volume, ctx.cfg, "start the service")) is not None:
            measured = f"no test tone (--quiet); but {quiet.measured}"
            return Result("speaker", Status.WARN, measured, quiet.fix, data=quiet.data)
        return Result("speaker", Status.SKIP, f"no test tone (--quiet){_unread(ctx.cfg, volume)}")
    from device.audio.playback import RATE, Playback

    speaker = Playback(device=ctx.cfg.audio.output_device)
    if (failed := await _open("speaker", "output", speaker)) is not None:
        return failed
    try:
        async with ctx.progress.step(f"speaker: playing a {TONE_HZ:g} Hz tone (listen)"):
            speaker.feed(pcm.from_float(pcm.tone(TONE_HZ, TONE_MS, RATE, TONE_AMPLITUDE)))
            async with asyncio.timeout(TONE_MS / 1000 + START_GRACE_S):
                await speaker.play_out()
    except TimeoutError:
        return Result(
            "speaker",
            Status.FAIL,
            f"the output device took no audio in {TONE_MS / 1000 + START_GRACE_S:g} s",
            FIX_SPEAKER,
        )
    except OSError as exc:  # it stopped on an error as the tone played (a card pulled)
        return Result("speaker", Status.FAIL, str(exc), FIX_SPEAKER)
    finally:
        latency = speaker.output_latency
        await _close(speaker)
    measured = (
        f"{TONE_MS / 1000:g} s {TONE_HZ:g} Hz tone played at {speaker.device_rate} Hz, "
        f"output latency {latency * 1000:.0f} ms: you should have heard it"
    )
    data = {"device_rate": speaker.device_rate, "latency_ms": round(latency * 1000)}
    if (quiet := too_quiet(volume, ctx.cfg, "start the service")) is not None:
        return Result("speaker", Status.WARN, f"{measured}; but {quiet.measured}", quiet.fix,
                      data=data | quiet.data)  # fmt: skip
    return Result("speaker", Status.PASS, f"{measured}{_unread(ctx.cfg, volume)}", data=data)


def _kept_volume(cfg: Config) -> float | None:
    """The volume the service starts at, as it reads it; None when this user may not read
    what it keeps (its state directory is the service's alone, 0700): read as the
    configured one, a volume the model turned down to nothing passed unsaid."""
    from device.persist import StateFile, kept_volume, state_dir

    path = state_dir(cfg.service) / "state.json"
    try:
        os.stat(path)
    except FileNotFoundError:
        return cfg.audio.volume  # nothing kept (yet): the configured one
    except OSError:
        return None
    if not os.access(path, os.R_OK):
        return None
    return kept_volume(StateFile(path).load(), cfg.audio.volume)


def _unread(cfg: Config, volume: float | None) -> str:
    """What the speaker's line adds when the kept volume could not be read: nothing said of
    it read as a volume that is fine."""
    if volume is not None:
        return ""
    from device.persist import state_dir

    return (
        f"; the volume the service keeps in {state_dir(cfg.service)} is not this user's to "
        "read: sudo live-appliance doctor speaker reads it"
    )


def too_quiet(volume: float | None, cfg: Config, start: str) -> Result | None:
    """A WARN when the box plays its replies too softly to be heard (a person asked the
    model to be quiet, and the box keeps the volume it set across restarts): the speaker
    works, the tone sounds, and the box answers in silence. `start`: how the service starts
    again, to say in the fix. None too for a volume not known (`_kept_volume`)."""
    if volume is None or volume >= QUIET_VOLUME:
        return None
    from device.persist import state_dir

    measured = f"the box plays its replies and beeps at volume {volume:.0%}: nobody hears them"
    if cfg.audio.volume < QUIET_VOLUME:
        fix = f"Raise [audio] volume (0..1) in the configuration, then {start}."
    else:
        kept = state_dir(cfg.service) / "state.json"
        fix = (
            f"The model set it (its set_volume tool: someone asked the box to be quiet) and "
            f"the box keeps it in {kept}: ask the box to speak louder, or sudo rm {kept} and "
            f"{start}: it plays at [audio] volume ({cfg.audio.volume:.0%}) again."
        )
    return Result("speaker", Status.WARN, measured, fix, data={"volume": volume})


async def _close(device: Capture | Playback) -> None:
    """Close the device (a write stuck in a wedged driver is not waited for), then let go
    of its buffers on the loop."""
    try:
        await _in_own_thread(device.close_stream)
    except TimeoutError:
        return
    device.stop()


def _mic_plan(ctx: Context) -> Result:
    from device.audio import echo
    from device.parts import Parts

    plan = Parts(ctx.cfg).mic_plan  # decided as the service decides it
    hands_free, why = plan.mic_during_playback, ""
    push_to_talk = ctx.cfg.button.mode != "toggle"
    if push_to_talk and plan.missing is None:
        # The service needs no canceller, and does not look: the owner who would switch to
        # hands-free learns here that this box would gate, not cancel.
        audio = ctx.cfg.audio
        would = echo.plan(audio.mic_during_playback, audio.noise_suppression, hands_free=True)
        if would.fell_back:
            hands_free, why = would.mic_during_playback, f" (cancel cannot run: {would.missing})"
    measured = (
        f"while the box speaks hands-free: {hands_free}{why}; "
        f"noise suppression {'on' if plan.noise else 'off'}"
    )
    if push_to_talk:
        measured += " (push-to-talk: the microphone is open only while the button is held)"
    data = {"mic_during_playback": hands_free, "noise_suppression": plan.noise}
    if plan.missing:
        fix = FIX_ECHO if plan.fell_back else FIX_NOISE
        return Result("echo", Status.WARN, f"{measured}: {plan.missing}", fix, data=data)
    if plan.echo or plan.noise:
        # The module runs here: one frame through it proves the binding loads and works.
        far, silence = echo.FarEnd(), np.zeros(echo.FRAME, dtype=np.int16)
        far.played(silence, echo.RATE, 0.0)  # the box speaking: the module runs
        canceller = echo.Canceller(far, noise=plan.noise)
        canceller.process(silence, 0.0)
        if canceller.failed:  # the service goes on without it from the first words on
            fix, instead = (FIX_ECHO, "the gate") if plan.echo else (FIX_NOISE, "none")
            measured += f"; at the first words the service falls back to {instead}: "
            return Result("echo", Status.WARN, measured + canceller.failed, fix, data=data)
        measured += ", WebRTC audio processing (AEC3) ready"
    return Result("echo", Status.PASS, measured, data=data)


async def check_echo(ctx: Context) -> Result:
    """Which way the box keeps its own voice out of the microphone, and whether it can:
    an owner who hears the box cut itself off, or cannot talk over it, starts here."""
    result = await asyncio.to_thread(_mic_plan, ctx)
    daemon = await ctx.daemon or {}
    return _as_the_service_runs(result, daemon)


def _as_the_service_runs(result: Result, daemon: dict[str, Any]) -> Result:
    """The echo line as the running service has it: what works here may have failed it
    (mid-run), or it started with a configuration edited since."""
    # Not running, not readable, or a daemon from before the field; or a warning here.
    if "mic_during_playback" not in daemon or result.status is not Status.PASS:
        return result
    in_force = daemon["mic_during_playback"]
    planned = result.data.get("mic_during_playback")
    missing = daemon.get("mic_missing")
    restart, logs = how_to_restart(daemon), where_it_logs(daemon, "-b")
    if daemon.get("mode") == "push_to_talk":
        # Its microphone is open only while the button is held: the setting does nothing
        # there (an edit of it waits for no restart), and the service did not look whether
        # "cancel" could run, as the doctor did; only a noise suppressor lost mid-run counts.
        if not missing:
            return result
        measured = f"{what_runs(daemon)} runs without noise suppression: {missing}"
        fix = FIX_FELL_BACK.format(restart=restart, logs=logs)
    elif missing and (in_force != planned or result.data.get("noise_suppression")):
        measured = (
            f"{what_runs(daemon)} runs without WebRTC audio processing (while the box "
            f"speaks hands-free: {in_force}; noise suppression off): {missing}"
        )
        fix = FIX_FELL_BACK.format(restart=restart, logs=logs)
    elif in_force != planned:  # the file was edited since it started
        measured = (
            f"{what_runs(daemon)} has {in_force} while the box speaks hands-free, the "
            f"configuration {planned}"
        )
        fix = f"A restart ({restart}) starts it with the configuration."
    else:
        return result
    data = result.data | {"service_mic_during_playback": in_force}
    return Result("echo", Status.WARN, measured, fix, data=data)
