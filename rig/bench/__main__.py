"""`python -m rig.bench`: measure, print the table, write the JSON."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rig.bench",
        description=(
            "Measure what the person at the button feels (latencies, speech lost at the "
            "press) and what the daemon costs (CPU, memory, start-up), running the real "
            "daemon against the local Live server on loopback audio. Nothing else should "
            "run meanwhile: the figures are only as quiet as the machine."
        ),
    )
    parser.add_argument(
        "--turns", type=int, default=None, metavar="N",
        help="samples of each latency figure (default 20; 3 with --quick)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results.json"), metavar="PATH",
        help="where to write the JSON results (default: bench-results.json)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="a smoke run of a minute or so: a few turns, short CPU windows",
    )
    args = parser.parse_args(argv)
    if args.turns is not None and args.turns < 1:
        parser.error("--turns must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # The rig (numpy, the server, the loopback) is imported only once there is work.
    from rig.bench import report
    from rig.bench.harness import BenchError
    from rig.bench.run import Plan, run

    plan = Plan.quick(args.turns) if args.quick else Plan(turns=args.turns or Plan.turns)
    before = report.machine()
    try:
        figures = run(plan)
    except BenchError as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    report.publish(args.out, figures, before, asdict(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
