"""Where the Live API client connects, and which step of it a connect timed out in.

The SDK opens its WebSocket in one go (DNS, TCP, TLS, setup) under the box's one
`connect_timeout_s`. The commonest way that runs out in a home is Wi-Fi up and the
internet down: the router's resolver waits for an uplink that is not there. A
timeout is then asked again of the resolver alone, briefly, so that the journal
names the layer, as it does for a failure that comes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import ssl
from typing import TYPE_CHECKING

from device import workers
from device.config import host_and_port
from device.errors import os_words, url_without_password

if TYPE_CHECKING:
    from device.config import Config

GEMINI_HOST = "generativelanguage.googleapis.com"
#: Vertex AI locations the SDK reaches through a multi-regional `.rep.` endpoint.
VERTEX_MULTI_REGIONS = ("us", "eu")
#: How long the resolver is given, alone, after a connect timed out.
DNS_CHECK_S = 1.0
#: How long a connect waits on one address before it tries the next one too (RFC 8305's
#: Connection Attempt Delay): the Live API's host has IPv6 and IPv4 addresses.
HAPPY_EYEBALLS_S = 0.25


class ResolverSilent(TimeoutError):
    """The connect timed out, and the resolver does not answer for the host either."""


class TcpSilent(TimeoutError):
    """The connect timed out, the name resolved, and the host's port does not answer a
    connection either: what the box sends goes nowhere (an uplink down behind a router
    that answers DNS from its cache), not a service slow to set up."""


class ProxyUnreachable(Exception):
    """The connect failed on the way to the proxy the environment names (HTTPS_PROXY,
    ALL_PROXY): the Live API was never tried. The message names the proxy's host and
    port, never its URL (it may hold a user and a password)."""


class AddressUnusable(ValueError):
    """The Live API's address as the environment gives it (GOOGLE_GEMINI_BASE_URL,
    GOOGLE_VERTEX_BASE_URL: `[live] base_url` is checked at load) cannot be read: a port
    out of range or not a number, a bracket left open, no host, a name with an empty
    label (`config.host_and_port`). The owner's setting, not the service's message."""


def endpoint(cfg: Config) -> tuple[str, int]:
    """The host and port the SDK will open its WebSocket to."""
    live = cfg.live
    env = "GOOGLE_VERTEX_BASE_URL" if live.backend == "vertex" else "GOOGLE_GEMINI_BASE_URL"
    url = live.base_url or os.environ.get(env)
    if url:
        try:
            return host_and_port(url if "://" in url else f"https://{url}")
        except ValueError as exc:
            shown = url_without_password(url)
            raise AddressUnusable(f"{env}'s {shown} cannot be used: {exc}") from exc
    if live.backend == "vertex":
        region = live.location or "global"
        if region == "global":
            return "aiplatform.googleapis.com", 443
        if region in VERTEX_MULTI_REGIONS:
            return f"aiplatform.{region}.rep.googleapis.com", 443
        return f"{region}-aiplatform.googleapis.com", 443
    return GEMINI_HOST, 443


def proxy_of(cfg: Config) -> tuple[str, int] | None:
    """(host, port) of the proxy websockets connects to the Live API through, as the
    environment says (HTTPS_PROXY, ALL_PROXY, NO_PROXY...); None when it connects
    directly, or when the setting is not valid (the connect says so itself)."""
    from websockets.exceptions import InvalidProxy

    try:
        return usable_proxy(cfg)
    except InvalidProxy:
        return None


def usable_proxy(cfg: Config) -> tuple[str, int] | None:
    """proxy_of, raising websockets' InvalidProxy for a setting the connect would refuse
    (the doctor's answer is the service's). A connect calls it first: websockets refuses
    a setting urllib cannot parse (a bracket left open, a port out of range) with a bare
    ValueError, which the journal would have said as a message of the service's."""
    from websockets.exceptions import InvalidProxy, InvalidURI
    from websockets.proxy import get_proxy, parse_proxy
    from websockets.uri import parse_uri

    host, port = endpoint(cfg)
    named = f"[{host}]" if ":" in host else host
    try:
        proxy = get_proxy(parse_uri(f"wss://{named}:{port}"))
    except InvalidURI:  # the connect says so itself
        return None
    if proxy is None:
        return None
    try:
        parsed = parse_proxy(proxy)
    except ValueError as exc:
        raise InvalidProxy(proxy, str(exc)) from exc
    return parsed.host, parsed.port


def through_proxy(cfg: Config, exc: OSError) -> Exception:
    """A connect's network failure as ProxyUnreachable when a proxy carries the connection:
    "connection refused" came from it, not from the Live API's host. A file's error (Vertex
    AI's credentials the box cannot read) names its file, and stays as it is."""
    proxy = proxy_of(cfg)
    if proxy is None or isinstance(exc, ssl.SSLError) or exc.filename is not None:
        return exc  # TLS is the Live API's, tunnelled; a file's error is the file's
    return ProxyUnreachable(f"{proxy[0]}:{proxy[1]}: {os_words(exc)}")


def race_addresses(loop: asyncio.AbstractEventLoop) -> None:
    """Connections opened on `loop` try the host's next address HAPPY_EYEBALLS_S after the
    one before, unless the caller says otherwise. Without it asyncio waits on each address
    until it fails: a home whose IPv6 goes nowhere (a stale prefix after the router
    rebooted, an ISP's IPv6 down) timed out every connect on the AAAA address, while a
    browser there fell back to IPv4 at once. google-genai drops `happy_eyeballs_delay`
    from the arguments it passes websockets, hence the loop's own method, wrapped once.
    The names are looked up apart from the worker pool (`workers.lookups_apart`)."""
    workers.lookups_apart(loop)
    create = loop.create_connection
    if isinstance(create, functools.partial):
        return
    loop.create_connection = functools.partial(  # type: ignore[method-assign]
        create, happy_eyeballs_delay=HAPPY_EYEBALLS_S
    )


async def timed_out(cfg: Config) -> Exception:
    """What a connect that timed out is best reported as: ResolverSilent, the resolver's
    own error if it now says no, TcpSilent when the port does not answer either (each
    asked alone, briefly), or the plain timeout (past TCP: TLS or setup). The name and
    port asked are the proxy's when one carries the connection."""
    proxy = proxy_of(cfg)
    host, port = proxy or endpoint(cfg)  # a proxy resolves the Live API's host itself
    try:
        async with asyncio.timeout(DNS_CHECK_S):
            await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        return ResolverSilent(f"{host} not resolved in {DNS_CHECK_S:g} s")
    except socket.gaierror as exc:
        return exc
    try:
        async with asyncio.timeout(DNS_CHECK_S):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        silent = f"{host}:{port}: no answer to a connection in {DNS_CHECK_S:g} s"
        return ProxyUnreachable(silent) if proxy else TcpSilent(silent)
    except OSError:
        return TimeoutError()  # it answers now, in its way: the connect's timeout stands
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return TimeoutError()
