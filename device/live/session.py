"""The Live session on google-genai: one conversation across as many connections as it takes.

A session opens on the first press and lives until the appliance closes it. Its
connection may end for many reasons: the service's `goAway` before its ten
minutes are up, a drop on flaky Wi-Fi, a stall, a close with 1011. The session
task reconnects with backoff and jitter and resumes with the newest resumable
handle, so the person keeps talking; the outbox holds what they say meanwhile.
If the session cannot be resumed it starts a new one and says so (an event the
state machine turns into an earcon). Refusals (1007/1008) and a network that
stays away end the session with one clear journal line. Nothing here decides
what the LEDs show: everything becomes an event for the state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from google.genai.live import AsyncSession

from device.config import Config
from device.live.connection import Connection, Hooks, SwitchNow
from device.live.errors import (
    describe_failure,
    is_busy_session,
    is_refusal,
    is_unknown_handle,
)
from device.live.setup import connect_config, make_client
from device.live.turn import WireTurn
from device.outbox import Item, Outbox
from device.states import (
    ConnectFailed,
    ConnectionLost,
    Event,
    Reconnected,
    Reconnecting,
    SetupComplete,
)
from device.tasks import stop_task

if TYPE_CHECKING:
    from device.tools import ToolBox

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
#: Resuming is refused with 1011 while the service still holds the old connection;
#: after this many refusals in a row a new session is better than more waiting.
BUSY_RETRIES = 3


class LiveLink:
    """The device's side of one Live session at a time."""

    def __init__(
        self,
        cfg: Config,
        outbox: Outbox,
        on_event: Callable[[Event], None],
        on_audio: Callable[[bytes], None],
        on_sent: Callable[[Item, float], None],
        tools: ToolBox | None = None,
    ) -> None:
        self._cfg = cfg
        self._outbox = outbox
        self._on_event = on_event
        self._hooks = Hooks(on_event, on_audio, on_sent, self._keep_handle)
        self._tools = tools
        self._client = None
        self._task: asyncio.Task[None] | None = None
        self._connection: Connection | None = None
        self._handle: str | None = None
        self._turn = WireTurn()
        self._had_turns = False
        self.session_id: str | None = None
        self.connections = 0  # connections opened in this process, for status and tests

    @property
    def is_open(self) -> bool:
        return self._task is not None and not self._task.done()

    def prepare(self) -> None:
        """Build the client (and its TLS context) and the setup now: the first press does not
        wait for them, and a setting that cannot work (a persona file) fails at start."""
        if self._client is None:
            self._client = make_client(self._cfg)
            connect_config(self._cfg, None)

    def open(self) -> None:
        """Start a session unless one is running; returns at once."""
        if not self.is_open:
            self._handle = None
            self._turn = WireTurn()
            self._had_turns = False
            self._task = asyncio.create_task(self._run(), name="live-session")

    async def close(self) -> None:
        """End the session: stop its task, then close its connection normally (1000)."""
        task, self._task = self._task, None
        await stop_task(task)
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close(graceful=True)
        self.session_id = None

    def _keep_handle(self, handle: str) -> None:
        self._handle = handle
        self._had_turns = True

    # -- the session task -----------------------------------------------------------------

    async def _run(self) -> None:
        """The session, across connections; a bug here ends it like a lost connection."""
        try:
            await self._session()
        except Exception as exc:
            log.exception("the session failed")
            self._on_event(ConnectionLost(describe_failure(exc)))

    async def _session(self) -> None:
        self.prepare()
        try:
            connection = await self._connect()
        except Exception as exc:
            reason = describe_failure(exc)
            log.error("cannot connect: %s", reason, extra={"LIVE_ERROR": reason})
            self._on_event(ConnectFailed(reason))
            return
        self._on_event(SetupComplete())
        while True:
            ended, reply_cut = await self._serve(connection)
            if isinstance(ended, SwitchNow):
                log.info("switching to a new connection: %s", ended)
                if reply_cut:  # no quiet moment came: the reply in flight is gone
                    self._on_event(Reconnecting("the service moved the conversation"))
            else:
                reason = describe_failure(ended)
                log.warning("connection lost: %s", reason, extra={"LIVE_ERROR": reason})
                if is_refusal(ended):
                    self._on_event(ConnectionLost(reason))
                    return
                self._on_event(Reconnecting(reason))
            try:
                connection, history_lost = await self._reconnect()
            except Exception as exc:
                reason = describe_failure(exc)
                log.error("cannot reconnect: %s", reason, extra={"LIVE_ERROR": reason})
                self._on_event(ConnectionLost(reason))
                return
            self._on_event(Reconnected(history_lost=history_lost))

    async def _serve(self, connection: Connection) -> tuple[Exception, bool]:
        """Serve until the connection ends; close it. Why it ended, and whether a reply
        was in flight then (it will not come on the next connection)."""
        self._connection = connection  # close() finishes the job if we are cancelled
        ended = await connection.run()
        await connection.close(graceful=isinstance(ended, SwitchNow))
        self._connection = None
        reply_cut = self._turn.in_flight
        self._turn.lost()
        return ended, reply_cut

    async def _connect(self) -> Connection:
        """Open one connection (resuming when there is a handle) within the connect timeout."""
        assert self._client is not None
        setup = connect_config(self._cfg, self._handle)
        started = time.monotonic()
        stack = contextlib.AsyncExitStack()
        try:
            async with asyncio.timeout(self._cfg.live.connect_timeout_s):
                session: AsyncSession = await stack.enter_async_context(
                    self._client.aio.live.connect(model=self._cfg.live.model, config=setup)
                )
        except BaseException:
            await stack.aclose()
            raise
        self.connections += 1
        self.session_id = session.session_id
        setup_ms = (time.monotonic() - started) * 1000
        log.info(
            "%s in %.0f ms",
            "session resumed" if self._handle else "session ready",
            setup_ms,
            extra={"LIVE_SESSION": self.session_id or "", "LIVE_SETUP_MS": round(setup_ms)},
        )
        return Connection(
            session, stack, self._cfg.live, self._outbox, self._hooks, self._turn, self._tools
        )

    async def _reconnect(self) -> tuple[Connection, bool]:
        """Connect again with backoff and jitter; (connection, whether history was lost)."""
        deadline = time.monotonic() + self._cfg.live.reconnect_for_s
        delay, busy, history_lost = BACKOFF_FIRST_S, 0, False
        while True:
            try:
                return await self._connect(), history_lost
            except Exception as exc:
                busy = busy + 1 if is_busy_session(exc) else 0
                if self._handle and (is_unknown_handle(exc) or busy >= BUSY_RETRIES):
                    log.warning(
                        "cannot resume the session (%s): starting a new one", describe_failure(exc)
                    )
                    self._handle, history_lost, busy = None, self._had_turns, 0
                    continue
                if is_refusal(exc) or time.monotonic() + delay > deadline:
                    raise
                wait = delay * random.uniform(0.5, 1.0)
                log.info("reconnecting in %.1f s: %s", wait, describe_failure(exc))
                await asyncio.sleep(wait)
                delay = min(delay * 2, BACKOFF_MAX_S)

