"""Review (network): a home network that misbehaves under a box left running."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from helpers import until

from device.config import Config, LiveConfig, Secret
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import ConnectFailed, Event, SetupComplete
from rig.server.server import LiveServer


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with LiveServer(pace=0, reply_seconds=0.2) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


@pytest.fixture
def ipv6_blackhole(server: LiveServer) -> Iterator[int]:
    """[::1] at the server's port, dropping every SYN (its one-place accept queue is
    full): an IPv6 route that goes nowhere, as after a router reboot gave the home a new
    prefix while the box still uses the old one, or an ISP whose IPv6 is down."""
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", server.port))
        listener.listen(0)
        with socket.create_connection(("::1", server.port)):
            yield server.port


def dual_stack(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`host` resolves as the Live API's host does on a box with a global IPv6 address:
    its AAAA first (RFC 6724), then its A."""
    resolve = socket.getaddrinfo

    def both(name: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if name != host:
            return resolve(name, port, *args, **kwargs)
        v6 = resolve("::1", port, socket.AF_INET6, socket.SOCK_STREAM)
        v4 = resolve("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM)
        return v6 + v4

    monkeypatch.setattr(socket, "getaddrinfo", both)


async def test_a_broken_ipv6_route_falls_back_to_ipv4_before_the_connect_times_out(
    server: LiveServer, ipv6_blackhole: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The home's IPv6 goes nowhere while IPv4 works (a browser on the same Wi-Fi loads
    every page: it tries IPv4 after a moment). The box tried the AAAA address alone until
    `connect_timeout_s` ran out: every press was the error pattern and "no answer from
    the Live API in time", for as long as the IPv6 route stayed broken."""
    dual_stack("localhost", monkeypatch)
    cfg = Config(
        live=LiveConfig(base_url=f"https://localhost:{ipv6_blackhole}"),  # default timeout
        api_key=Secret(server.api_key),
    )
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(5), events.append, lambda *_: None)
    pressed = time.monotonic()
    link.open(1)
    try:
        await until(lambda: bool(events), within=15)
        took = time.monotonic() - pressed
    finally:
        await link.close()
    assert not [e for e in events if isinstance(e, ConnectFailed)], events
    assert isinstance(events[0], SetupComplete)
    assert took < 2.0, f"connected after {took:.1f} s"
