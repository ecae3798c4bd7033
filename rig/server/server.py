"""The local Live API server: TLS WebSocket endpoint, sessions, test controls.

``LiveServer`` runs inside the caller's event loop; ``ServerThread`` runs the same
server on a private loop in a background thread for synchronous callers (a test
driving the daemon as a subprocess, a benchmark). Importing this module starts
nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Self
from uuid import uuid4

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from device.live.wire import CLOSE_INTERNAL, CLOSE_INVALID, CLOSE_POLICY, REPLY_RATE
from rig.server.connection import LiveConnection, SessionState
from rig.server.log import ConnectionRecord, Entry, ServerLog
from rig.server.setup import DEFAULT_MODELS
from rig.server.tls import LocalCA
from rig.server.wire import ProtocolError, parse_target

if TYPE_CHECKING:
    import trustme

DEFAULT_API_KEY = "sim-api-key"
DEFAULT_EPHEMERAL_TOKEN = "auth_tokens/sim-ephemeral-token"
DEFAULT_BEARER_TOKEN = "sim-bearer-token"
BAD_KEY_REASON = "API key not valid. Please pass a valid API key."
TOKEN_SPENT_REASON = "The ephemeral token has no uses left."
# An unknown or expired resumption handle is an invalid argument: close 1007.
UNKNOWN_HANDLE_CODE = CLOSE_INVALID
# A limited uplink keeps the server's own receive buffers (kernel, TLS) this small and reads
# at most this many messages ahead, so that what a client sends backs up in the client, as
# behind a slow link, instead of waiting unseen in the server.
UPLINK_BUFFER_BYTES = 4096
UPLINK_READ_AHEAD = 1


@dataclass
class ServerConfig:
    """Behaviour knobs; tests may change them while the server runs."""

    api_keys: set[str] = field(default_factory=lambda: {DEFAULT_API_KEY})
    ephemeral_tokens: set[str] = field(default_factory=lambda: {DEFAULT_EPHEMERAL_TOKEN})
    bearer_tokens: set[str] = field(default_factory=lambda: {DEFAULT_BEARER_TOKEN})
    models: set[str] = field(default_factory=lambda: set(DEFAULT_MODELS))
    pace: float = 1.0  # reply speed: 1 = real time, 0 = as fast as possible
    reply_seconds: float = 1.2
    # What the replies say: None is a tone per turn; PCM (s16le at reply_rate, repeated
    # to reply_seconds) is a recorded voice, for what a tone cannot stand in for (echo).
    voice: bytes | None = None
    chunk_seconds: float = 0.2
    reply_rate: int = REPLY_RATE  # the reply's sample rate, named in its MIME type
    odd_parts: bool = False  # reply parts of an odd length: a sample split across two parts
    other_parts: bool = False  # beside each audio part, a text part and an image part
    think_seconds: float = 0.0  # between the end of the user's turn and the first reply audio
    # Before each tool call, the model's first words ("let me look that up") this long, in
    # chunk_seconds parts sent at once, and their own turnComplete after the call: the
    # Live API's order around a tool. 0: the call alone.
    tool_preamble_seconds: float = 0.0
    # Each reply in two halves, as a model that reasons on in the background: the first ends
    # with turnComplete and interactionStatus IN_PROGRESS, the second comes this much later
    # and ends IDLE. None: one reply, no interactionStatus.
    more_after_s: float | None = None
    # The model lets this many user turns (any connection) pass without a word, as it now
    # and then does with an interruption: the next turn past each one is answered again.
    unanswered_turns: int = 0
    setup_delay: float = 0.0
    refuse_setup: tuple[int, str] | None = None  # close every setup with (code, reason)
    close_after_setup: tuple[int, str] | None = None  # complete setup, then close with these
    # The service's clock for lifetimes and limits: 60 makes a 10-minute connection 10 s.
    time_scale: float = 1.0
    connection_lifetime_s: float | None = None  # goAway, then close 1000 (service seconds)
    go_away_before_s: float = 60.0  # how long before the end goAway comes (service seconds)
    session_limits: bool = False  # end sessions without compression at 15 min (2 with video)
    # A slow link from the client: each message is handled only once its bytes would have
    # crossed a link this fast (None: at once). Set it before start(): the server then keeps
    # its own receive buffers small, so the client's sends wait as behind a slow uplink.
    uplink_bytes_per_s: float | None = None
    # New sessions each ephemeral token may open, as the service counts its `uses` (its
    # default is 1); resuming a session uses none. None: no limit.
    token_uses: int | None = None


def parse_duration(value: str | float) -> tuple[float, str]:
    """'10s' or 10 -> (10.0, '10s'): seconds and the wire spelling."""
    seconds = float(value.removesuffix("s")) if isinstance(value, str) else float(value)
    return seconds, f"{seconds:g}s"


class LiveServer:
    """A Live API server on 127.0.0.1 over TLS, speaking PROTOCOL.md."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 api_key: str = DEFAULT_API_KEY, ca: trustme.CA | None = None,
                 **config: Any) -> None:
        self.host, self.port = host, port
        self.api_key = api_key
        self._given_ca = ca  # a CA kept from an earlier server, or None for a new one
        config.setdefault("api_keys", {api_key})
        self.config = ServerConfig(**config)
        self.log = ServerLog()
        self.sessions: dict[str, SessionState] = {}
        self._tool_calls: deque[dict[str, Any]] = deque()
        self._token_uses: dict[str, int] = {}  # new sessions each ephemeral token opened
        self._live: dict[int, LiveConnection] = {}
        self._ids = itertools.count(1)
        self._ca: LocalCA | None = None
        self._server: Server | None = None

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Make the CA and listen; ``base_url`` is valid afterwards."""
        self.log.bind()
        self._ca = LocalCA(ca=self._given_ca)
        listen: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.config.uplink_bytes_per_s:
            listen = {"sock": _small_buffer_listener(self.host, self.port),
                      "max_queue": UPLINK_READ_AHEAD}
        self._server = await serve(
            self._handler, ssl=self._ca.server_context(), process_request=self._check_path,
            ping_interval=None, max_size=None, **listen,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every connection (1001), stop listening, delete the CA file."""
        if self._server is not None:
            self.resume_all()  # a stalled connection could not finish its closing handshake
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._ca is not None:
            self._ca.cleanup()
            self._ca = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """What to give the SDK as ``http_options.base_url``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def ca_file(self) -> str:
        """PEM of the CA that signed the server certificate (for ``SSL_CERT_FILE``)."""
        assert self._ca is not None, "server not started"
        return str(self._ca.ca_file)

    def client_env(self) -> dict[str, str]:
        """Environment variables that point any Live API client here."""
        return {"GOOGLE_GEMINI_BASE_URL": self.base_url, "SSL_CERT_FILE": self.ca_file,
                "GEMINI_API_KEY": self.api_key}

    def client_ssl_context(self) -> Any:
        """An SSLContext trusting the server (for ``async_client_args={'ssl': ...}``)."""
        assert self._ca is not None, "server not started"
        return self._ca.client_context()

    # ---- handshake and auth ------------------------------------------------------------

    def _check_path(self, ws: ServerConnection, request: Request) -> Response | None:
        try:
            parse_target(request.path)
        except ProtocolError as err:
            return ws.respond(HTTPStatus.NOT_FOUND, err.reason + "\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None  # handlers run after the handshake
        path, endpoint, _ = parse_target(request.path)
        record = ConnectionRecord(next(self._ids), path, endpoint, dict(request.headers))
        self.log.add_connection(record)
        if self.config.uplink_bytes_per_s:
            # asyncio's TLS transport has it; typeshed's Transport does not say so.
            ws.transport.set_read_buffer_limits(high=UPLINK_BUFFER_BYTES)  # type: ignore[attr-defined]
        conn = LiveConnection(self, ws, record)
        self._live[record.id] = conn
        try:
            await conn.run()
        finally:
            del self._live[record.id]

    def check_auth(self, record: ConnectionRecord, request: Request) -> str:
        """Raise 1008 unless the request carries a credential this server accepts; the
        credential."""
        _, endpoint, query = parse_target(request.path)
        headers: Headers = request.headers
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if endpoint == "gemini":
            key = headers.get("x-goog-api-key") or next(iter(query.get("key", [])), "")
            ok, record.auth = key in self.config.api_keys, "api_key"
        elif endpoint == "constrained":
            ok = scheme == "Token" and token in self.config.ephemeral_tokens
            key, record.auth = token, "ephemeral_token"
        else:
            ok, record.auth = scheme == "Bearer" and token in self.config.bearer_tokens, "bearer"
            key = token
        if not ok:
            raise ProtocolError(CLOSE_POLICY, BAD_KEY_REASON)
        return key

    def use_token(self, token: str) -> None:
        """A new session on an ephemeral token: 1008 once its uses are spent."""
        used = self._token_uses.get(token, 0)
        if self.config.token_uses is not None and used >= self.config.token_uses:
            raise ProtocolError(CLOSE_POLICY, TOKEN_SPENT_REASON)
        self._token_uses[token] = used + 1

    # ---- sessions and tool calls ----------------------------------------------------------

    def resume(self, handle: str) -> SessionState:
        """The session a handle refers to; 1007 if unknown or past its length limit."""
        state = self.sessions.get(handle)
        if state is None:
            raise ProtocolError(
                UNKNOWN_HANDLE_CODE, "Invalid argument: session resumption handle not found."
            )
        if state.expired:
            raise ProtocolError(UNKNOWN_HANDLE_CODE, "Invalid argument: the session has ended.")
        return state

    def claim(self, state: SessionState, conn_id: int) -> None:
        """Make `conn_id` serve the session; 1011 while another open connection still does."""
        owner = self._live.get(state.owner) if state.owner is not None else None
        if owner is not None and owner.id != conn_id and owner.is_open:
            raise ProtocolError(
                CLOSE_INTERNAL, "Internal error: the session is still served by another connection."
            )
        state.owner = conn_id

    def new_handle(self, state: SessionState) -> str:
        """Issue a fresh handle for ``state``."""
        handle = f"sim-{uuid4().hex}"
        self.sessions[handle] = state
        return handle

    def queue_tool_call(self, name: str, args: dict[str, Any] | None = None) -> str:
        """Answer the next user turn (any connection) with this tool call; returns its id."""
        call_id = f"call-{uuid4().hex[:12]}"
        self._tool_calls.append({"id": call_id, "name": name, "args": args or {}})
        return call_id

    def next_tool_call(self) -> dict[str, Any] | None:
        """Pop the next queued tool call, if any."""
        return self._tool_calls.popleft() if self._tool_calls else None

    async def cancel_tool_call(self, call_id: str) -> None:
        """Send ``toolCallCancellation`` for a call still awaiting its response."""
        for conn in list(self._live.values()):
            if call_id in conn.pending_tools:
                await conn.cancel_tool_calls([call_id])

    # ---- faults and control (call on the server's loop) ----------------------------------

    def connection(self, conn: int | None = None) -> LiveConnection:
        """The live connection ``conn`` (default: the newest)."""
        if conn is None:
            if not self._live:
                raise LookupError("no open connection")
            return self._live[max(self._live)]
        return self._live[conn]

    def _targets(self, conn: int | None) -> Iterable[LiveConnection]:
        return list(self._live.values()) if conn is None else [self.connection(conn)]

    async def send_go_away(self, time_left: str | float = "10s", conn: int | None = None) -> None:
        """Send goAway to all (or one) connection(s); close them 1000 when time is up."""
        seconds, spelled = parse_duration(time_left)
        for target in self._targets(conn):
            await target.go_away(seconds, spelled)

    async def close_all(self, code: int = 1000, reason: str = "") -> None:
        """Close every open connection now with ``code`` and ``reason``."""
        await asyncio.gather(*(c.close(code, reason) for c in self._targets(None)))

    async def close(self, conn: int, code: int = 1000, reason: str = "") -> None:
        """Close one connection."""
        await self.connection(conn).close(code, reason)

    def drop(self, conn: int | None = None) -> None:
        """Abort the TCP connection(s) without a close frame."""
        for target in self._targets(conn):
            target.drop()

    def stall(self, seconds: float | None = None, conn: int | None = None) -> None:
        """Stop reading and sending on connection(s) for ``seconds`` or until ``resume()``."""
        for target in self._targets(conn):
            target.stall(seconds)

    def resume_all(self, conn: int | None = None) -> None:
        """End a stall."""
        for target in self._targets(conn):
            target.resume()

    async def send_raw(self, frame: str | bytes, conn: int | None = None) -> None:
        """Send a frame verbatim (junk, unknown messages) to connection(s)."""
        for target in self._targets(conn):
            await target.send_raw(frame)

    # ---- log conveniences ----------------------------------------------------------------

    def kinds(self, conn: int | None = None, direction: str | None = None) -> list[str]:
        """Kinds of logged messages, in order."""
        return self.log.kinds(conn, direction)

    def audio_in(self, conn: int | None = None) -> bytes:
        """All PCM received, concatenated."""
        return self.log.audio_in(conn)

    def entries(self, conn: int | None = None, direction: str | None = None) -> list[Entry]:
        """Logged messages, in order."""
        return self.log.entries(conn, direction)

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 5.0  # noqa: ASYNC109
    ) -> None:
        """Wait (on this loop) until ``predicate()`` holds; TimeoutError otherwise."""
        await self.log.wait_for(predicate, timeout)


def _small_buffer_listener(host: str, port: int) -> socket.socket:
    """A listening socket whose connections advertise a small receive window from the start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UPLINK_BUFFER_BYTES)
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


class ServerThread:
    """A ``LiveServer`` on its own event loop in a background thread.

    Use as a context manager. Read ``log`` from any thread; run control methods on
    the server's loop with ``call`` (e.g. ``thread.call(thread.server.close_all, 1011)``).
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.server: LiveServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-sim-server", daemon=True)

    def start(self) -> None:
        """Start the thread and wait until the server listens."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop the server and join the thread."""
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            self.server = LiveServer(**self._kwargs)
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.server.stop()

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 10.0, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the server's loop (awaiting it if async)."""
        assert self._loop is not None, "server thread not started"
        if threading.current_thread() is self._thread:
            raise RuntimeError("ServerThread.call from the server's own loop would deadlock")

        async def invoke() -> Any:
            result = fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(timeout)

    @property
    def log(self) -> ServerLog:
        """The server's log (thread-safe to read)."""
        return self._started().log

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate()`` holds (evaluated under the log's lock)."""
        self.log.wait_for_sync(predicate, timeout)

    @property
    def base_url(self) -> str:
        """The server's base URL (see ``LiveServer.base_url``)."""
        return self._started().base_url

    @property
    def ca_file(self) -> str:
        """The CA file for ``SSL_CERT_FILE``."""
        return self._started().ca_file

    @property
    def api_key(self) -> str:
        """The API key the server accepts."""
        return self._started().api_key

    def client_env(self) -> dict[str, str]:
        """Environment variables that point a client (e.g. the daemon subprocess) here."""
        return self._started().client_env()

    def _started(self) -> LiveServer:
        assert self.server is not None, "server thread not started"
        return self.server
