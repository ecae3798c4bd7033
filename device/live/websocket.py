"""The websocket under the SDK's Live session, reached past the SDK's public API: to
ping it, abort it, bound its buffers and its close, and ask whether it is still
busy sending.

google-genai offers none of these; each degrades to the SDK's own behaviour when a
newer SDK moves what they rely on (`sdk_internals_missing` says what, at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

from google.genai.live import AsyncSession
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from device.live.inbound import fast_path_possible

log = logging.getLogger(__name__)

#: Unsent bytes the kernel may hold for a connection (TCP_NOTSENT_LOWAT): about one
#: second of audio. Beyond it a slow link backs up into the outbox, where the audio
#: bound, the journal's warning and the newest-frame rule can see it.
UNSENT_LIMIT = 32 * 1024
#: What this device holds unread while the read-ahead (`device.live.read_ahead`) is full: the
#: kernel's receive buffer (SO_RCVBUF; the kernel doubles it for its bookkeeping) and
#: the TLS layer's buffer of decrypted bytes (asyncio's default is 256 KiB). About a
#: second of reply audio each (base64 is 64 KB a second); the rest stays with the
#: service, and its interrupted or turnComplete comes no later than this behind.
UNREAD_LIMIT = 64 * 1024
#: What the box may hold unsent in user space before it gives up on a connection. Its own
#: sends wait at websockets' write limit (32 KiB), past it by one message at most (a camera
#: frame, a tool's answer, the busy answer to a flood of calls: tens of KB). Only what
#: websockets writes by itself grows it further: a pong for every ping the service sends,
#: whatever the write side's flow control says, without end from one that reads nothing.
UNSENT_HELD_LIMIT = 16 * 2**20
#: What the box sent and the service's end has not acknowledged this long ends the
#: connection (TCP_USER_TIMEOUT). A link that died without a word (the Wi-Fi dropped, a
#: router rebooted, a NAT forgot the connection) takes the release's activityEnd, or the
#: last words, and says nothing: the box showed "thinking" for the whole reply timeout.
#: The service's end acknowledges at once however long the model thinks (Google Search,
#: tools), so a slow reply is no verdict, as a ping's late pong would be.
#: 8 s, not less: TCP retransmits at 0.2, 0.6, 1.4, 3.0 and 6.2 s, and the last one before
#: the limit is what carries a Wi-Fi hiccup's end (a roam, a burst of interference) through.
UNACKED_LIMIT_S = 8
#: While nothing is in flight, the kernel probes a link that brought nothing this long
#: (TCP keepalive, every KEEPALIVE_PROBE_S): a link that dies while the model thinks
#: leaves a probe unacknowledged, which UNACKED_LIMIT_S then ends. A few bytes a second
#: on a quiet link, and no work for the box: the kernel sends and answers them.
KEEPALIVE_IDLE_S = 2
KEEPALIVE_PROBE_S = 1
SIOCOUTQNSD = 0x894B  # Linux: bytes in a TCP socket's send queue not yet sent


def websocket_of(session: AsyncSession) -> Any:
    """The websockets connection under an SDK session, or None.

    The SDK offers no public way to ping or to abort; its `AsyncSession` keeps the
    `websockets` ClientConnection as `_ws`. Without it the device still works, with
    liveness judged by messages alone and closes bounded by a timeout.
    """
    ws = getattr(session, "_ws", None)
    return ws if hasattr(ws, "ping") and hasattr(ws, "transport") else None


def sdk_internals_missing() -> list[str]:
    """What `websocket_of`, the buffer bounds and `inbound` rely on inside google-genai and
    websockets that the installed versions no longer have, in words; empty when all is there.

    Checked without a connection: an `AsyncSession` made around a stand-in must keep it
    as `_ws` and read through `_receive()`, the SDK must connect with websockets' asyncio
    client, whose connections have `ping` and get their `transport` in `connection_made`,
    and which builds them from the class it is given (`BoundedClose`).
    """
    import websockets.asyncio.client as ws_client
    from google.genai import live

    missing = []
    stand_in = object()
    try:
        session = live.AsyncSession(api_client=None, websocket=stand_in)  # type: ignore[arg-type]
        kept = getattr(session, "_ws", None)
    except Exception as exc:  # a constructor that wants more than it did
        kept = exc
    if kept is not stand_in:
        missing.append("google.genai.live.AsyncSession keeps no websocket as _ws")
    if not fast_path_possible():
        missing.append("google.genai.live.AsyncSession has no _receive()")
    if getattr(live, "ws_connect", None) is not ws_client.connect:
        missing.append("google.genai.live connects without websockets.asyncio.client.connect")
    for name in ("ping", "connection_made"):
        if not callable(getattr(ws_client.ClientConnection, name, None)):
            missing.append(f"websockets' ClientConnection has no {name}()")
    if "create_connection" not in inspect.signature(ws_client.connect).parameters:
        missing.append("websockets' connect takes no create_connection")  # BoundedClose
    return missing


def check_sdk_internals() -> None:
    """At start: one journal warning if a newer SDK moved what the link reaches into."""
    missing = sdk_internals_missing()
    if missing:
        log.warning(
            "the installed google-genai or websockets changed (%s): liveness is judged by "
            "messages alone, closes wait for a timeout, socket buffers keep their defaults, "
            "and microphone and reply audio go through the SDK's slower models",
            "; ".join(missing),
        )


def bound_buffers(session: AsyncSession) -> None:
    """At most UNSENT_LIMIT unsent bytes in the kernel, and UNREAD_LIMIT read ahead (twice:
    the kernel's and the TLS layer's) while the receiver waits for room in the read-ahead."""
    ws = websocket_of(session)
    if ws is None:
        return
    with contextlib.suppress(AttributeError, ValueError):  # a transport without TLS or limits
        ws.transport.set_read_buffer_limits(high=UNREAD_LIMIT)
    sock = ws.transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UNREAD_LIMIT)
    if hasattr(socket, "TCP_NOTSENT_LOWAT"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, UNSENT_LIMIT)


def bound_unacked(session: AsyncSession) -> None:
    """End the connection once what the box sent stays unacknowledged UNACKED_LIMIT_S, and
    probe a quiet link so that a silent death shows there too (a kernel or transport
    without these options keeps the liveness watch's slower verdict)."""
    ws = websocket_of(session)
    sock = None if ws is None else ws.transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_USER_TIMEOUT"):
        return
    options = [
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNACKED_LIMIT_S * 1000),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_PROBE_S),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    with contextlib.suppress(OSError):
        for level, name, value in options:
            sock.setsockopt(level, name, value)


def watch_unsent(session: AsyncSession, overrun: Callable[[int], None]) -> None:
    """Tell `overrun` the bytes held unsent once they pass UNSENT_HELD_LIMIT, as what comes
    in is read (websockets answers the pings in it there)."""
    ws = websocket_of(session)
    if ws is None:
        return
    received = ws.data_received

    def data_received(data: bytes) -> None:
        received(data)
        held = ws.transport.get_write_buffer_size()
        if held > UNSENT_HELD_LIMIT:
            overrun(held)

    ws.data_received = data_received


class BoundedClose(ClientConnection):
    """websockets' client connection, whose close ends within `close_timeout` however it
    began (given to `websockets.connect` as `create_connection`).

    websockets answers the service's close frame at once and gives the rest of the close
    `close_timeout`, but enforces it only while the box sends. A service that stopped
    reading never sees the answer and waits (10 s, websockets' own timeout, on the rig):
    a box with nothing to send (in a quiet room, hands-free, or waiting for setupComplete,
    where the SDK only reads) sat on the dead connection as long, or until connect_timeout_s
    blamed the service's silence. The close frame still says why (1011 in the journal).
    """

    _close_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        timeout = self.close_timeout
        if self._close_timer is None and timeout is not None and self.state is State.CLOSING:
            self._close_timer = self.loop.call_later(timeout, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        super().connection_lost(exc)


def link_busy(session: AsyncSession) -> bool:
    """Bytes handed over earlier are still on this device (in user space or the kernel)."""
    ws = websocket_of(session)
    if ws is None:
        return False
    if ws.transport.get_write_buffer_size() > 0:
        return True
    sock = ws.transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        unsent = fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0")
    except OSError:
        return False
    return int.from_bytes(unsent, sys.byteorder, signed=True) > 0
