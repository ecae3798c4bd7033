"""Runs the checks in order, prints one line per check as it finishes, picks the exit code.

Order follows what an owner rules out first: the configuration, the key, the
network, then the parts of the box. When the daemon is running it holds the
microphone, speaker, pins and camera (ALSA hw devices and GPIO lines are
exclusive), so those checks show what the daemon says instead of fighting it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device import tasks
from device.config import Config
from device.doctor.camera import FIX_CAMERA, check_camera
from device.doctor.card import check_card
from device.doctor.daemon import how_to_restart, in_use, one_line, what_runs, where_it_logs
from device.doctor.gpio import FIX_NO_GPIO, FIX_SHOWING, check_button, check_leds, fix_held
from device.doctor.power import check_power
from device.doctor.progress import Progress
from device.doctor.result import CHECK_NAMES, Context, Options, Result, Status
from device.doctor.service import check_service, take_service_environment
from device.doctor.settings import check_config, check_key
from device.errors import without_credentials


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], Awaitable[Result]]
    what: str  # shown while it runs
    uses_hardware: bool = False  # held by the running daemon


def _imported_when_run(name: str, module: str, what: str, uses_hardware: bool = False) -> Check:
    """The check `check_NAME` of a module imported as it runs, off the event loop (the
    progress line turns meanwhile): the network check's brings the Live SDK, the audio
    checks' numpy and PortAudio, over a second on a Pi, which `doctor service` or `key`
    never use."""

    async def run(ctx: Context) -> Result:
        imported = await asyncio.to_thread(importlib.import_module, f"device.doctor.{module}")
        check: Callable[[Context], Awaitable[Result]] = getattr(imported, f"check_{name}")
        return await check(ctx)

    return Check(name, run, what, uses_hardware)


#: Every check but "config" (which the others need first), by name; run in CHECK_NAMES order.
CHECKS = {
    check.name: check
    for check in (
        Check("key", check_key, "looking for the API key"),
        _imported_when_run("network", "network", "reaching the Live API"),
        Check("power", check_power, "reading the power and heat flags"),
        _imported_when_run("devices", "audio", "listing audio devices", uses_hardware=True),
        _imported_when_run("mic", "audio", "opening the microphone", uses_hardware=True),
        _imported_when_run("speaker", "audio", "opening the speaker", uses_hardware=True),
        _imported_when_run("echo", "audio", "checking echo cancellation"),
        Check("leds", check_leds, "opening the LEDs", uses_hardware=True),
        Check("button", check_button, "opening the button", uses_hardware=True),
        Check("camera", check_camera, "opening the camera", uses_hardware=True),
        Check("card", check_card, "looking at the state directory's file system"),
        Check("service", check_service, "asking systemd"),
    )
}


async def run_checks(
    names: Sequence[str],
    options: Options,
    config_path: str | None,
    progress: Progress,
    on_result: Callable[[Result], None],
) -> list[Result]:
    """Run the named checks (all when empty) in the standard order; report each as it ends."""
    wanted = set(names) or set(CHECK_NAMES)
    results: list[Result] = []

    def report(result: Result) -> None:
        results.append(result)
        on_result(result)

    config_result, cfg = check_config(config_path)
    if "config" in wanted or cfg is None:
        report(config_result)
    selected = [CHECKS[name] for name in CHECK_NAMES[1:] if name in wanted]
    if cfg is None:
        for check in selected:
            report(Result(check.name, Status.SKIP, "needs a configuration that loads"))
        return results
    if cfg.live.backend == "vertex":  # the service's key file, named in its drop-in
        await take_service_environment(["GOOGLE_APPLICATION_CREDENTIALS"])
    ctx = Context(cfg, options, progress)
    for check in selected:
        if _held(check, cfg) and (daemon := await ctx.daemon) is not None:
            report(held_by_the_service(check.name, daemon, cfg))
            continue
        report(await _run_one(check, ctx))
    return results


def _held(check: Check, cfg: Config) -> bool:
    """Whether the running daemon holds what `check` opens: LEDs set to "none" and a camera
    turned off are nothing it holds ("in use", stop it to test them, misled), and their
    checks say so themselves, opening nothing."""
    if check.name == "leds" and cfg.leds.kind == "none":
        return False
    if check.name == "camera" and not cfg.camera.enabled:
        return False
    return check.uses_hardware


#: The hardware checks whose device the daemon names in its status's "faults" when it fails.
FAULTS = {"mic": "microphone", "speaker": "speaker", "button": "button"}
FIX_AUDIO_FAULT = (
    "Reconnect it, or close what else took it ({who_holds}): it is opened again "
    "by itself, less often the longer it stays away ({logs} says when it is back)."
)
FIX_BUTTON_FAULT = (
    "Free GPIO {pin} (another program holds it: gpioinfo shows which) or correct [button] "
    "pin: it is tried again by itself, less and less often; meanwhile "
    "live-appliance ctl press stands in for it."
)


FIX_SILENT = (
    "Unmute the microphone: alsamixer (F4, its capture switch) or its own mute button; a "
    "driver that lost its input comes back with a restart ({restart})."
)


FIX_LEDS_OFF = (
    "Do what the line says, or correct [leds] (kind, pins) or free its pins (another "
    "program holds them: gpioinfo shows which): the service tries them again by itself, less "
    "and less often, and shows its state on them once they open."
)


#: A line the daemon's status gives a part: its status, what was measured, the fix.
Said = tuple[Status, str, str | None]


def _camera_said(daemon: dict[str, Any], cfg: Config) -> Said | None:
    """A camera that failed (it is tried again at the next conversation)."""
    if failure := daemon.get("camera_failure"):
        return Status.FAIL, f"{what_runs(daemon)} says: camera: {failure}", FIX_CAMERA
    return None


def _leds_said(daemon: dict[str, Any], cfg: Config) -> Said | None:
    """LEDs it could not open, or that stopped showing: the box runs dark."""
    if not isinstance(off := daemon.get("leds_off"), dict):
        return None
    if off.get("opened"):  # open, their writes fail: no pins to correct or free
        fix = FIX_SHOWING
    elif off.get("tried_again"):
        fix = FIX_LEDS_OFF
    else:
        fix = FIX_NO_GPIO.format(what='set [leds] kind = "none"')
    return Status.FAIL, f"{what_runs(daemon)} runs with its LEDs off: {off.get('reason')}", fix


def _speaker_said(daemon: dict[str, Any], cfg: Config) -> Said | None:
    """A speaker it plays too softly to be heard (the model asked to be quiet)."""
    from device.doctor.audio import too_quiet

    volume = daemon.get("volume")
    if not isinstance(volume, int | float):
        return None
    quiet = too_quiet(volume, cfg, f"restart it ({how_to_restart(daemon)})")
    if quiet is None:
        return None
    return Status.WARN, f"{what_runs(daemon)}: {quiet.measured}", quiet.fix


def _mic_said(daemon: dict[str, Any], cfg: Config) -> Said | None:
    """A microphone it hears nothing but zeros from: it reads on time, muted."""
    if not daemon.get("mic_silent"):
        return None
    return (
        Status.WARN,
        f"the microphone of {what_runs(daemon)} recorded only digital silence in the last "
        "turn: muted, or its driver lost its input",
        FIX_SILENT.format(restart=how_to_restart(daemon)),
    )


def _button_said(daemon: dict[str, Any], cfg: Config) -> Said | None:
    """A button read pressed since it opened: ignored, while the box looks ready."""
    if not daemon.get("button_held"):
        return None
    return (
        Status.WARN,
        f"GPIO {cfg.button.pin} reads pressed since {what_runs(daemon)} opened it: not taken "
        "for a press, the button does nothing until it is let go",
        fix_held(cfg.button),
    )


#: What the running daemon says of a part beside a fault of its own, by check.
SAID_OF: dict[str, Callable[[dict[str, Any], Config], Said | None]] = {
    "camera": _camera_said,
    "leds": _leds_said,
    "speaker": _speaker_said,
    "mic": _mic_said,
    "button": _button_said,
}


def held_by_the_service(name: str, daemon: dict[str, Any], cfg: Config) -> Result:
    """A hardware check's line while the daemon holds the device: not tested, but a device
    the daemon itself reports failing is a FAIL (a SKIP there let the doctor exit 0), and
    what else it says of the part (`SAID_OF`) is told."""
    fault = FAULTS.get(name)
    if fault is None or fault not in (daemon.get("faults") or []):
        said_of = SAID_OF.get(name)
        if said_of is not None and (told := said_of(daemon, cfg)) is not None:
            status, measured, fix = told
            return Result(name, status, measured, fix, data={"daemon": daemon})
        return Result(
            name,
            Status.SKIP,
            f"{in_use(daemon, 'test it')}; it says: {one_line(daemon)}",
            data={"daemon": daemon},
        )
    # The status names one part's error ("error: microphone: ...", "error: button on GPIO
    # 17: ..."), the last to fail: another's reason may name this part in passing.
    said = str(daemon.get("status", "")).removeprefix("error: ")
    reason = said if said.startswith(fault) else f"{fault} failing"
    if fault == "button":
        fix = FIX_BUTTON_FAULT.format(pin=cfg.button.pin)
    else:
        from device.audio.devices import WHO_HOLDS  # PortAudio: for an audio part only

        fix = FIX_AUDIO_FAULT.format(who_holds=WHO_HOLDS, logs=where_it_logs(daemon))
    return Result(
        name, Status.FAIL, f"{what_runs(daemon)} says: {reason}", fix, data={"daemon": daemon}
    )


async def _run_one(check: Check, ctx: Context) -> Result:
    """One check; a check that crashes is a FAIL line, not the end of the report."""
    try:
        async with ctx.progress.step(f"{check.name}: {check.what}"):
            return await check.run(ctx)
    except ModuleNotFoundError:
        raise  # not this check's fault: a Python without the package's dependencies
    except Exception as exc:
        return Result(
            check.name,
            Status.FAIL,
            f"the check itself failed: {type(exc).__name__}: {without_credentials(str(exc))}",
            f"Report this with the output of live-appliance doctor {check.name} --json.",
        )


def format_result(result: Result) -> str:
    """`PASS  mic      RMS ...` and, unless it passed, the fix on the next line."""
    line = f"{result.status:<4}  {result.name:<8} {result.measured}"
    if result.fix and result.status is not Status.PASS:
        line += f"\n{'':<6}fix: {result.fix}"
    return line


def summary(results: Sequence[Result]) -> str:
    counts = {status: sum(r.status is status for r in results) for status in Status}
    words = {
        Status.FAIL: "failed",
        Status.WARN: "warned",
        Status.PASS: "passed",
        Status.SKIP: "skipped",
    }
    return ", ".join(f"{counts[s]} {words[s]}" for s in words if counts[s])


def exit_code(results: Sequence[Result]) -> int:
    """0 only when nothing failed (warnings and skips still count as working)."""
    return 1 if any(r.status is Status.FAIL for r in results) else 0


def options_from(args: argparse.Namespace) -> Options:
    """The options from the command line; the button waits only with a person at a terminal
    (or when asked for by name)."""
    interactive = sys.stdin.isatty() or "button" in args.checks
    return Options(
        turn=args.turn,
        quiet=args.quiet,
        button=not args.no_button and interactive,
        camera_out=Path(args.camera_out),
    )


def run_doctor(args: argparse.Namespace) -> int:
    """The `doctor` command."""
    progress = Progress()

    def show(result: Result) -> None:
        if not args.json:
            print(format_result(result), flush=True)

    results = tasks.run(run_checks(args.checks, options_from(args), args.config, progress, show))
    if args.json:
        report: dict[str, Any] = {
            "ok": exit_code(results) == 0,
            "checks": [result.as_dict() for result in results],
        }
        print(json.dumps(report, indent=2, default=str))
    else:
        print(summary(results))
    return exit_code(results)
