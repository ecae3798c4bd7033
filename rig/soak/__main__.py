"""`python -m rig.soak`: soak the daemon, print the figures, write the JSON, exit 1 on a failure."""

from __future__ import annotations

import argparse
import random
import signal
import sys
from pathlib import Path

DEFAULT_MINUTES = 20.0
DEFAULT_TIME_SCALE = 30.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rig.soak",
        description=(
            "Soak the real daemon: hundreds of turns, push-to-talk then hands-free, with "
            "random faults from the local Live server (goAway, close 1011, dropped sockets, "
            "stalls, floods of reply audio, turns and interruptions the model lets pass). "
            "Reports turns answered, faults survived, stuck states, leaked tasks, threads "
            "and file descriptors, and memory; exits 1 when a must-be-zero figure is not 0."
        ),
    )
    parser.add_argument(
        "--minutes", type=float, default=None, metavar="M",
        help=f"stop after M minutes on the clock (default {DEFAULT_MINUTES:g} unless --turns)",
    )
    parser.add_argument(
        "--turns", type=int, default=None, metavar="N", help="stop after N turns",
    )
    parser.add_argument(
        "--seed", type=int, default=None,
        help="the plan's seed (default: a random one, printed); the same seed, the same plan",
    )
    parser.add_argument(
        "--time-scale", type=float, default=DEFAULT_TIME_SCALE, metavar="X",
        help="the service's clock runs X times faster: its 10-minute connections last "
        f"600/X s (default {DEFAULT_TIME_SCALE:g})",
    )
    parser.add_argument(
        "--mode", choices=["push_to_talk", "toggle", "both"], default="both",
        help="which button mode(s) to soak; both share the budget (default: both)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("soak-results.json"), metavar="PATH",
        help="the JSON results (default: soak-results.json); daemon logs go beside it",
    )
    args = parser.parse_args(argv)
    if args.turns is not None and args.turns < 1:
        parser.error("--turns must be at least 1")
    if args.minutes is not None and args.minutes <= 0:
        parser.error("--minutes must be more than 0")
    if args.time_scale < 1:
        parser.error("--time-scale must be at least 1")
    if args.minutes is None and args.turns is None:
        args.minutes = DEFAULT_MINUTES
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # The rig (numpy, the server, the loopback) is imported only once there is work.
    from device.states import Mode
    from rig.bench.harness import BenchError
    from rig.bench.report import machine
    from rig.soak import report
    from rig.soak.run import Options, progress, run

    modes = tuple(Mode) if args.mode == "both" else (Mode(args.mode),)
    options = Options(
        seed=args.seed, minutes=args.minutes, turns=args.turns, time_scale=args.time_scale,
        modes=modes, logs=args.out.parent / f"{args.out.stem}-logs",
    )
    progress(f"seed {args.seed} (rerun with --seed {args.seed})")
    before = machine()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run(options)
    except BenchError as exc:
        print(f"soak: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("soak: interrupted; the daemon and the rig are stopped", file=sys.stderr)
        return 130
    doc = report.document(result, before)
    print(report.text(doc))
    report.write(args.out, doc)
    print(f"soak: wrote {args.out}")
    return 1 if doc["failures"] else 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends a run as Ctrl-C does: the daemon, the server and the sound server stop."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
