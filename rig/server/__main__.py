"""``python -m rig.server``: run the local Live API server until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

from rig.server.server import DEFAULT_API_KEY, LiveServer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m rig.server", description="A local Gemini Live API server over TLS."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--pace", type=float, default=1.0,
                        help="reply speed factor: 1 real time, 0 as fast as possible")
    parser.add_argument("--setup-delay", type=float, default=0.0, help="seconds")
    parser.add_argument("--reply-seconds", type=float, default=1.2)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGINT/SIGTERM, after printing how to point a client here."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with LiveServer(args.host, args.port, api_key=args.api_key, pace=args.pace,
                          setup_delay=args.setup_delay, reply_seconds=args.reply_seconds) as server:
        print(f"Local Live API server at {server.base_url}", flush=True)
        print(f"CA file: {server.ca_file}")
        # Pasted into a shell, the export lines are all `live-appliance ask` needs.
        print(f"export GEMINI_API_KEY={server.api_key}")
        print(f"export GOOGLE_GEMINI_BASE_URL={server.base_url}")
        print(f"export SSL_CERT_FILE={server.ca_file}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m rig.server`."""
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
