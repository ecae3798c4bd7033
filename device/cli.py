"""The `live-appliance` command line.

Owners type these over SSH, so parsing and `--help`, `ctl` and `devices` import
nothing heavy: each command imports what it needs only when it runs (the Live
SDK alone takes a second to import on a Pi).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

EXIT_CONFIG = 2
#: The reader of stdout went away (`ctl status | head -1`): what a shell reports for any
#: command so ended (128 + SIGPIPE), as `yes | head` gives.
EXIT_PIPE = 141


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $LIVE_APPLIANCE_CONFIG, "
        "else /etc/live-appliance/config.toml)",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from device import config as config_mod

    cfg = config_mod.load(args.config, key=False)
    try:
        cfg = config_mod.with_api_key(cfg)
        config_mod.require_credentials(cfg)
    except config_mod.ConfigError as exc:
        if not cfg.live.api_key_file or not _mended_by_the_key_file(exc):
            raise
        # A file named for the key (a token a job keeps writing) may come later, or come
        # whole later (a power cut as it was written left zeros): the box starts, and each
        # press reads it again; exiting here (status 2) would stop it for good.
        print(_as_error(f"live-appliance: {exc}: each press looks again"), file=sys.stderr)
    from device.appliance import run_daemon

    return run_daemon(cfg)


def _mended_by_the_key_file(exc: Exception) -> bool:
    """Whether writing [live] api_key_file again mends `exc`: no key yet, or that file's
    key unusable. Not a bad credential (systemd's copy, made at the start: each press
    read the same), a bad variable, nor a token on the wrong api_version (a setting):
    those started a box that failed every press, exit 0, where the README says exit 2."""
    from device.errors import UnusableKey

    if not isinstance(exc, UnusableKey):
        return True  # "no API key": the file missing or empty
    return exc.source is not None and exc.source.startswith("api_key_file")


def _control_socket(cli_path: str | None) -> str:
    """The configured socket; with a configuration that does not load (an edit the running
    daemon has not seen yet), the default one, so `ctl` still reaches it, and says so."""
    from device import config as config_mod

    try:
        return config_mod.load(cli_path, whole=False).control.socket
    except config_mod.ConfigUnreadable:
        raise  # nor may this user use the socket: the fix is the same
    except config_mod.ConfigError as exc:
        socket = config_mod.DEFAULT_SOCKET
        print(f"live-appliance ctl: {exc}; trying {socket}", file=sys.stderr)
        return socket


def _cmd_ctl(args: argparse.Namespace) -> int:
    from device.control_client import ControlError, request

    socket_path = args.socket or _control_socket(args.config)
    fields: dict[str, Any] = {"text": args.words} if args.action == "text" else {}
    try:
        reply = request(socket_path, args.action, **fields)
    except ControlError as exc:
        print(f"live-appliance ctl: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok", True):
        print(f"live-appliance ctl {args.action}: {reply.get('error', reply)}", file=sys.stderr)
        return 1
    if args.action == "status" and not args.json:
        from device.doctor.daemon import summary_lines

        print("\n".join(summary_lines(reply)))
    else:
        print(json.dumps(reply, indent=2))
    return 0


def _cmd_leds_off(args: argparse.Namespace) -> int:
    """The unit's ExecStopPost: a daemon that did not stop cleanly (the watchdog's abort,
    the OOM killer, a crash, a kill after a hung stop) left its pixels on their last frame,
    which an APA102 strip keeps: "listening" through the restart's wait, and for the ten
    minutes after a fifth crash. A clean stop (SERVICE_RESULT=success) turned them off."""
    if os.environ.get("SERVICE_RESULT") == "success":
        return 0
    from device import config as config_mod
    from device.hw.led_patterns import dark

    try:
        cfg = config_mod.load(args.config, key=False)
    except config_mod.ConfigError:
        return 0  # the daemon stopped on it and said so: it never lit them
    from device.control import AlreadyRunning, single_instance
    from device.hw.leds import leds_failure, open_leds

    try:
        # The daemon's lock: pixels on SPI open twice, and a daemon running (or starting
        # meanwhile) would have its state overwritten with a dark frame.
        with single_instance(cfg.control.socket):
            driver = open_leds(cfg.leds)
            try:
                driver.show(dark(driver.pixels))
            finally:
                driver.close()
    except AlreadyRunning as exc:
        print(f"live-appliance leds-off: {exc}: it shows the LEDs itself", file=sys.stderr)
        return 1
    except Exception as exc:  # a pin in use, the SPI device gone: said
        print(f"live-appliance leds-off: {leds_failure(exc)}", file=sys.stderr)
        return 1
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from device import config as config_mod
    from device.audio.devices import print_devices
    from device.doctor.daemon import running_status

    # [audio] and the socket only: a key or persona file not right yet is the doctor's to
    # say, and must not hide the sound cards (nor cost the persona's read).
    cfg = config_mod.load(args.config, whole=False)
    if running_status(cfg.control.socket) is not None:
        print(
            "note: the service is running and holds its devices open; they may be missing "
            "below (sudo systemctl stop live-appliance to see them all)",
            file=sys.stderr,
        )
    return print_devices(cfg.audio)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from device.doctor.runner import run_doctor

    return run_doctor(args)


def _cmd_ask(args: argparse.Namespace) -> int:
    from device.ask import run_ask

    return run_ask(args)


def _seconds(value: str) -> float:
    """A wait in seconds: a finite number above 0 (0, a negative or nan would give up on
    the first turn at once, blamed on the Live API)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {value!r}")
    return seconds


def _not_words(value: str) -> str | None:
    """Why `value` is no text turn to send, as the owner is told it, or None."""
    from device.control_client import unsayable

    if (why := unsayable(value)) and why.startswith("not UTF-8"):
        return f"{why}: convert it first, e.g. with iconv -f latin1 -t utf-8"
    return why


def _words(value: str) -> str:
    """A TEXT to send: words, in UTF-8."""
    if why := _not_words(value):
        raise argparse.ArgumentTypeError(why)
    return value


class _OneTurn(argparse.Action):
    """`ctl text`'s words, joined: one turn, refused only if the whole has no words in it
    (`ctl text "$QUESTION" "$DETAIL"` with DETAIL empty is the question)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        text = " ".join(values or ()) if not isinstance(values, str) else values
        if why := _not_words(text):
            raise argparse.ArgumentError(self, why)
        setattr(namespace, self.dest, text)


def _check_name(value: str) -> str:
    from device.doctor.result import CHECK_NAMES

    if value not in CHECK_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown check {value!r} (choose from {', '.join(CHECK_NAMES)})"
        )
    return value


def _add_command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    example: str,
    details: str = "",
) -> argparse.ArgumentParser:
    """A (sub)command whose --help says what it does, in more detail, with an example."""
    text = "\n\n".join(textwrap.fill(part, 78) for part in (summary, details) if part)
    parser = sub.add_parser(
        name,
        help=summary,
        description=text,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(typed=parser)  # the innermost one typed wins: see _parse
    return parser


def build_parser() -> argparse.ArgumentParser:
    from device.doctor.result import CHECK_NAMES  # names only: nothing heavy

    parser = argparse.ArgumentParser(
        prog="live-appliance",
        description="A Raspberry Pi voice appliance on the Gemini Live API.",
        epilog="Run 'live-appliance COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        handler: Callable[[argparse.Namespace], int],
        summary: str,
        example: str,
        details: str = "",
    ) -> argparse.ArgumentParser:
        p = _add_command(sub, name, summary, example, details)
        p.set_defaults(handler=handler)
        return p

    run = command(
        "run",
        _cmd_run,
        "Run the appliance: button, microphone, Live session, speaker and LEDs.",
        "live-appliance run --config /etc/live-appliance/config.toml",
    )
    _config_arg(run)

    ctl = command(
        "ctl",
        _cmd_ctl,
        "Talk to the running daemon over its control socket.",
        "live-appliance ctl status",
        "Press or release the button, read the daemon's state and last turns with their "
        "timings, or have it speak a text turn into its session.",
    )
    actions = ctl.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        p = _add_command(actions, name, summary, example)
        p.add_argument("--socket", metavar="PATH", help="control socket (default: from the config)")
        _config_arg(p)
        return p

    action("press", "Press the button (as if by hand).", "live-appliance ctl press")
    action("release", "Release the button.", "live-appliance ctl release")
    status = action(
        "status",
        "Show the daemon's state, its session and its last turns with their timings.",
        "live-appliance ctl status",
    )
    status.add_argument("--json", action="store_true", help="the daemon's raw reply as JSON")
    text = action(
        "text",
        "Send a text turn into the daemon's session; it speaks the reply.",
        'live-appliance ctl text "What time is it in Tokyo?"',
    )
    text.add_argument("words", nargs="+", action=_OneTurn, metavar="TEXT", help="what to say")

    devices = command(
        "devices",
        _cmd_devices,
        "List the audio devices and mark the ones the configuration selects.",
        "live-appliance devices",
        "One line per PortAudio device: index, input and output channels, default rate, "
        "whether it can record (in) and play (out) at 16000, 24000 and 48000 Hz, and its "
        "name, with an arrow at the configured input and output. Exit code 1 when a "
        "configured device does not exist.",
    )
    _config_arg(devices)

    leds_off = command(
        "leds-off",
        _cmd_leds_off,
        "Turn the LEDs dark, as a clean stop does.",
        "live-appliance leds-off",
        "The service runs it after a stop that was not clean (a crash, the watchdog, a "
        "kill): pixels keep their last frame, and showed the box listening while it was "
        "not running. Nothing to do after a clean stop (SERVICE_RESULT=success).",
    )
    _config_arg(leds_off)

    doctor = command(
        "doctor",
        _cmd_doctor,
        "Check the box part by part, with the fix beside each problem.",
        "live-appliance doctor            (everything)\n"
        "  live-appliance doctor mic speaker  (only those)",
        "In order: the configuration, the API key (never shown), the network and a real "
        "Live setup handshake, the power supply (the firmware's under-voltage and throttling "
        "flags), the audio devices, the microphone level for 3 s, a speaker"
        " tone, which way the box keeps its own voice out of the microphone (echo), every"
        " LED pattern (and each pixel of a strip), the button (waits 10 s for a press), "
        "one camera frame, the room on the SD card, the service. One line each: PASS, "
        "WARN, FAIL or SKIP, what was measured, and the fix on the next line. Exit code 0 "
        "only when nothing failed. "
        "While the service runs it holds the microphone, speaker, pins and camera: those "
        "checks then show what the service says instead (stop it to test them).",
    )
    doctor.add_argument(
        "checks",
        nargs="*",
        type=_check_name,
        metavar="CHECK",
        help=f"run only these checks: {', '.join(CHECK_NAMES)} (default: all)",
    )
    doctor.add_argument("--json", action="store_true", help="print the results as JSON")
    doctor.add_argument(
        "--turn",
        action="store_true",
        help="network: also send one short text turn and time the first reply audio",
    )
    doctor.add_argument("--quiet", action="store_true", help="speaker: no test tone")
    doctor.add_argument(
        "--no-button",
        action="store_true",
        help="button: do not wait for a press (also skipped when not run from a terminal, "
        "unless asked for by name)",
    )
    doctor.add_argument(
        "--camera-out",
        default="/tmp/live-appliance-camera.jpg",
        metavar="PATH",
        help="camera: where to save the frame (default: %(default)s)",
    )
    _config_arg(doctor)

    ask = command(
        "ask",
        _cmd_ask,
        "Send text turns to the Live API and print the replies' words.",
        'live-appliance ask "What is the tallest mountain?" "And the second?" --audio reply.wav',
        "Uses the daemon's configuration and key. All TEXTs go into one session, one turn "
        "each; each reply's output transcription is printed on stdout as it completes, its "
        "timings on stderr. --audio writes all reply audio as a 24 kHz mono WAV, --play "
        "plays it on the configured speaker as it arrives.",
    )
    ask.add_argument(
        "text", nargs="+", type=_words, metavar="TEXT", help="one turn each, in order"
    )
    ask.add_argument("--audio", metavar="PATH", help="write the reply audio to this WAV file")
    ask.add_argument("--play", action="store_true", help="play the replies as they arrive")
    ask.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="give up on a turn after this long (default: %(default)g)",
    )
    _config_arg(ask)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _standard_streams_even_if_closed()
    _printable_whatever_the_terminal()
    from device.errors import ConfigError, ConfigUnreadable

    try:
        args = _parse(build_parser(), argv)  # --help is output too, to a reader maybe gone
        code = int(args.handler(args))
        sys.stdout.flush()  # here, where a reader gone is caught, not at exit
        return code
    except BrokenPipeError:
        # No traceback under the lines `head` showed; nor a second one as Python flushes
        # stdout on its way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except ConfigUnreadable as exc:  # nothing in it is wrong
        print(_as_error(f"live-appliance: {exc}. {exc.fix}"), file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(_as_error(f"live-appliance: configuration error: {exc}"), file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if (exc.name or "device").partition(".")[0] == "device":
            raise  # the package's own fault: a bug report needs the traceback
        print(_as_error(_without_dependencies(exc)), file=sys.stderr)
        return 1


def _without_dependencies(exc: ModuleNotFoundError) -> str:
    """What to run instead of a Python that lacks the package's dependencies: in a
    checkout `python3 -m device doctor` (the README's "the same command") is the system's
    Python, and ended in a traceback naming only the module."""
    return (
        f"live-appliance: {exc} in {sys.executable}, which lacks what live-appliance needs: "
        "in a checkout, use .venv/bin/live-appliance (scripts/setup makes .venv); on a box, "
        "run sudo scripts/install-pi.sh again"
    )


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; an option no parser knows is refused by the command typed, with its
    usage: argparse's top parser refused it, and `ctl status --jsn` showed the owner
    `live-appliance [-h] COMMAND ...`, which names none of the options they were after."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.typed.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _standard_streams_even_if_closed() -> None:
    """/dev/null in place of a standard stream the caller closed (`ctl press >&-`, a
    script's idea of silence): Python then has none (None), and `ctl press` raised
    AttributeError as it flushed stdout (exit 1 for a press taken), `doctor 2>&-` or
    `<&-` as it looked at stderr or stdin (no report at all). In order, each open takes
    the lowest number free, the one closed: a file or socket opened later must not
    take it, for a child writing to its stdout would write into that."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        if getattr(sys, name) is None:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            stream = open(fd, "r" if fd == 0 else "w", closefd=False)  # noqa: SIM115 (for life)
            setattr(sys, name, stream)


def _printable_whatever_the_terminal() -> None:
    """What stdout's character set cannot show is written as an escape, as stderr does: a
    German reply's quotes in a Latin-1 terminal, a path in Latin-1 under a UTF-8 locale
    raised UnicodeEncodeError (`ask` blamed the service and lost the words, `doctor` died)."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def _as_error(line: str) -> str:
    """`line` for stderr, marked as an error when stderr is the journal (`<3>`, which
    systemd reads as the priority): a configuration error stops the daemon before its
    journal handler is set up, and `journalctl -p err` must still show why."""
    from device.logs import stderr_is_journal

    return f"<3>{line}" if stderr_is_journal() else line


if __name__ == "__main__":
    sys.exit(main())
