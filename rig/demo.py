"""`scripts/demo`: the appliance working on a machine with no hardware and no key.

It starts the local Live server and loopback audio, runs the real daemon with
mock pins and the synthetic camera, speaks a question (espeak-ng) into the
loopback microphone while holding the button through the control socket,
records what reaches the loopback speaker, and prints a timeline of what
happened, with the camera frames that went along.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from device.audio.pcm import write_wav
from device.control_client import ControlError
from device.live.wire import MIC_RATE, REPLY_RATE
from rig.daemon import scratch_dir, start_daemon
from rig.loopback import LoopbackError, PulseLoopback, Recorder
from rig.server.server import ServerThread
from rig.speech import speak

#: No camera here: the daemon sees the synthetic test pattern, one frame a second.
CAMERA = {"camera": {"enabled": True, "source": "synthetic"}}


class CannotWrite(Exception):
    """A WAV of the demo's could not be written: one line, not a traceback."""


def _write(path: Path, pcm: bytes, rate: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, pcm, rate)
    except OSError as exc:
        why = f"cannot write {path}: {exc.strerror or exc}"
        if isinstance(exc, PermissionError):
            why += f" (left by a run under sudo? sudo rm -r {path.parent})"
        raise CannotWrite(why) from exc


def run_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    question = speak(args.question)
    # Before anything starts: a demo-out an earlier `sudo scripts/demo` left root's is
    # said now, not after the whole run.
    _write(out / "question.wav", question, MIC_RATE)
    print(f"demo: question {args.question!r} ({len(question) / 2 / MIC_RATE:.1f} s of speech)")
    workdir = scratch_dir("appliance-demo-")
    try:
        return _demo(out, question, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _demo(out: Path, question: bytes, workdir: Path) -> int:
    """The rig up, one turn through the daemon, the rig down; the caller removes `workdir`
    however this ends (a Ctrl-C, a timeout)."""
    with PulseLoopback() as loopback, ServerThread(pace=1.0) as server:
        sim = server.server
        assert sim is not None
        daemon = start_daemon(workdir, loopback, sim, settings=CAMERA)
        try:
            ready = daemon.wait_ready(client=False)
            built = daemon.wait_ready()
            print(
                f"demo: daemon ready in {(ready - daemon.started) * 1000:.0f} ms, its Live "
                f"client built in {(built - daemon.started) * 1000:.0f} ms"
            )
            recorder = loopback.record(REPLY_RATE)
            recorder.wait_started()
            pressed = time.monotonic()
            daemon.ctl("press")
            player = loopback.play(question, MIC_RATE)
            player.wait()
            time.sleep(0.1)
            daemon.ctl("release")
            status = daemon.wait_until(
                lambda s: s["state"] == "idle" and bool(s["turns"]), 30, "the reply to end"
            )
            time.sleep(0.3)  # the tail of the reply through the loopback
            reply = recorder.stop()
        finally:
            stop_s = daemon.terminate()
        heard = _print_timeline(server, pressed, status, recorder)
        print(f"demo: daemon stopped {stop_s * 1000:.0f} ms after SIGTERM")
        _write(out / "reply.wav", reply, REPLY_RATE)
        print(f"demo: wrote {out / 'question.wav'} and {out / 'reply.wav'}")
    if heard is None:  # the demo shows the box speaking: a silent speaker is no success
        print("demo: failed: no reply was heard at the loopback speaker", file=sys.stderr)
        return 1
    return 0


def _print_timeline(
    server: ServerThread, pressed: float, status: dict[str, Any], recorder: Recorder
) -> float | None:
    """Print what happened from the press on; returns when the reply was first heard at
    the loopback speaker (None: never)."""
    sim = server.server
    assert sim is not None
    events: list[tuple[float, str, str]] = []
    for change in status["states"]:  # the daemon's own record, times on the same clock
        if change["t"] >= pressed - 0.05:
            events.append((change["t"], "daemon", f"{change['state']} ({change['event']})"))
    entries = sim.entries()
    for kind in ("activity_start", "audio", "video", "activity_end"):
        hits = [e for e in entries if e.kind == kind and e.direction == "in"]
        if hits:
            events.append((hits[0].t, "server", f"received the first {kind}"))
    replies = [e for e in entries if e.direction == "out" and e.kind == "audio"]
    heard = None
    if replies:
        events.append((replies[0].t, "server", "sent the first reply audio"))
        heard = recorder.first_sound(after=replies[0].t)
        if heard is not None:
            events.append((heard, "speaker", "the reply is audible at the loopback speaker"))
    print("\ntimeline (ms from the press):")
    for t, source, message in sorted(events):
        print(f"  {(t - pressed) * 1000:7.0f}  {source:<7} {message}")
    mic_bytes = len(sim.audio_in())
    reply_bytes = sum(len(e.data or b"") for e in replies)
    frames = [e for e in entries if e.kind == "video" and e.direction == "in"]
    print(
        f"\nbytes: {mic_bytes} of microphone audio reached the server "
        f"({mic_bytes / 2 / MIC_RATE:.2f} s), {reply_bytes} of reply audio came back "
        f"({reply_bytes / 2 / REPLY_RATE:.2f} s)"
    )
    print(
        f"camera: {len(frames)} frame(s) reached the server "
        f"({sum(len(e.data or b'') for e in frames)} bytes of JPEG)"
    )
    turns = status.get("turns") or []
    if turns:
        last = {k: v for k, v in turns[-1].items() if k.endswith("_ms")}
        print("latencies: " + ", ".join(f"{k} {v}" for k, v in last.items()))
    print("LED patterns, in order: " + " -> ".join(status["leds"]))
    return heard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Show the appliance working on this machine: the daemon against a local "
        "Live server and loopback audio, a spoken question, the recorded reply, a timeline.",
    )
    parser.add_argument("--out", default="demo-out", metavar="DIR", help="where to write the WAVs")
    parser.add_argument(
        "--question",
        default="What is the tallest mountain in the world?",
        help="what the demo says into the microphone (spoken by espeak-ng)",
    )
    args = parser.parse_args(argv)
    # A newcomer's first command: how it ended in one line, not a traceback (the rig's
    # context managers have stopped the daemon, the server and the sound server by then).
    try:
        return run_demo(args)
    except KeyboardInterrupt:
        print("demo: interrupted; the daemon and the rig are stopped", file=sys.stderr)
        return 130
    except (AssertionError, CannotWrite, ControlError, LoopbackError) as exc:
        print(f"demo: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
