"""The network check: DNS, TCP, TLS, then a real Live setup handshake, each timed.

Each layer is tried on its own so that a failure names the layer that failed and
the fix that goes with it: DNS (the box's network), TCP (a firewall), TLS (the
clock or an intercepting proxy), setup (the key, the model or a setting).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from websockets.exceptions import InvalidProxy

from device import config as config_mod
from device.config import Config
from device.doctor.result import Context, Result, Status
from device.live.endpoint import (
    AddressUnusable,
    endpoint,
    race_addresses,
    through_proxy,
    usable_proxy,
)

# With the module, not at the first layer: importing the SDK (seconds on a small Pi) was
# timed as the DNS lookup.
from device.live.errors import (
    blames_the_clock,
    describe_failure,
    failure_fields,
    is_refusal,
    no_route,
    out_of_its_dates,
    refuses_key,
    refuses_token,
    token_server_unreached,
)
from device.live.reply import MALFORMED_FUNCTION_CALL, NEED_MORE_INPUT
from device.live.wire import CLOSE_INVALID, CLOSE_POLICY

T = TypeVar("T")

#: The fix for a certificate refused for its dates: the box's clock, not the network.
TLS_CLOCK = "TLS clock"
#: The fix for a connect that found no route to the host, at whichever layer.
NO_ROUTE = "no route"

TURN_TEXT = "Please answer with one word: ready."
TURN_TIMEOUT_S = 30.0

FIXES = {
    "DNS": "Check the box's network and DNS (ip route; cat /etc/resolv.conf; ping -c1 {host}).",
    "TCP": "Check the network path to {host} port {port}: a firewall or proxy may block it.",
    # No route at all: the Wi-Fi without its router (one rebooting), not a firewall.
    NO_ROUTE: "Check the box's way out: its Wi-Fi and the router (ip route shows a default "
    "route via the router; ping -c1 its address). A router that just rebooted takes a "
    "minute or two.",
    # Not the service's certificate, or no TLS at all: the network answers for it.
    "TLS": "Sign in to the network if it asks (a hotel's or a school's captive portal: open "
    "a web page on a phone on the same Wi-Fi), or let the box past the proxy or firewall "
    "that intercepts TLS; SSL_CERT_FILE, if set, must name the right CA file.",
    # The service's certificate out of its dates by the box's clock (a Pi without NTP yet
    # runs from its last shutdown's time).
    TLS_CLOCK: "Check the clock (timedatectl): the certificate is not valid at the box's "
    "time. NTP must set it (timedatectl set-ntp true, and a time server the network lets "
    "through, UDP port 123).",
    CLOSE_POLICY: "Check the API key (make a new one at aistudio.google.com) and [live] model.",
    CLOSE_INVALID: "A setting was refused: check [live] model, voice and language.",
    # An ephemeral token refused: spent or expired; a new API key is not what it wants.
    "token": "The ephemeral token from {source} is spent or expired: check the job that "
    "writes tokens there (each opens one session unless minted with more uses, none "
    "after its new_session_expire_time, and this check spends one too).",
    # A file read as the client is built (Vertex AI's credentials) that cannot be read.
    "file": "Check the file the line names (sudo ls -l on it): the service reads it as its "
    "own user (the README's vertex.json: root, group live-appliance, mode 0640), the "
    "doctor as whoever runs it (sudo).",
    # Refused, not out of reach: Vertex AI's token server, or an HTTP 401/403.
    "credentials": "Renew the credentials: on Vertex AI a new service account key file "
    "where GOOGLE_APPLICATION_CREDENTIALS points (or gcloud auth application-default "
    "login); on the Gemini API a new API key.",
    # Vertex AI's token server refused the box's time (a Pi without NTP yet runs from its
    # last shutdown's time): a new key would be refused the same.
    "clock": "Check the clock (timedatectl): NTP must have set it (timedatectl set-ntp "
    "true, and a time server the network lets through); new credentials would be "
    "refused the same.",
    # Vertex AI's token server out of reach: the Live API was never asked.
    "token server": "Check that the box reaches Google's token server "
    "(oauth2.googleapis.com, port 443): DNS, a firewall or a proxy may stop it.",
    # The proxy refused the tunnel (407: it wants a login) or its setting is unusable.
    "proxy": "Check HTTPS_PROXY (the service's: systemctl show -p Environment "
    "live-appliance): the proxy's address, its login if it asks for one "
    "(http://user:password@host:port), and that it lets the box through to port 443.",
    # GOOGLE_GEMINI_BASE_URL or GOOGLE_VERTEX_BASE_URL, which no configuration check sees.
    "setting": "Check the variable the line names (the service's: systemctl show -p "
    "Environment live-appliance): the Live API's address, http(s)://host[:port], a port "
    "up to 65535; unset, the box uses Google's.",
    # The service answered the turn, and said why it said nothing (turnCompleteReason): a
    # safety block or a rejected response, but for the two reasons that refuse nothing.
    "turn ended": "The service is up and refused this turn for the reason given: check "
    "[live] model, system_instruction and the [tools] enabled.",
    NEED_MORE_INPUT: "The service is up and waits for more from the person: it took the "
    "test turn for an unfinished one, and refused nothing. Try again; if it keeps waiting, "
    "check [live] system_instruction.",
    MALFORMED_FUNCTION_CALL: "The service is up; the model answered with a tool call it "
    "could not make: check the [tools] enabled and [live] system_instruction.",
    "setup": "Try again in a minute; if it keeps failing, the service may be down "
    "or [live] base_url may point at the wrong place.",
}


def tls_context() -> ssl.SSLContext:
    """The same trust the SDK uses: SSL_CERT_FILE (and SSL_CERT_DIR), else certifi."""
    import certifi

    return ssl.create_default_context(
        cafile=os.environ.get("SSL_CERT_FILE", certifi.where()),
        capath=os.environ.get("SSL_CERT_DIR"),
    )


def _unusable_trust(exc: OSError) -> tuple[str, str]:
    """What is wrong with the CA file or directory the environment names, and the fix: it
    was said as "TLS: network: No such file or directory", a captive portal's fix first
    (the rig's pasted SSL_CERT_FILE outliving its server, say)."""
    named = " ".join(
        f"{name}={value}"
        for name in ("SSL_CERT_FILE", "SSL_CERT_DIR")
        if (value := os.environ.get(name))
    )
    why = exc.strerror or str(exc)
    return (
        f"the CA certificates cannot be loaded ({named or 'certifi'}): {why}",
        "Unset SSL_CERT_FILE and SSL_CERT_DIR, or point them at a CA bundle "
        "(/etc/ssl/certs/ca-certificates.crt).",
    )


class LayerFailed(Exception):
    """One layer failed: `reason` names it, `fix` is what the owner should do."""

    def __init__(self, layer: str, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.layer, self.reason, self.fix = layer, reason, fix


def _fix(layer: str, code: object, host: str, port: int) -> str:
    """The fix for the failure `code` names in the setup, in TLS (the clock, or the network
    answering for the service) and wherever no route was found; else the layer's."""
    if (layer.startswith("Live") or layer == "TLS" or code == NO_ROUTE) and code in FIXES:
        return str(FIXES[code])
    return str(FIXES.get(layer, FIXES["setup"])).format(host=host, port=port)


async def _layer(
    layer: str,
    what: Callable[[], Awaitable[T]],
    seconds: float,
    host: str,
    port: int,
    *,
    timed_by_step: bool = False,
) -> T:
    """Await one layer's step within `seconds`; LayerFailed names the layer if it fails.
    `timed_by_step`: the step keeps that time itself, and names what ran out of it."""
    try:
        async with asyncio.timeout(None if timed_by_step else seconds):
            return await what()
    except TimeoutError as exc:
        reason = f"{layer}: no answer from {host}:{port} in {seconds:g} s"
        if layer == "DNS":  # the resolver's silence, not the host's (the daemon's words)
            reason = f"DNS: the resolver did not answer for {host} in {seconds:g} s"
        raise LayerFailed(layer, reason, _fix(layer, None, host, port)) from exc
    except Exception as exc:
        text = describe_failure(exc)
        reason = text if text.startswith(f"{layer}:") else f"{layer}: {text}"
        # The Gemini API refuses a key with 1007, the code of a setting refused.
        code = CLOSE_POLICY if refuses_key(exc) else getattr(exc, "code", None)
        if blames_the_clock(exc):
            code = "clock"
        elif token_server_unreached(exc):
            code = "token server"
        elif failure_fields(exc)["LIVE_FAILURE"] == "proxy":  # 407 is no key refused
            code = "proxy"
        elif isinstance(exc, ssl.SSLError):  # behind HTTPS_PROXY, TLS is first shaken at setup
            code = TLS_CLOCK if _out_of_its_dates(exc) else "TLS"
        elif isinstance(exc, OSError) and exc.filename is not None:
            code = "file"
        elif no_route(exc):
            code = NO_ROUTE
        elif code is None and is_refusal(exc):
            code = "credentials"
        raise LayerFailed(layer, reason, _fix(layer, code, host, port)) from exc


async def _open_close(host: str, port: int, tls: ssl.SSLContext | None) -> None:
    _, writer = await asyncio.open_connection(
        host, port, ssl=tls, server_hostname=host if tls else None
    )
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


async def _through(cfg: Config, step: Awaitable[object]) -> None:
    """`step`, its network failure the proxy's when one carries the connection."""
    try:
        await step
    except OSError as exc:
        raise through_proxy(cfg, exc) from exc


async def check_network(ctx: Context) -> Result:
    """Resolve, connect, shake hands, then open a real session (and, with --turn, talk).
    Behind HTTPS_PROXY the box resolves and connects to the proxy, as the daemon does (it
    may know no outside names at all); TLS then goes through the tunnel, at setup."""
    cfg = ctx.cfg
    try:
        host, port = endpoint(cfg)
    except AddressUnusable as exc:
        return Result("network", Status.FAIL, describe_failure(exc), FIXES["setting"])
    where = {"host": host, "port": port}
    timeout = cfg.live.connect_timeout_s
    loop = asyncio.get_running_loop()
    race_addresses(loop)  # as the daemon connects
    try:
        proxy = usable_proxy(cfg)
    except InvalidProxy as exc:
        return Result("network", Status.FAIL, describe_failure(exc), FIXES["proxy"],
                      data=where | {"layer": "proxy"})
    try:
        tls = tls_context()
    except OSError as exc:  # no file there, a directory, no certificate in it (SSLError)
        return Result("network", Status.FAIL, *_unusable_trust(exc), data=where | {"layer": "TLS"})
    near, near_port = proxy or (host, port)
    steps = {
        "DNS": lambda: _through(cfg, loop.getaddrinfo(near, near_port, type=socket.SOCK_STREAM)),
        "TCP": lambda: _through(cfg, _open_close(near, near_port, None)),
    }
    if proxy is None:
        steps["TLS"] = lambda: _open_close(host, port, tls)
    ms: dict[str, float] = {}
    try:
        for layer, step in steps.items():
            started = time.monotonic()
            await _layer(layer, step, timeout, near, near_port)
            ms[layer] = _since(started)
        way = f" through the proxy {near}:{near_port}" if proxy else ""
        reached = f"{host}:{port}{way}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items())
        if cfg.api_key is None and cfg.live.backend == "gemini":
            barred = config_mod.installed_key_barred()  # the box has one: root's to read
            return Result(
                "network",
                Status.WARN,
                f"{reached}; Live setup not tried: "
                + ("this user may not read the box's key" if barred else "no API key"),
                "sudo live-appliance doctor network, to sign in with the box's key."
                if barred
                else "Give the daemon an API key (see the key check).",
                data=where | {"ms": ms},
            )
        await _session(ctx, ms, host, port)
    except LayerFailed as failed:
        fix = failed.fix
        if refuses_token(failed.__cause__, cfg.api_key):
            fix = FIXES["token"].format(source=cfg.api_key_source)
        return Result(
            "network",
            Status.FAIL,
            failed.reason,
            fix,
            data=where | {"ms": ms, "layer": failed.layer},
        )
    measured = f"{reached}, Live setup {ms['setup']:.0f} ms ({cfg.live.model})"
    if "first_reply" in ms:
        measured += f", first reply audio {ms['first_reply']:.0f} ms"
    return Result("network", Status.PASS, measured, data=where | {"ms": ms})


def _out_of_its_dates(exc: ssl.SSLError) -> bool:
    """The certificate was refused for its dates: by the box's clock, most often."""
    if not isinstance(exc, ssl.SSLCertVerificationError):
        return False
    return out_of_its_dates(exc.verify_message or "")


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


async def _session(ctx: Context, ms: dict[str, float], host: str, port: int) -> None:
    """Open a session as the daemon does; with --turn, one text turn. Times go into `ms`."""
    from device.live.client import open_session, run_turn

    cfg = ctx.cfg
    async with contextlib.AsyncExitStack() as stack:
        started = time.monotonic()
        session = await _layer(
            "Live setup",
            lambda: open_session(stack, cfg),
            cfg.live.connect_timeout_s,
            host,
            port,
            timed_by_step=True,
        )
        ms["setup"] = _since(started)
        if not ctx.options.turn:
            return
        longest = cfg.conversation.longest_reply_s
        reply = await _layer(
            "Live turn",
            lambda: run_turn(session, TURN_TEXT, None, longest),
            TURN_TIMEOUT_S,
            host,
            port,
        )
        if reply.first_audio_s is None and reply.end_reason:
            reason = f"Live turn: the service ended it without a word ({reply.end_reason})"
            fix = FIXES.get(reply.end_reason, FIXES["turn ended"])
            raise LayerFailed("Live turn", reason, fix)
        if reply.first_audio_s is None:
            reason = "Live turn: the reply had no audio"
            raise LayerFailed("Live turn", reason, _fix("setup", None, host, port))
        ms["first_reply"] = round(reply.first_audio_s * 1000, 1)
