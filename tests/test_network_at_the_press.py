"""The home network over months: a captive portal or a clock not set yet at the press,
told apart in the journal, the error state's reason and the doctor's fix."""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import errno
import os
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from fakes import DEAD
from helpers import closed_port, only_proxy, trusted_server, until
from test_credentials_over_time import what_a_press_meets
from wire import config_for

from device import config
from device.config import Config, LiveConfig, Secret, with_api_key
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.live.errors import SIGN_IN_HINT, describe_failure
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import ConnectFailed, Event

KEY = Secret("AIza-not-a-real-key-0123456789abcdefghij")
#: What a hotel's sign-in page says on port 443 to a box that asks it for TLS.
PORTAL_ANSWER = b"HTTP/1.1 302 Found\r\nLocation: http://portal.example/login\r\n\r\n"


@contextlib.asynccontextmanager
async def answering(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The Live API's address, where `kind` answers: "portal", a sign-in page speaking
    plain HTTP on the port; "other host", TLS with a certificate for another name (a
    portal or a proxy that intercepts TLS); "not yet valid", the service's certificate
    as a box sees it whose clock runs days behind (fake-hwclock, before NTP)."""
    if kind == "portal":

        async def portal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                await reader.read(1)
                writer.write(PORTAL_ANSWER)
                await writer.drain()
            writer.close()

        listening = await asyncio.start_server(portal, "127.0.0.1", 0)
        try:
            yield f"https://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
        finally:
            listening.close()
        return
    issue = trustme.CA.issue_cert

    def issued(ca: trustme.CA, *names: str, **options: Any) -> trustme.LeafCert:
        if kind == "other host":
            names = ("portal.example",)
        else:
            now = datetime.now(UTC)
            options |= {"not_before": now + timedelta(days=3),
                        "not_after": now + timedelta(days=90)}
        return issue(ca, *names, **options)

    monkeypatch.setattr(trustme.CA, "issue_cert", issued)
    async with trusted_server(monkeypatch, pace=0) as server:
        yield server.base_url


async def reason_at_the_press(base_url: str) -> str:
    """A press's session against `base_url`: the error state's reason (`ctl status`)."""
    return await reason_of_a_press(Config(live=LiveConfig(base_url=base_url), api_key=KEY))


async def reason_of_a_press(cfg: Config) -> str:
    """A press's session with `cfg`: the error state's reason (`ctl status`)."""
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(5), events.append, lambda _item, _t: None)
    link.open(1)
    try:
        await until(lambda: events, within=10)
    finally:
        await link.close()
    (failed,) = events
    assert isinstance(failed, ConnectFailed), events
    return failed.reason


@pytest.mark.parametrize("kind", ["portal", "other host"])
async def test_a_sign_in_page_answering_for_the_service_is_named_at_the_press(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hotel's or a school's Wi-Fi answers HTTPS itself until someone signs in. The
    error's line said "TLS: WRONG_VERSION_NUMBER" (a page in plain HTTP on port 443) or a
    bare "IP address mismatch": nothing an owner reads as "sign in to the Wi-Fi"."""
    async with answering(kind, monkeypatch) as base_url:
        reason = await reason_at_the_press(base_url)
    assert reason.startswith("TLS: "), reason
    assert SIGN_IN_HINT in reason, reason
    assert "clock" not in reason, reason


async def test_a_certificate_not_yet_valid_at_the_press_says_the_clock_not_a_portal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with answering("not yet valid", monkeypatch) as base_url:
        reason = await reason_at_the_press(base_url)
    assert "check the clock" in reason, reason
    assert SIGN_IN_HINT not in reason, reason


@pytest.mark.parametrize(
    ("kind", "said", "not_said"),
    [
        ("portal", "captive portal", "clock"),
        ("other host", "captive portal", "clock"),
        ("not yet valid", "timedatectl", "proxy"),
    ],
)
async def test_the_doctors_fix_for_tls_is_the_clock_or_the_sign_in_page_as_the_cause_is(
    kind: str, said: str, not_said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`doctor network` gave every TLS failure one fix, the clock first: on a hotel's Wi-Fi
    that sent the owner to timedatectl, and a box whose clock runs days behind to look
    for a proxy; the line said WRONG_VERSION_NUMBER for a portal speaking plain HTTP."""
    async with answering(kind, monkeypatch) as base_url:
        cfg = Config(live=LiveConfig(base_url=base_url), api_key=KEY)
        result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert result.data["layer"] == "TLS", result
    fix = result.fix or ""
    assert said in fix, (result.measured, fix)
    assert not_said not in fix, (result.measured, fix)


async def test_a_key_refused_after_a_power_cut_is_not_blamed_on_a_restart_never_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner installed the key, and unplugged the box within the hour. A Pi has no
    clock: it came back at the time last saved (fake-hwclock's hourly save), before the
    key was written, and systemd copied the key into the service's credential then. When
    that key was revoked, each press said the key file "changed after the service started"
    and to restart the service: a restart that changes nothing, while the fix is a new key."""
    booted = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)  # by the clock set now
    credentials, installed = tmp_path / "credentials", tmp_path / "api-key"
    credentials.mkdir()
    revoked = "AIza-the-installed-key-now-revoked"
    for copy in (credentials / config.CREDENTIAL_NAME, installed):
        copy.write_text(f"{revoked}\n")
    written, restored = booted - 3600, booted - 3 * 3600  # the clock came back behind it
    os.utime(installed, (written, written))
    os.utime(credentials / config.CREDENTIAL_NAME, (restored, restored))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", installed)
    async with trusted_server(monkeypatch, pace=0) as server:
        cfg = with_api_key(config_for(server))
        assert cfg.api_key is not None and cfg.api_key.reveal() == revoked
        failed = await what_a_press_meets(cfg)
    assert isinstance(failed, ConnectFailed), failed
    assert "refused the API key" in failed.reason, failed.reason
    assert "restart" not in failed.reason, failed.reason


def no_route(monkeypatch: pytest.MonkeyPatch) -> str:
    """The Live API's address, on a network whose router is gone (rebooting, or the Wi-Fi
    up without it): each connect fails as asyncio says it does once no ARP answer came,
    "Connect call failed", with EHOSTUNREACH as its errno."""
    port = closed_port()
    connect = asyncio.selector_events.BaseSelectorEventLoop.sock_connect

    async def sock_connect(
        loop: asyncio.AbstractEventLoop, sock: socket.socket, address: Any
    ) -> None:
        if address[1] == port:
            raise OSError(errno.EHOSTUNREACH, f"Connect call failed {address}")
        await connect(loop, sock, address)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect",
                        sock_connect)
    return f"https://127.0.0.1:{port}"


async def test_a_connect_with_no_route_to_the_host_says_so_at_the_press(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The router rebooting: every connect fails with "No route to host", and the error's
    line said only "network: Connect call failed ('142.250.1.95', 443)", no reason."""
    reason = await reason_at_the_press(no_route(monkeypatch))
    assert os.strerror(errno.EHOSTUNREACH) in reason, reason


async def test_a_proxy_with_no_route_to_it_says_so_at_the_press(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same behind HTTPS_PROXY: "proxy: cannot reach 10.0.0.5:3128: Connect call
    failed ('10.0.0.5', 3128)", the reason lost there too."""
    only_proxy(monkeypatch, no_route(monkeypatch).replace("https://", "http://"))
    reason = await reason_at_the_press(f"https://localhost:{closed_port()}")
    assert reason.startswith("proxy: cannot reach 127.0.0.1:"), reason
    assert os.strerror(errno.EHOSTUNREACH) in reason, reason


async def test_the_doctor_says_no_route_and_sends_the_owner_to_the_router(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = Config(live=LiveConfig(base_url=no_route(monkeypatch)), api_key=KEY)
    result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert result.measured.startswith("TCP: "), result.measured
    assert os.strerror(errno.EHOSTUNREACH) in result.measured, result.measured
    fix = result.fix or ""
    assert "ip route" in fix and "firewall" not in fix, fix


def test_each_address_failing_its_own_way_says_each_reason() -> None:
    """The Live API's host has IPv6 and IPv4 addresses: a home whose IPv6 goes nowhere
    and whose router is down fails both, and asyncio joins them in one message whose
    numbers ([Errno 101]) an owner cannot read."""
    both = OSError(
        "Multiple exceptions: [Errno 101] Connect call failed ('2001:db8::1', 443, 0, 0), "
        "[Errno 113] Connect call failed ('192.0.2.7', 443)"
    )
    said = describe_failure(both)
    assert os.strerror(errno.ENETUNREACH) in said, said
    assert os.strerror(errno.EHOSTUNREACH) in said, said


async def test_the_doctor_says_a_silent_resolver_is_the_resolver_not_the_service(
    silent_resolver: list[str],
) -> None:
    """The internet down behind a working Wi-Fi: the router's resolver waits for an uplink.
    The doctor said "DNS: no answer from generativelanguage.googleapis.com:443 in 5 s",
    which reads as Google not answering; the daemon says the resolver does not answer."""
    cfg = Config(live=LiveConfig(base_url=f"https://{DEAD}", connect_timeout_s=0.5), api_key=KEY)
    result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert result.measured.startswith("DNS: the resolver"), result.measured
    assert f"{DEAD}:443" not in result.measured, result.measured


@pytest.mark.parametrize(("through", "kind", "said"), [
    (None, "tcp", "TCP: "), ("proxy", "proxy", "proxy: cannot reach 127.0.0.1:")])
async def test_a_connect_whose_packets_go_nowhere_names_tcp_not_the_service(
    through: str | None, kind: str, said: str,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The uplink down behind a router that still answers DNS from its cache: the box's
    SYNs go nowhere. The journal said "no answer from the Live API in time", as for a
    service slow to set up: the owner waited for Google, not for their internet. Behind
    HTTPS_PROXY, the proxy is what does not answer."""
    port = closed_port()
    live_port = port if through is None else closed_port()
    if through is not None:
        only_proxy(monkeypatch, f"http://127.0.0.1:{port}")
    connect = asyncio.selector_events.BaseSelectorEventLoop.sock_connect

    async def sock_connect(
        loop: asyncio.AbstractEventLoop, sock: socket.socket, address: Any
    ) -> None:
        if address[1] == port:
            await asyncio.Event().wait()  # no SYN-ACK, no ICMP: nothing ever
        await connect(loop, sock, address)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect",
                        sock_connect)
    cfg = Config(live=LiveConfig(base_url=f"https://localhost:{live_port}",
                                 connect_timeout_s=0.5), api_key=KEY)
    reason = await reason_of_a_press(cfg)
    assert reason.startswith(said), reason
    (line,) = [r for r in caplog.records if r.getMessage().startswith("cannot connect:")]
    assert getattr(line, "LIVE_FAILURE", None) == kind, line.__dict__


def test_addresses_failing_the_same_way_say_the_reason_once() -> None:
    """Both of the host's addresses (IPv6 and IPv4) unreachable the same way, as when the
    Wi-Fi is up without its router: the line says the reason once, not once an address
    ("Network is unreachable; Network is unreachable")."""
    both = OSError(
        "Multiple exceptions: [Errno 101] Connect call failed ('2001:db8::1', 443, 0, 0), "
        "[Errno 101] Connect call failed ('192.0.2.7', 443)"
    )
    unreachable = os.strerror(errno.ENETUNREACH)
    said = describe_failure(both)
    assert said == f"network: {unreachable} (each address of the host tried)", said
