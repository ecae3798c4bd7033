"""The local server's command-line options, shared by `python -m device.sim` and
`live-appliance sim-server`. Only argparse here: `--help` must not import the server."""

from __future__ import annotations

import argparse

DEFAULT_API_KEY = "sim-api-key"


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--pace", type=float, default=1.0,
                        help="reply speed factor: 1 real time, 0 as fast as possible")
    parser.add_argument("--setup-delay", type=float, default=0.0, help="seconds")
    parser.add_argument("--reply-seconds", type=float, default=1.2)
