"""Review (network): a home network that misbehaves under a box left running."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from helpers import closed_port, until
from wire import config_for

from device.config import Config, LiveConfig, Secret
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import ConnectFailed, Event, SetupComplete
from rig.server.server import LiveServer
from rig.server.tls import LocalCA


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


@contextlib.asynccontextmanager
async def proxy(answer: bytes | None = None) -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP proxy on 127.0.0.1: its port and the CONNECT requests it took. It tunnels
    each to the host and port asked for, or answers `answer` (a status line) instead."""
    asked: list[bytes] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        asked.append(request.split(b"\r\n", 1)[0])
        if answer is not None:
            writer.write(answer + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        host, _, port = request.split()[1].decode().rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1], asked
    finally:
        listening.close()


async def first_outcome(cfg: Config) -> Event:
    """What a press's session says first: SetupComplete, or why it failed."""
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(5), events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: bool(events), within=15)
    finally:
        await link.close()
    return events[0]


async def test_a_proxy_in_the_environment_carries_the_session(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An owner behind a proxy sets HTTPS_PROXY for the unit: the Live session goes
    through it (websockets reads the environment)."""
    async with proxy() as (port, asked):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        outcome = await first_outcome(config_for(server))
    assert isinstance(outcome, SetupComplete), outcome
    assert asked and asked[0].startswith(b"CONNECT 127.0.0.1:")


async def test_a_proxy_that_is_down_is_named_not_the_live_api_host(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY names a proxy that is down (or a stale setting the owner forgot): the
    error state and the journal said "TCP: connection refused by the Live API host", and
    the owner looked at the service, the key and the firewall, never at the proxy."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    outcome = await first_outcome(config_for(server))
    assert isinstance(outcome, ConnectFailed)
    assert "proxy" in outcome.reason, outcome.reason
    assert "Live API host" not in outcome.reason


async def test_a_proxy_that_wants_credentials_is_said_as_such(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy answers CONNECT with 407: the failure is the proxy's, named with its
    status, not "other" with a class name."""
    async with proxy(b"HTTP/1.1 407 Proxy Authentication Required") as (port, _):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        outcome = await first_outcome(config_for(server))
    assert isinstance(outcome, ConnectFailed)
    assert "proxy" in outcome.reason and "407" in outcome.reason, outcome.reason
    assert "InvalidProxyStatus" not in outcome.reason


async def test_a_slow_proxy_is_not_blamed_on_the_boxs_resolver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Behind a proxy the box often cannot resolve outside names at all: the proxy does.
    A connect that timed out (the proxy slow) was then checked against the Live API's
    host with the box's resolver, and the journal said DNS, sending the owner to a
    resolver the box never needed."""
    held: list[asyncio.StreamWriter] = []

    async def say_nothing(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}")
    live = LiveConfig(base_url="https://live.proxy-only.invalid", connect_timeout_s=0.5)
    try:
        outcome = await first_outcome(Config(live=live, api_key=Secret("AIza-test")))
    finally:
        for writer in held:
            writer.close()
        silent.close()
    assert isinstance(outcome, ConnectFailed)
    assert not outcome.reason.startswith("DNS"), outcome.reason


@contextlib.asynccontextmanager
async def answering(answer: bytes, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Config]:
    """A TLS server the box trusts that answers the WebSocket upgrade with `answer` (a
    whole HTTP response): a network whose sign-in page or proxy answers for the service.
    Yields a configuration pointed at it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    ca = LocalCA()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    listening = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ca.server_context())
    port = listening.sockets[0].getsockname()[1]
    try:
        live = LiveConfig(base_url=f"https://127.0.0.1:{port}")
        yield Config(live=live, api_key=Secret("AIza-test"))
    finally:
        listening.close()
        ca.cleanup()


@pytest.mark.parametrize(
    "location", ["http://portal.lan/login?mac=dc:a6:32:00:00:01", "https://portal.lan/login"]
)
async def test_a_redirect_to_a_sign_in_page_is_named_as_such(
    monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    """A hotel's or a school's network redirects the upgrade to its sign-in page: the
    error state said "InvalidURI: http://portal.lan/login?mac=... isn't a valid URI:
    scheme isn't ws or wss" (LIVE_FAILURE=other), the page's address quoted whole."""
    answer = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
    async with answering(answer.encode(), monkeypatch) as cfg:
        outcome = await first_outcome(cfg)
    assert isinstance(outcome, ConnectFailed)
    assert "redirect" in outcome.reason and "portal.lan" in outcome.reason, outcome.reason
    assert "InvalidURI" not in outcome.reason and "mac=" not in outcome.reason


@pytest.mark.parametrize(
    "status", ["200 OK", "511 Network Authentication Required"], ids=["html", "511"]
)
async def test_a_network_that_wants_a_sign_in_is_not_the_live_api_refusing(
    monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    """A page in place of the upgrade (200 with HTML, or 511, the status made for a
    network that wants a sign-in) was "the Live API refused the connection": the owner
    looked at the key and the service, not at the network."""
    answer = f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n"
    async with answering(answer.encode(), monkeypatch) as cfg:
        outcome = await first_outcome(cfg)
    assert isinstance(outcome, ConnectFailed)
    assert "Live API refused" not in outcome.reason, outcome.reason
    assert "sign-in" in outcome.reason, outcome.reason
