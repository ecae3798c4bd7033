"""The Live session on google-genai: one conversation across as many connections as it takes.

A session opens on the first press and lives until the appliance closes it. Its
connection may end for many reasons: the service's `goAway` before its ten
minutes are up, a drop on flaky Wi-Fi, a stall, a close with 1011. The session
task reconnects with backoff and jitter (`pacing`: it survives setups that
succeed, so a service that closes every connection at once is not hammered) and
resumes with the newest resumable handle, so the person keeps talking; the
outbox holds what they say meanwhile.
If the session cannot be resumed it starts a new one and says so (an event the
state machine turns into an earcon). Refusals (1007/1008) and a network that
stays away end the session with one clear journal line. Nothing here decides
what the LEDs show: everything becomes an event for the state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from device import logs
from device.config import (
    Config,
    find_api_key,
    key_file_changed_since_start,
    where_to_put_the_key,
)
from device.errors import ConfigError, cut, one_line, quoted, without_credentials
from device.live.endpoint import (
    AddressUnusable,
    race_addresses,
    through_proxy,
    timed_out,
    usable_proxy,
)
from device.live.hooks import Hooks, SpeakerRoom
from device.live.models import sdk_model
from device.live.pacing import Pacing
from device.live.turn import WireTurn, unsaved_limit
from device.outbox import Item, Outbox
from device.states import (
    ConnectFailed,
    ConnectionLost,
    Event,
    Reconnected,
    Reconnecting,
    ReplyDropped,
    SetupComplete,
)
from device.tasks import stop_task

if TYPE_CHECKING:
    from google import genai

    from device.live.connection import Carried, Connection
    from device.live.credentials import Token
    from device.live.setup import Built
    from device.tools import ToolBox

# The SDK (google-genai, pydantic's models of every message) is imported by
# `prepare`, not with this module: 37 MB and a second (several on a Pi Zero) that the
# daemon spends after PortAudio's device scan has let go of what it loaded (see
# device.audio.portaudio), so the two never add up at the peak. Hence the imports
# inside the methods below; every path to them waits for `prepare` first (an import
# on the loop while the thread imports the same module would block the loop).

log = logging.getLogger(__name__)

#: Resuming is refused with 1011 while the service still holds the old connection;
#: after this many refusals in a row, over at least BUSY_FOR_S, a new session is better
#: than more waiting. 1011 is also what a service briefly in trouble answers every
#: setup with: three refusals came within 1.1 s, and an outage of a few seconds threw
#: the conversation's history away. Past BUSY_FOR_S a person waiting (their speech held
#: for `hold_s`) is better served by a fresh session.
BUSY_RETRIES = 3
BUSY_FOR_S = 4.0
#: A session's first connection that fails within QUICK_FAILURE_S, and not for a
#: refusal, is tried once more after FIRST_RETRY_S.
QUICK_FAILURE_S = 2.0
FIRST_RETRY_S = 0.5
#: The service's session id is kept this long: it goes on every line of the session,
#: into `ctl status` and each turn's line, and the service chooses it (`quoted`).
SESSION_ID_LIMIT = 128


class LiveLink:
    """The device's side of one Live session at a time."""

    def __init__(
        self,
        cfg: Config,
        outbox: Outbox,
        on_event: Callable[[Event], None],
        on_sent: Callable[[Item, float], None],
        tools: ToolBox | None = None,
        speaker: SpeakerRoom | None = None,
    ) -> None:
        self._cfg = cfg
        self._outbox = outbox
        self._on_event = on_event
        self._on_sent = on_sent
        self._speaker = speaker
        self._tools = tools
        self._client: genai.Client | None = None
        self._token: Token | None = None  # the client's, on Vertex AI
        self._building: asyncio.Future[Built] | None = None
        self._task: asyncio.Task[None] | None = None
        self._connection: Connection | None = None
        self._handle: str | None = None
        self._turn = _wire_turn(cfg)
        self._carried: Carried | None = None  # a whole reply, still to play (a switch, a drop)
        self._had_turns = False
        self._hooks = Hooks(0, on_event, on_sent, self._keep_handle, speaker)
        self.session_id: str | None = None
        self._own_id = ""  # named at each open(): for a service that gives no id
        self.connections = 0  # connections opened in this process, for status and tests
        self._closing = False  # close() is ending the session task
        self._hurry = asyncio.Event()  # a person started a turn: reconnect without waiting
        self._credentials_reloaded = False  # this session, since a connection succeeded

    @property
    def is_open(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def prepared(self) -> bool:
        """The client is built: a session opened now connects at once."""
        building = self._building
        built = building is not None and building.done() and not _failed(building)
        return self._client is not None or built

    def prepare(self) -> asyncio.Future[Built]:
        """Build the client (and its TLS context; on Vertex AI, loading its credentials),
        the setup and the SDK's reply models in a thread of their own; the future holds
        what was built. Started once (again after a failure); the first session waits.

        Importing the SDK takes a second here and several on a Pi Zero: the daemon says
        READY and serves the button meanwhile (a press that early connects once it is
        done), and the first reply does not wait for the models. Not the loop's pool: a
        stop does not wait for an import (a daemon thread, which exit does not join)."""
        building = self._building
        if building is None or (building.done() and _failed(building)):
            loop = asyncio.get_running_loop()
            building = self._building = loop.create_future()
            thread = threading.Thread(
                target=self._build, args=(loop, building), name="live-prepare", daemon=True
            )
            try:
                thread.start()
            except RuntimeError as exc:  # no thread to be had (TasksMax): a press tries again
                building.set_exception(exc)
        return building

    def _build(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[Built]) -> None:
        """In the thread: the client, or the failure, handed to the loop."""
        try:
            from device.live.setup import build_client, connect_config, warm_up
            from device.live.websocket import check_sdk_internals

            check_sdk_internals()
            outcome: Built | Exception = build_client(self._cfg)
            connect_config(self._cfg, None)
            warm_up()
        except Exception as exc:
            outcome = _proxy_refused(self._cfg) or exc
        except BaseException as exc:  # SystemExit from a library: still an outcome to hand on
            outcome = RuntimeError(f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon stopped
            loop.call_soon_threadsafe(_settle, done, outcome)

    def open(self, session: int) -> None:
        """Start session number `session` unless one is running; returns at once. Every
        event of the session carries its number."""
        if not self.is_open:
            self._closing = False  # a close() cancelled earlier has nothing left to end
            self._handle = None
            self._turn = _wire_turn(self._cfg)
            self._carried = None
            self._had_turns = False
            self._credentials_reloaded = False  # a press may find credentials corrected
            self._own_id = f"box-{uuid.uuid4().hex[:12]}"
            self._hooks = Hooks(
                session, self._on_event, self._on_sent, self._keep_handle, self._speaker
            )
            self._task = asyncio.create_task(self._run(), name="live-session")

    async def close(self) -> None:
        """End the session: stop its task, then close its connection normally (1000)."""
        task, self._task = self._task, None
        self._closing = True
        try:
            await stop_task(task)
        finally:
            if task is not None and not task.done():
                # Cancelled itself (the daemon stops during a hang-up) while the session
                # still ends: it stays told to, for the next close() to wait for.
                self._task = task
            else:
                self._closing = False
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close(graceful=True)
        said_in = logs.SESSION.set(lambda: self.session_id)  # the caller's task is not its
        try:
            self._turn.lost()  # a turn cut short: its words still reach the journal
        finally:
            logs.SESSION.reset(said_in)
        self.session_id = None

    def hurry(self) -> None:
        """A person starts a turn (a press, a text, hands-free an utterance): a reconnect
        waiting out its backoff tries now. The service may well be back, and they are
        waiting; each try still counts towards giving up, and presses and utterances are
        bounded (`UTTERANCE_GAP_S`)."""
        self._hurry.set()

    def supersede_reply(self) -> None:
        """A press or a text turn goes out over the reply: the rest of it is stale."""
        self._turn.supersede()

    def drop_turn(self) -> None:
        """What waited to go out was dropped: the person's turn it would have ended is over."""
        self._turn.drop_turn()

    def drop_whole_reply(self) -> None:
        """Hands-free, the person talks over the reply playing. Once the service has sent
        all of it, it has nothing left to interrupt and answers them instead, so the box
        stops it itself (`ReplyDropped`). Between connections nothing is done: that
        moment passes, and the person is still talking."""
        connection = self._connection
        if connection is not None and connection.drop_whole_reply():
            self._on_event(ReplyDropped(session=self._hooks.session))

    def _keep_handle(self, handle: str) -> None:
        self._handle = handle

    # -- the session task -----------------------------------------------------------------

    async def _run(self) -> None:
        """The session, across connections; a bug here ends it like a lost connection.
        Every line logged in it (and in the tasks it starts) carries its id."""
        logs.SESSION.set(lambda: self.session_id)
        try:
            await self._client_for_new_session()
        except ConfigError as exc:  # no key (yet): the owner's to give
            log.error("no session: %s", exc, extra={"LIVE_ERROR": str(exc)})
            self._on_event(ConnectionLost(session=self._hooks.session, reason=str(exc)))
            return
        except Exception as exc:
            reason = say_build_failure(exc, log, "no session: the Live API client cannot be built")
            # The reason is the error state's: `ctl status` and systemd's STATUS= show it.
            self._on_event(ConnectionLost(session=self._hooks.session, reason=reason))
            return
        from device.live.errors import describe_failure

        try:
            await self._session()
        except Exception as exc:
            log.exception("the session failed")
            reason = describe_failure(exc)
            self._on_event(ConnectionLost(session=self._hooks.session, reason=reason))

    async def _client_for_new_session(self) -> bool:
        """The client a new session connects with: built with the key as it is now;
        whether that key is a new one."""
        renewed = await self._renew_key()
        if self._client is None:
            self._client, self._token = await asyncio.shield(self.prepare())
        return renewed

    async def _renew_key(self) -> bool:
        """Every new session reads the key again (the first after the start too, one
        started afresh when the service no longer knows the last, and a reconnect refused
        for its key): an ephemeral token is
        spent by the sessions it opens (one, unless minted for more) and opens none soon
        after it was made, so whatever mints them writes the next where the key is kept,
        at any time. A new key gets a new client (resuming needs no new token); the client
        `prepare` built at start is kept while the key is the one it was built with
        (`self._cfg`'s). A key file an owner corrected is taken up the same way."""
        cfg = self._cfg
        if cfg.live.backend != "gemini":
            return False
        key, source = await asyncio.to_thread(find_api_key, cfg.live)
        if key is None and cfg.api_key is None and self._client is None:
            raise ConfigError(f"no API key: {where_to_put_the_key(cfg)}")
        if key is None or key == cfg.api_key:
            return False  # a key that went away leaves the client as it was
        self._cfg = dataclasses.replace(cfg, api_key=key, api_key_source=source)
        self._client = self._building = None
        log.info("a new API key from %s: this session and the next use it", source)
        return True

    async def _credentials_anew(self) -> bool:
        """Vertex AI, after a refusal: a new client, which loads the credentials anew; once
        a session until a connection succeeds (the next press takes up a key file the
        owner replaced). Whether one was made. google-auth judges its access token's
        expiry by the wall clock: once NTP stepped the clock back (it had run ahead), a
        token past its hour at the service looked good for as long as the step, and every
        press was refused until the clock caught up."""
        if self._cfg.live.backend != "vertex" or self._credentials_reloaded:
            return False
        self._credentials_reloaded = True
        self._client = self._building = None
        self._client, self._token = await asyncio.shield(self.prepare())
        return True

    async def _session(self) -> None:
        session = self._hooks.session
        from device.live.connection import SwitchNow
        from device.live.errors import describe_failure, failure_fields, is_refusal

        try:
            connection = await self._first_connection()
        except Exception as exc:
            reason = await self._described(exc)
            log.error("cannot connect: %s", reason, extra=failure_fields(exc))
            self._on_event(ConnectFailed(session=session, reason=reason))
            return
        self._on_event(SetupComplete(session=session))
        pacing = Pacing(self._cfg.live.reconnect_for_s)
        while True:
            ended, reply_cut, lasted_s = await self._serve(connection)
            # It completed a turn, handed on after the switch: one of the person's (a reply
            # nobody asked for, carried on to play, proves nothing of the connection).
            carried_turn = self._carried is not None and connection.words_sent
            turns = connection.completed_turns > 0 or carried_turn
            # What a fresh session would lose: turns, not a handle (one may come at setup).
            self._had_turns = self._had_turns or turns
            pacing.ended(lasted_s, turns, moved=isinstance(ended, SwitchNow))
            # Told below, the machine knows the box is between connections.
            told = reply_cut or not isinstance(ended, SwitchNow)
            if isinstance(ended, SwitchNow):
                log.info("switching to a new connection: %s", ended)
                if reply_cut:  # no quiet moment came: the reply in flight is gone
                    reason = "the service moved the conversation"
                    self._on_event(Reconnecting(session=session, reason=reason))
            else:
                # A refusal with a newer key written since: tried at once, as a refused
                # resume tries it; said as it is (no "none newer is there").
                renewed = is_refusal(ended) and await self._newer_key()
                reason = describe_failure(ended) if renewed else await self._described(ended)
                log.warning("connection lost: %s", reason, extra=failure_fields(ended))
                if renewed:
                    pacing.at_once()
                elif is_refusal(ended):
                    self._on_event(ConnectionLost(session=session, reason=reason))
                    return
                self._on_event(Reconnecting(session=session, reason=reason, reply_lost=reply_cut))
            try:
                connection, history_lost = await self._reconnect(pacing, ended, told)
            except Exception as exc:
                reason = await self._described(exc)
                log.error("cannot reconnect: %s", reason, extra=failure_fields(exc))
                self._on_event(ConnectionLost(session=session, reason=reason))
                return
            self._on_event(Reconnected(session=session, history_lost=history_lost))

    async def _described(self, exc: BaseException) -> str:
        """describe_failure, and of a refused key what the owner can do that a new key
        would not: an ephemeral token's file, whose job has written no fresh one ("the
        service refused the API key" sent an owner to make a new key); the service's
        restart, when the installer's key file changed after systemd copied it (a key
        rotated by sudoedit, the old one revoked: `doctor` passed with the new key)."""
        from device.live.errors import (
            describe_failure,
            refuses_credential,
            refuses_token,
            spent_token,
        )

        reason = describe_failure(exc)
        cfg = self._cfg
        if refuses_token(exc, cfg.api_key):
            return cut(f"{spent_token(cfg.api_key_source)}: {reason}")
        systemd_copy = (cfg.api_key_source or "").startswith("systemd credential")
        if not (systemd_copy and refuses_credential(exc)):
            return reason
        if changed := await asyncio.to_thread(key_file_changed_since_start):
            return cut(
                f"{reason}; {changed} changed after the service started, and it still "
                "uses the key copied then: sudo systemctl restart live-appliance"
            )
        return reason

    async def _newer_key(self) -> bool:
        """After a refusal: whether the key has changed since it was read (a new client
        built with it), to try once more with. A token closes the conversation it is in
        once its `expire_time` has passed, and whatever mints them has written the next
        by then: the conversation ended in the error state. A key file that cannot be
        read now is said, as the next press would say it."""
        from device.live.errors import describe_failure, failure_fields

        try:
            return await self._client_for_new_session()
        except Exception as exc:
            said = describe_failure(exc)
            log.error("cannot read the key again: %s", said, extra=failure_fields(exc))
            return False

    async def _first_connection(self) -> Connection:
        """The session's first connection. A quick failure that is not a refusal (an HTTP
        503, a reset, a TLS hiccup) is tried once more after FIRST_RETRY_S: one of them at
        a press cost the turn, the person's speech dropped; the speech is held meanwhile.
        A slow one (a timeout) has made the person wait long enough already. A refusal is
        tried once more at once with the credentials anew: on Vertex AI loaded again; on
        the Gemini API a key that changed since it was read (a minter that rewrites its
        file in place left it empty at the press, the next token a moment later). Not the
        environment's address of the service unreadable, which no credentials mend."""
        from device.live.errors import describe_failure, is_refusal

        started = time.monotonic()
        try:
            return await self._connect()
        except Exception as exc:
            mendable = is_refusal(exc) and not isinstance(exc, AddressUnusable)
            if mendable and (await self._credentials_anew() or await self._newer_key()):
                log.info("refused (%s): trying once more, the credentials loaded anew",
                         describe_failure(exc))
                return await self._connect()
            if is_refusal(exc) or time.monotonic() - started > QUICK_FAILURE_S:
                raise
            # No LIVE_FAILURE fields: the failure an owner looks for is the one after it.
            log.info("cannot connect (%s): trying once more", describe_failure(exc))
        await asyncio.sleep(FIRST_RETRY_S)
        return await self._connect()

    async def _serve(self, connection: Connection) -> tuple[Exception, bool, float]:
        """Serve until the connection ends; close it. Why it ended, whether a reply was in
        flight then (it will not come on the next connection), and how long it ran (not
        counting its close, which a service may keep waiting). A reply that came whole
        before the connection ended (a switch, a drop, a close), still waiting for the
        speaker, plays on from the next one."""
        from device.live.connection import SwitchNow

        self._connection = connection  # close() finishes the job if we are cancelled
        started = time.monotonic()
        ended = await connection.run()
        lasted_s = time.monotonic() - started
        if self._closing:
            # Cancelled as the connection ended: Python 3.11's TaskGroup then raises the
            # connection's failure and loses the cancellation. Without this the session
            # would go on reconnecting while close() waits for it (SIGTERM ignored).
            raise asyncio.CancelledError
        await connection.close(graceful=isinstance(ended, SwitchNow))
        self._connection = None
        self._carried = connection.whole_reply_left()
        if self._carried is not None:
            return ended, False, lasted_s
        reply_cut = self._turn.in_flight
        self._turn.lost()
        return ended, reply_cut, lasted_s

    async def _connect(self) -> Connection:
        """Open one connection (resuming when there is a handle) within the connect timeout."""
        from device.live.connection import Connection
        from device.live.setup import connect_config

        assert self._client is not None
        setup = connect_config(self._cfg, self._handle)
        started = time.monotonic()
        stack = contextlib.AsyncExitStack()
        race_addresses(asyncio.get_running_loop())
        try:
            async with asyncio.timeout(self._cfg.live.connect_timeout_s):
                usable_proxy(self._cfg)
                if self._token is not None:  # else the SDK refreshes it in the loop's pool
                    await self._token.fresh()
                session = await stack.enter_async_context(
                    self._client.aio.live.connect(model=sdk_model(self._cfg.live), config=setup)
                )
        except TimeoutError as exc:
            await stack.aclose()
            raise await self._timed_out() from exc
        except OSError as exc:
            await stack.aclose()
            if (named := through_proxy(self._cfg, exc)) is exc:
                raise
            raise named from exc
        except BaseException:
            await stack.aclose()
            raise
        self.connections += 1
        self._credentials_reloaded = False  # these worked: a later refusal may load anew
        given = session.session_id  # optional: without it, the box's own names the session
        self.session_id = quoted(given, SESSION_ID_LIMIT) if given else self._own_id
        carried, self._carried = self._carried, None
        setup_ms = (time.monotonic() - started) * 1000
        log.info(
            "%s in %.0f ms",
            "session resumed" if self._handle else "session ready",
            setup_ms,
            extra={"LIVE_SESSION": self.session_id or "", "LIVE_SETUP_MS": round(setup_ms)},
        )
        return Connection(
            session,
            stack,
            self._cfg.live,
            self._outbox,
            self._hooks,
            self._turn,
            self._tools,
            carried,
        )

    async def _timed_out(self) -> Exception:
        """What a connect that ran out of time is reported as: the token server, when the
        token's refresh was still waiting for it; else the layer `timed_out` finds."""
        waiting = self._token.timed_out() if self._token is not None else None
        return waiting or await timed_out(self._cfg)

    async def _pause(self, wait: float) -> None:
        """Wait `wait` seconds, or until a person starts a turn (`hurry`): since the last
        try began, so that a press during a try that then fails is not lost."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._hurry.wait()

    async def _reconnect(
        self, pacing: Pacing, ended: Exception, told: bool
    ) -> tuple[Connection, bool]:
        """Connect again, paced; (connection, whether history was lost). GaveUp once the
        connections have kept failing for `reconnect_for_s`. Not `told` (a switch with
        nothing in flight): the machine is told the box is between connections once the
        next one does not follow at once (a wait, a try that fails), so that the LEDs say
        connecting, not listening, while what is heard waits in the outbox."""
        from device.live.errors import (
            GaveUp,
            describe_failure,
            is_busy_session,
            is_refusal,
            is_unknown_handle,
        )

        busy, busy_since, last = 0, 0.0, ended
        # No handle (a drop before the service sent one): the next connection is a fresh
        # session, and what was said on this one is gone.
        history_lost = self._handle is None and self._had_turns
        if history_lost:
            self._had_turns = False  # the fresh session has had none yet
        self._hurry.clear()  # a press while the connection lived asks for no haste now
        while True:
            if self._closing:
                raise asyncio.CancelledError  # a cancellation lost on the way (see _serve)
            now = time.monotonic()
            wait = pacing.wait(now)
            if wait is None:
                raise GaveUp(
                    f"gave up after {pacing.attempts} tries in {pacing.streak_s(now):.0f} s; "
                    f"the last: {describe_failure(last)}"
                )
            if wait > 0:
                log.info("reconnecting in %.1f s: %s", wait, describe_failure(last))
                told = told or self._between_connections(last)
                await self._pause(wait)
            self._hurry.clear()
            try:
                return await self._connect(), history_lost
            except Exception as exc:
                last = exc
                told = told or self._between_connections(exc)
                busy = busy + 1 if is_busy_session(exc) else 0
                busy_since = busy_since if busy > 1 else time.monotonic()
                held = busy >= BUSY_RETRIES and time.monotonic() - busy_since >= BUSY_FOR_S
                if self._handle and (is_unknown_handle(exc) or held):
                    log.warning(
                        "cannot resume the session (%s): starting a new one", describe_failure(exc)
                    )
                    self._handle, history_lost, busy = None, self._had_turns, 0
                    self._had_turns = False  # the fresh session has had none yet
                    await self._client_for_new_session()  # the session's token is spent
                    pacing.at_once()  # a fresh session: try it at once, same streak
                    continue
                if is_refusal(exc):
                    # A token past its expiry is refused on a resume too (a conversation
                    # longer than it, moved by the service): the minter's next one may be
                    # where the key is kept. Each new key is tried once; on Vertex AI, the
                    # credentials loaded anew (`_credentials_anew`).
                    if not await self._client_for_new_session() and not await (
                        self._credentials_anew()
                    ):
                        raise
                    pacing.at_once()
                    continue

    def _between_connections(self, why: Exception) -> bool:
        """Tell the machine a switch is taking its time: nothing was in flight on the
        connection that ended (else it was told already), so no reply is lost."""
        from device.live.errors import describe_failure

        reason = describe_failure(why)
        self._on_event(Reconnecting(session=self._hooks.session, reason=reason, reply_lost=False))
        return True


def _wire_turn(cfg: Config) -> WireTurn:
    """A new session's record of what is on the wire, with the owner's settings for it."""
    from device.audio.capture import PRESS_LAG_S  # numpy: not at import (ask, the doctor)

    return WireTurn(
        speech_interrupts=cfg.speech_interrupts,
        log_transcripts=cfg.live.log_transcripts,
        answer_within_s=cfg.conversation.reply_timeout_s,
        # A press reaches back to its edge (taken up to PRESS_LAG_S late) and the pre-roll.
        unsaved_limit=unsaved_limit(
            cfg.conversation.longest_turn_s, PRESS_LAG_S + cfg.audio.preroll_ms / 1000
        ),
    )


def say_build_failure(exc: Exception, logger: logging.Logger, what: str) -> str:
    """Journal `what` (the client could not be built) and why; the reason, for the error
    state. Vertex AI's credentials, loaded with the client, and HTTPS_PROXY, which its
    HTTP client reads, keep the words and fields a connect's failure has
    (LIVE_FAILURE=credentials, proxy): an owner filters on them."""
    if _said_as_a_connects(exc):
        from device.live.errors import describe_failure, failure_fields

        reason = describe_failure(exc)
        logger.error("%s: %s", what, reason, extra=failure_fields(exc))
        return reason
    reason = one_line(without_credentials(str(exc)))  # a field and the status: one line
    logger.error("%s: %s: %s", what, type(exc).__name__, exc, extra={"LIVE_ERROR": reason})
    return reason


def _proxy_refused(cfg: Config) -> Exception | None:
    """Why HTTPS_PROXY cannot be used, if it cannot: the SDK's HTTP client, built with the
    Live API's, refuses one it cannot parse in its own words ("Invalid port: 'pr0xy'", a
    password's first part taken for a port), which name neither the setting nor the proxy."""
    from websockets.exceptions import InvalidProxy

    try:
        usable_proxy(cfg)
    except InvalidProxy as exc:
        return exc
    except ValueError:  # the Live API's own address unusable (AddressUnusable): the
        pass  # build's failure is said; the thread must hand it on, not die
    return None


def _said_as_a_connects(exc: Exception) -> bool:
    """Vertex AI's credentials or HTTPS_PROXY refused (neither module there: the SDK did
    not import, and raised neither)."""
    auth = sys.modules.get("google.auth.exceptions")
    proxies = sys.modules.get("websockets.exceptions")
    return (auth is not None and isinstance(exc, auth.GoogleAuthError)) or (
        proxies is not None and isinstance(exc, proxies.InvalidProxy)
    )


def _settle(done: asyncio.Future[Built], outcome: Built | Exception) -> None:
    """On the loop: the build's outcome into its future (set once; never twice)."""
    if done.done():
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


def _failed(done: asyncio.Future[Built]) -> bool:
    return done.cancelled() or done.exception() is not None
