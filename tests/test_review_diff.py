"""Review of the day's diff: what a home meets that its tests did not try."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from device.config import Config, LiveConfig, Secret
from device.doctor.network import FIXES, check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from rig.server.server import LiveServer
from tests.test_doctor import _proxy_to
from tests.test_live_session import _connect_failure


@pytest.mark.parametrize(
    "proxy",
    [
        "alice:pr0xy-pa55word@proxy.lan:3128",  # curl's way: no http://
        "http://alice:pr0xy@pa55word@proxy.lan:3128/login",  # an '@' in the password
    ],
)
async def test_a_proxy_password_written_as_curl_takes_it_stays_out_of_the_journal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, proxy: str
) -> None:
    """The setting websockets cannot use is quoted whole in the proxy failure's line: its
    password (or what follows an '@' in it) reached the journal and `ctl status`."""
    reason, said = await _connect_failure(monkeypatch, caplog, proxy)
    texts = (reason, said[-1].LIVE_ERROR, *(r.getMessage() for r in said),
             *(r.exc_text or "" for r in said))
    for text in texts:
        assert "pa55word" not in text, text
    assert "alice:" in reason and "@proxy.lan:3128" in reason, reason  # which proxy, still
    assert said[-1].LIVE_FAILURE == "proxy"


async def test_a_proxy_that_intercepts_tls_is_told_as_tls_not_try_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A school's proxy that opens the tunnel, then shows its own certificate (the box does
    not trust it). Behind HTTPS_PROXY TLS is checked at setup; its failure there was told
    "try again in a minute, the service may be down", not the clock or the intercepting
    proxy (the TLS fix, as the README says)."""
    async with LiveServer(pace=0, reply_seconds=0.2) as server:
        port = urlsplit(server.base_url).port
        assert port is not None
        async with _proxy_to(port) as (proxy_port, _asked):
            for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
                         "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"):
                monkeypatch.delenv(name, raising=False)
            monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy_port}")
            cfg = Config(live=LiveConfig(base_url=f"https://localhost:{port}"),
                         api_key=Secret(server.api_key))
            result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert "certificate" in result.measured, result.measured
    assert result.fix == FIXES["TLS"], (result.measured, result.fix)


@contextlib.asynccontextmanager
async def _proxy_refusing(status: bytes) -> AsyncIterator[int]:
    """An HTTP proxy on 127.0.0.1 that answers every CONNECT with `status`; yields its port."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):  # the doctor's TCP step
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    listening = await asyncio.start_server(refuse, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1]
    finally:
        listening.close()


@pytest.mark.parametrize(
    "status", [b"407 Proxy Authentication Required", b"403 Forbidden"]
)
async def test_a_proxy_that_refuses_the_tunnel_is_told_to_check_the_proxy(
    monkeypatch: pytest.MonkeyPatch, status: bytes
) -> None:
    """The school's proxy wants a login (407) or refuses CONNECT (403). The doctor said to
    renew the API key (407), or to try again in a minute (403): neither helps."""
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with _proxy_refusing(status) as proxy_port:
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy_port}")
        cfg = Config(live=LiveConfig(base_url="https://localhost:443"),
                     api_key=Secret("AIza-not-a-real-key-0123456789abcdefghij"))
        result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert "proxy refused the tunnel" in result.measured, result.measured
    fix = result.fix or ""
    assert "HTTPS_PROXY" in fix, fix
    assert "API key" not in fix, fix


async def test_a_proxy_setting_websockets_cannot_use_is_what_the_doctor_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY=proxy.lan:3128 (curl's way) on a network whose resolver knows no outside
    names: the service fails on "HTTPS_PROXY's proxy.lan:3128 cannot be used", but the
    doctor, taking no proxy, resolved the Live API's host itself and said to check the
    box's network and DNS."""
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "proxy.lan:3128")

    def no_outside_names(*_args: object, **_kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_outside_names)
    cfg = Config(live=LiveConfig(), api_key=Secret("AIza-not-a-real-key-0123456789abcdefghij"))
    result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert "HTTPS_PROXY's proxy.lan:3128 cannot be used" in result.measured, result.measured
    assert "HTTPS_PROXY" in (result.fix or ""), result.fix
