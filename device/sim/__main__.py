"""``python -m device.sim``: run the local Live API server until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

from device.sim.options import add_server_options
from device.sim.server import LiveServer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m device.sim", description="A local Gemini Live API server over TLS."
    )
    add_server_options(parser)
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
        print(f"API key: {server.api_key}")
        print(f"export GOOGLE_GEMINI_BASE_URL={server.base_url}")
        print(f"export SSL_CERT_FILE={server.ca_file}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point, also used by ``live-appliance sim-server``."""
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
