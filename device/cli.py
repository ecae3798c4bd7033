"""The `live-appliance` command line.

Owners type these over SSH, so parsing and `--help`, `ctl` and `devices` import
nothing heavy: each command imports what it needs only when it runs (the Live
SDK alone takes a second to import on a Pi).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

EXIT_CONFIG = 2


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $LIVE_APPLIANCE_CONFIG, "
        "else /etc/live-appliance/config.toml)",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from device import config as config_mod

    cfg = config_mod.load(args.config)
    config_mod.require_credentials(cfg)
    from device.appliance import run_daemon

    return run_daemon(cfg)


def _cmd_ctl(args: argparse.Namespace) -> int:
    from device import config as config_mod
    from device.control import ControlError, request

    socket_path = args.socket or config_mod.load(args.config).control.socket
    try:
        reply = request(socket_path, args.action)
    except ControlError as exc:
        print(f"live-appliance ctl: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok", True) else 1


def _cmd_devices(args: argparse.Namespace) -> int:
    from device import config as config_mod
    from device.audio.devices import print_devices

    return print_devices(config_mod.load(args.config).audio)


def _cmd_demo(args: argparse.Namespace) -> int:
    from device.demo import run_demo

    return run_demo(args)


def _cmd_sim_server(args: argparse.Namespace) -> int:
    from device.sim.__main__ import main as sim_main

    return sim_main(args.sim_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="live-appliance",
        description="A Raspberry Pi voice appliance on the Gemini Live API.",
        epilog="Run 'live-appliance COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], summary: str, example: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"example: {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
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
    )
    ctl.add_argument("action", choices=["press", "release", "status"])
    ctl.add_argument("--socket", metavar="PATH", help="control socket (default: from the config)")
    _config_arg(ctl)

    devices = command(
        "devices",
        _cmd_devices,
        "List the audio devices PortAudio sees and mark the ones the config selects.",
        "live-appliance devices",
    )
    _config_arg(devices)

    demo = command(
        "demo",
        _cmd_demo,
        "Show the appliance working on this machine: the daemon against a local Live "
        "server and loopback audio, a spoken question, the recorded reply, a timeline.",
        "live-appliance demo --out demo-out",
    )
    demo.add_argument("--out", default="demo-out", metavar="DIR", help="where to write the WAVs")
    demo.add_argument(
        "--question",
        default="What is the tallest mountain in the world?",
        help="what the demo says into the microphone (spoken by espeak-ng)",
    )

    sim = command(
        "sim-server",
        _cmd_sim_server,
        "Run the local Live API server on its own, for any Live API client.",
        "live-appliance sim-server --port 8443",
    )
    sim.add_argument("sim_args", nargs=argparse.REMAINDER, help="options of the server")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from device.config import ConfigError

    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"live-appliance: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
