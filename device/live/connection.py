"""One WebSocket of a Live session: drain the outbox into it, dispatch what comes back.

A `Connection` runs its tasks side by side in one TaskGroup: the sender, the
receiver, the read-ahead, the liveness watch and, when the service asks for them,
tool calls and a planned switch after `goAway`. The first task to fail ends the
connection with its exception; the session (`device.live.session.LiveLink`)
decides what comes next. What is in flight on the wire (an open activity, a turn awaiting its
reply, running tools) is kept in a `WireTurn` that outlives the connection, so
the next connection can pick up where this one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from google.genai import types
from google.genai.live import AsyncSession

from device.live.client import send_text_turn
from device.live.errors import (
    ConnectionDead,
    NotReading,
    Unacknowledged,
    answer_crossed,
    unacknowledged,
)
from device.live.hooks import Hooks
from device.live.inbound import AudioOnly, messages
from device.live.read_ahead import Message, ReadAhead, ends_interaction, ends_turn, more_to_come
from device.live.reply import NEED_MORE_INPUT, ReplyDecoder, end_reason
from device.live.setup import CLOSE_TIMEOUT_S
from device.live.turn import WireTurn
from device.live.websocket import (
    UNACKED_LIMIT_S,
    bound_buffers,
    bound_unacked,
    link_busy,
    watch_unsent,
    websocket_of,
)
from device.live.wire import IMAGE_MIME, MIC_MIME, audio_message
from device.logs import Overflow
from device.outbox import Item, Outbox
from device.states import Interrupted, ReplyAudio, SpeechHeard, ToolsAtWork, TurnComplete
from device.tools import BUSY_ANSWERS_LIMIT, WITHDRAWN, ToolBox, answer, call_name

if TYPE_CHECKING:
    from device.config import LiveConfig

log = logging.getLogger(__name__)

#: While the link is still busy with earlier bytes, a frame waits this long and asks again.
FRAME_WAIT_S = 0.02
#: Leave this long before a goAway's deadline to reconnect in.
SWITCH_MARGIN_S = 3.0
#: Tool calls one connection runs at once. Calls beyond it are answered "busy" in one
#: message (and while that answer is on its way, further ones are not answered at all):
#: a service that floods calls cannot grow the box's tasks or its sends without end.
TOOL_CALLS_LIMIT = 16


class SwitchNow(Exception):
    """The service announced the end of this connection (goAway): move to a new one."""


class Carried(NamedTuple):
    """A whole reply a connection that ended left unhandled, to play from the next one."""

    messages: list[Message]
    #: What its audio so far went through: it may hold the first byte of a sample whose
    #: second byte is in the messages carried.
    decoder: ReplyDecoder
    #: A tool was called in it ("let me look that up"), and its answer, or the reply to
    #: it, went with the connection: its end says so (`TurnComplete.answer_lost`).
    answer_lost: bool = False


class Connection:
    """Serves one connected `AsyncSession` until something ends it.

    `stack` holds the SDK's connect() context; closing it releases the socket.
    """

    def __init__(
        self,
        session: AsyncSession,
        stack: contextlib.AsyncExitStack,
        cfg: LiveConfig,
        outbox: Outbox,
        hooks: Hooks,
        turn: WireTurn,
        tools: ToolBox | None = None,
        carried: Carried | None = None,
    ) -> None:
        """`carried`: the whole reply the connection before left unhandled."""
        self.session = session
        self._stack = stack
        self._cfg = cfg
        self._outbox = outbox
        self._hooks = hooks
        self._turn = turn
        self._tools = tools
        self._group: asyncio.TaskGroup | None = None
        #: The calls running, by id, for cancellations: a service may use an id twice.
        self._tool_tasks: dict[str, set[asyncio.Task[None]]] = {}
        self._tool_runs: set[asyncio.Task[None]] = set()  # every call running
        self._tool_refusal: asyncio.Task[None] | None = None
        #: The ids of the newest answers that went out, and of the calls the newest busy
        #: answer went to (one message's worth), for a withdrawal that crosses one.
        self._answered: deque[str] = deque(maxlen=TOOL_CALLS_LIMIT)
        self._answered_busy: frozenset[str] = frozenset()
        self._answer_crossed = False  # the service withdrew a call whose answer went out
        self._tools_busy = Overflow(log, "tool_calls")
        self._told_no_tools = False
        self._told_no_id = False
        #: When a goAway's switch goes at the latest (the loop's clock), and what waits for it.
        self._switch_at: float | None = None
        self._switch_left = 0.0  # the time left the goAway that set it gave
        self._switch_said_end: float | None = None  # when the journal was told it ends
        self._switch_deadline: asyncio.Timeout | None = None
        self.decoder = carried.decoder if carried else ReplyDecoder()
        self._read_ahead = ReadAhead(
            self._handle,
            hooks.speaker,
            carried.messages if carried else (),
            words_replace=turn.speech_interrupts,
            answer_owed=lambda: turn.tool_reply_owed,
        )
        self._waiting_for_room = False  # not reading: the silence is ours, not the link's
        self.last_traffic = time.monotonic()
        self.completed_turns = 0  # turns this connection carried to their end
        self._replied = False  # reply audio came since the last turn's end
        self._not_reading: NotReading | None = None  # the service read nothing: it ended
        self._answer_unsent = False  # a call's task ended with the connection, unanswered
        #: The turn ends still to come of a carried reply, up to the one whose tool's
        #: answer was lost (`Carried.answer_lost`); 0 when none was.
        self._ends_to_lost = 0
        if carried is not None and carried.answer_lost:
            self._ends_to_lost = sum(ends_interaction(message) for message in carried.messages)
        self.words_sent = False  # the person's turn (sound, its end, text) went out on it

    async def run(self) -> Exception:
        """Serve until one of the tasks fails; returns what ended the connection."""
        ended: Exception | None = None
        bound_buffers(self.session)
        bound_unacked(self.session)
        watch_unsent(self.session, self._unread)
        task = asyncio.current_task()
        assert task is not None
        requests = task.cancelling()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._send_loop(), name="live-send")
                group.create_task(self._receive_loop(), name="live-receive")
                group.create_task(self._read_ahead.run(), name="live-read-ahead")
                group.create_task(self._watch_liveness(), name="live-liveness")
        except* Exception as failed:
            ended = failed.exceptions[0]
            # Python 3.11's TaskGroup leaves its own request to cancel this task behind
            # when a task fails while it waits for the others. Python 3.11.2's (Bookworm's)
            # asyncio.timeout then ends in CancelledError, not TimeoutError: the wait
            # before the reconnect ended the session. A close's request stays (`_serve`).
            if task.cancelling() > requests:
                task.uncancel()
        if ended is not None and self._answer_crossed:
            ended = answer_crossed(ended)
        if ended is not None and self._not_reading is None and unacknowledged(ended):
            silent = Unacknowledged(f"for {UNACKED_LIMIT_S} s")
            silent.__cause__ = ended
            return silent
        return self._not_reading or ended or ConnectionDead("every task of the connection ended")

    def whole_reply_left(self) -> Carried | None:
        """The reply content read and not yet handed on, when the service sent all of it:
        it plays on from the next connection, whatever ended this one (a goAway, a drop,
        a close), to its end there. When its tool's answer was lost, what came of the
        reply to the answer was cut by the drop: the words before it play on, then the
        error earcon, not its first syllables and silence until reply_timeout_s."""
        unhandled = self._read_ahead.unhandled()
        ends = [index for index, message in enumerate(unhandled) if ends_turn(message)]
        if not ends:
            return None
        if self._answer_lost():
            return Carried(unhandled[: ends[-1] + 1], self.decoder, answer_lost=True)
        return Carried(unhandled, self.decoder)

    def _answer_lost(self) -> bool:
        """The reply owed to a tool's answer cannot come: the answer never went out, or no
        turn's end read after it waits (the service had not sent the reply whole)."""
        if not self._turn.tool_reply_owed:
            return False
        return self._answer_unsent or not self._read_ahead.end_after_mark()

    def drop_whole_reply(self) -> bool:
        """The person talks over the reply playing: True when the service has sent all of
        it (its rest still waiting here is dropped); False while it still streams, or a
        tool is still at work for it: then the service decides."""
        turn = self._turn
        if not turn.speech_interrupts:
            return False
        if self._read_ahead.drop_whole_reply():
            return True
        return not turn.busy  # hands-free: no turn of the person's is ever open

    async def close(self, graceful: bool) -> None:
        """Close (again: it is idempotent); a graceful close waits, bounded, for the answer."""
        if graceful:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self.session.close()
        self.abort()  # a no-op after a completed close; ends a dead socket at once
        with contextlib.suppress(Exception):
            await self._stack.aclose()

    # -- sending --------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        turn = self._turn
        if turn.activity_open:
            # The person was talking when the last connection ended: reopen their turn here,
            # with what they said in it so far (no handle covers any of it).
            await self.session.send_realtime_input(activity_start=types.ActivityStart())
        repeated = turn.words_to_repeat()  # hands-free, what they said since the last handle
        for pcm in repeated:
            await self._send_audio(pcm)
        if repeated and turn.stream_paused and not turn.activity_open:
            await self.session.send_realtime_input(audio_stream_end=True)
        while True:
            item = await self._outbox.get()
            if item.kind == "video" and link_busy(self.session):
                # A frame goes only onto an idle link: otherwise it would queue behind
                # speech, and a newer frame would find it still there. It waits in the
                # outbox instead, where a newer frame replaces it.
                self._outbox.push_front(item)
                await asyncio.sleep(FRAME_WAIT_S)
                continue
            try:
                await self._send(item)
            except BaseException:
                self._outbox.push_front(item)
                raise
            self._turn.sent(item.kind)
            if item.kind in ("activity_start", "text") and self._turn.speech_interrupts:
                # The service withdraws the calls still running for the turn before: an
                # answer sent after this crossed that withdrawal on the wire (an id it no
                # longer knew, refused with 1007, which ended the session).
                self._withdraw_tools(list(self._tool_tasks))
            if item.kind == "audio":
                assert isinstance(item.data, bytes)
                self._turn.spoke(item.data)
            self.words_sent = self.words_sent or item.kind in ("audio", "activity_end", "text")
            self._hooks.on_sent(item, time.monotonic())
            # Let the loop read the socket between sends: a close the service already sent
            # must stop the held speech here (sent again on the next connection), not be
            # read only after all of it went into a connection that is gone.
            await asyncio.sleep(0)

    async def _send(self, item: Item) -> None:
        send = self.session.send_realtime_input
        match item.kind:
            case "audio":
                assert isinstance(item.data, bytes)
                await self._send_audio(item.data)
            case "video":
                assert isinstance(item.data, bytes)
                await send(video=types.Blob(data=item.data, mime_type=IMAGE_MIME))
            case "activity_start":
                await send(activity_start=types.ActivityStart())
            case "activity_end":
                await send(activity_end=types.ActivityEnd())
            case "audio_stream_end":
                await send(audio_stream_end=True)
            case "text":
                await send_text_turn(self.session, str(item.data))

    async def _send_audio(self, pcm: bytes) -> None:
        """One microphone chunk, on the SDK session's own WebSocket, without rebuilding the
        SDK's models for it; through the SDK's call if its WebSocket is not the one we know."""
        ws = websocket_of(self.session)
        if ws is None:
            await self.session.send_realtime_input(audio=types.Blob(data=pcm, mime_type=MIC_MIME))
        else:
            await ws.send(audio_message(pcm))

    # -- receiving ------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            try:
                async for message in messages(self.session, websocket_of(self.session)):
                    self.last_traffic = time.monotonic()
                    await self._read_ahead.take(message)
                    await self._room_for_more()
                    # websockets hands over every frame it has read without waiting: a
                    # flood of tiny messages would hold the loop (a press, the watchdog's
                    # heartbeat, SIGTERM) for as many as one read brought.
                    await asyncio.sleep(0)
            except TypeError:
                # The SDK raises TypeError for a message type it cannot map (a newer
                # service's message). The frame was read whole: skip it, keep serving.
                self.last_traffic = time.monotonic()
                log.debug("ignored a server message of a type this SDK does not know")

    def _handle(self, message: Message, earlier: bool) -> None:
        if isinstance(message, AudioOnly):
            self._play(self.decoder.parts(message.parts))
        else:
            self._dispatch(message, earlier)

    async def _room_for_more(self) -> None:
        """Read on only while less than the read-ahead's bounds wait for the speaker: a
        reply sent far faster than it plays stays in the service's send buffer (TCP's
        flow control holds it), not in this box."""
        if not self._read_ahead.full:
            return
        self._waiting_for_room = True
        try:
            await self._read_ahead.room()
        finally:
            self._waiting_for_room = False
            self.last_traffic = time.monotonic()  # the link's silence counts from here

    def _dispatch(self, message: types.LiveServerMessage, earlier: bool = False) -> None:
        """A message's parts, in order (`earlier`: it was read before the last tool's
        answer went out and waited behind the speaker)."""
        if message.server_content is not None:
            self._content(message.server_content, earlier)
        if message.tool_call is not None:
            self._turn.last_reply_whole = False  # a new generation: an interrupted is its own
            self._start_tools(message.tool_call.function_calls or [])
        if message.tool_call_cancellation is not None:
            self._withdraw_tools(message.tool_call_cancellation.ids or [])
        update = message.session_resumption_update
        if update is not None and update.resumable and update.new_handle:
            self._hooks.on_handle(update.new_handle)
            self._turn.handle_came()
        if message.go_away is not None:
            self._plan_switch(message.go_away.time_left)

    def _play(self, pcms: list[bytes]) -> None:
        """A message's reply audio to the state machine, as one event. The rest of a reply
        the person talked over, up to its turnComplete, is reported as such (the state
        machine decides it is not to be heard)."""
        turn, hooks, session = self._turn, self._hooks, self._hooks.session
        pcm = b"".join(pcms)
        if not pcm:
            return
        self._replied = True
        if turn.superseded:
            hooks.on_event(ReplyAudio(session=session, pcm=pcm, talked_over=True))
            return
        if turn.earlier_unanswered and turn.activity_open:
            # The newest turn is still being spoken (no activityEnd yet): nothing can be its
            # answer. This is an earlier turn's, sent before the service read the press: not
            # to be heard, and its end (interrupted, turnComplete) is not the newest turn's.
            turn.earlier_unanswered -= 1
            turn.superseded = True
            # A reply came after the last whole one: any late word on that one came first.
            turn.last_reply_whole = turn.stray_end_due = False
            turn.update()
            hooks.on_event(ReplyAudio(session=session, pcm=pcm, talked_over=True))
            return
        turn.earlier_unanswered = 0  # the reply that comes is the newest turn's
        turn.last_reply_whole = turn.stray_end_due = False
        replaces = False
        if not turn.replying:
            turn.answered()
            turn.replying, turn.handle_fresh = True, False
            replaces, turn.new_words = turn.new_words, False
            turn.update()
        hooks.on_event(ReplyAudio(session=session, pcm=pcm, replaces=replaces))

    def _content(self, content: types.LiveServerContent, earlier: bool) -> None:
        turn, hooks, session = self._turn, self._hooks, self._hooks.session
        self._play(self.decoder.audio(content))
        # Words are kept whichever reply they come with: transcriptions are not ordered
        # with the audio, and a person's words over a reply are theirs all the same.
        if content.input_transcription is not None and content.input_transcription.text:
            turn.heard.add(content.input_transcription.text)
            turn.new_words = turn.new_words or (turn.words_replace and not turn.replying)
            hooks.on_event(SpeechHeard())
        if content.output_transcription is not None and content.output_transcription.text:
            turn.said.add(content.output_transcription.text)
        if (reason := end_reason(content)) is not None:
            _say_end_reason(reason)
        answer_lost = self._carried_end_lost(content)
        if self._late_word_on_a_whole_reply(content):
            return
        ends = content.interrupted or content.turn_complete
        if turn.earlier_unanswered and ends and not turn.superseded:
            turn.earlier_unanswered -= 1
            turn.superseded = True  # an earlier turn's end: up to its turnComplete
        if turn.superseded:  # the rest of a reply talked over ends as such, never as a turn
            turn.superseded_cut = turn.superseded_cut or bool(content.interrupted)
            if content.turn_complete:
                # Not cut: it came whole (the press crossed its end), as a reply handled
                # whole does, and the service's late interrupted on it ends nothing.
                turn.last_reply_whole = not turn.superseded_cut
                turn.superseded = turn.superseded_cut = False
                turn.log_words(cut=True)  # the speaker was cleared at the press
                turn.update()
                self._turn_carried(asked=False)
                hooks.on_event(TurnComplete(session=session, talked_over=True))
            return
        if content.interrupted:
            # Up to its turnComplete, its words may still come (transcriptions are not
            # ordered with the audio): its one journal line waits for them, as below.
            self._end_turn(earlier, cut=True, words_in=bool(content.turn_complete))
            hooks.on_event(Interrupted(session=session))
            if not content.turn_complete:
                # Up to its turnComplete, what comes is the rest of the reply cut short:
                # neither to be heard, nor the end of the reply that follows.
                turn.superseded = turn.superseded_cut = True
                turn.update()
                return
        if content.turn_complete and more_to_come(content):
            turn.replying, turn.awaiting_reply = False, True  # its words: logged at its end
            turn.update()
            hooks.on_event(TurnComplete(session=session, more_to_come=True))
        elif content.turn_complete:
            asked = turn.in_flight
            self._end_turn(earlier)
            turn.last_reply_whole = True
            self._turn_carried(asked)
            # The words before a tool's answer went out ended: the reply to it is to come
            # (while a tool works, the state machine knows as much from ToolsAtWork).
            answer_due = turn.tool_reply_owed and not turn.tools_running
            hooks.on_event(
                TurnComplete(session=session, more_to_come=answer_due, answer_lost=answer_lost)
            )

    def _carried_end_lost(self, content: types.LiveServerContent) -> bool:
        """Whether this is the carried turn's end whose tool's answer the connection before
        lost (`Carried.answer_lost`)."""
        if not self._ends_to_lost or not content.turn_complete or more_to_come(content):
            return False
        self._ends_to_lost -= 1
        return not self._ends_to_lost

    def _late_word_on_a_whole_reply(self, content: types.LiveServerContent) -> bool:
        """An interrupted after a reply that came whole (its turnComplete before it; it may
        still be playing), and the turnComplete that follows it: it stops the speaker
        unless a newer turn is open or awaits its reply, and ends nothing of that turn.
        Whether it was this (then nothing more of the message is to be done). After words
        that came whole before their tool's answer ("let me look that up"), with the answer
        out, it is the person cutting the reply the model was making to it: that is owed no
        longer."""
        turn = self._turn
        if content.interrupted and turn.last_reply_whole:
            turn.last_reply_whole = False
            turn.stray_end_due = not content.turn_complete
            if not turn.tools_running:
                turn.tool_reply_owed = False
                turn.update()
            if not (turn.in_flight or turn.activity_open):
                # A press being spoken is a newer turn too: it silenced the reply itself,
                # and its release, taken before this, would take this for its own end.
                self._hooks.on_event(Interrupted(session=self._hooks.session))
            return True
        newer = turn.activity_open or turn.earlier_unanswered
        ends_newest = content.turn_complete and turn.in_flight  # its question cut unanswered
        if content.interrupted and turn.stray_end_due and not (newer or ends_newest):
            # Again, no reply audio since (a service repeating itself, or cutting a reply to
            # the newest turn before its first word): nothing heard is cut. Taken for a cut
            # reply's end, the next answer was that reply's rest, and never heard.
            turn.stray_end_due = not content.turn_complete
            return True
        if content.interrupted:
            turn.stray_end_due = False  # a newer interrupted: the turnComplete next is its own
            return False
        if content.turn_complete and turn.stray_end_due:
            turn.stray_end_due = False
            return True
        return False

    def _turn_carried(self, asked: bool) -> None:
        """A turnComplete: the connection carried a turn if one was `asked` (awaited or
        arriving) or reply audio came on it, and the person's words went out on it. A bare
        turnComplete after every setup made each connection count as proved, and so did a
        word the model said unasked: the box reconnected at once, without end."""
        if self.words_sent and (asked or self._replied):
            self.completed_turns += 1
        self._replied = False

    def _end_turn(self, earlier: bool, cut: bool = False, words_in: bool = True) -> None:
        """The reply ended; the one owed to a tool's answer only once no tool works (the
        model may end a turn of its own, "let me look that up", while one does) and by an
        end read after the answer went out (not `earlier`): that turn's end, read while the
        tool worked, waits behind its words for the speaker, and is handed on after a quick
        answer. `cut`: the service stopped it (interrupted), or its rest is being dropped;
        `words_in`: its words have all come, to the journal now."""
        turn = self._turn
        if words_in:
            turn.log_words(cut or self._read_ahead.dropping)
        turn.awaiting_reply = turn.replying = False
        turn.tool_reply_owed = turn.tool_reply_owed and (turn.tools_running > 0 or earlier)
        turn.update()

    # -- tools ----------------------------------------------------------------------------

    def _start_tools(self, calls: list[types.FunctionCall]) -> None:
        """Run the calls there is room for (TOOL_CALLS_LIMIT); answer the rest busy (up to
        BUSY_ANSWERS_LIMIT of them). None that cannot be answered (`_answerable`) or that
        came while the button is held."""
        assert self._group is not None
        calls = self._answerable(calls)
        if calls and self._turn.activity_open and self._turn.speech_interrupts:
            # Push-to-talk, the button held: no call can be this turn's. It was on its way
            # before the service read the press, and is withdrawn as it reads it: an answer
            # would cross that withdrawal (`_withdraw_tools`).
            log.info("the service called %s for a turn the person pressed over: not run",
                     ", ".join(call_name(call.name) for call in calls))
            return
        room = max(TOOL_CALLS_LIMIT - len(self._tool_runs), 0)
        for call in calls[:room]:
            task = self._group.create_task(self._run_tool(call), name="tool-call")
            self._tool_tasks.setdefault(call.id or "", set()).add(task)
            self._tool_runs.add(task)
            task.add_done_callback(self._tool_runs.discard)
            task.add_done_callback(functools.partial(self._tool_ended, call.id or ""))
        refused = calls[room:]
        if not refused:
            self._tools_busy.ended()
            return
        self._tools_busy.hit(
            "the service called %d tools more while %d calls are running: at most %d "
            "answered busy, the rest not answered",
            len(refused),
            len(self._tool_runs),
            BUSY_ANSWERS_LIMIT,
        )
        if self._tool_refusal is None or self._tool_refusal.done():
            self._tool_refusal = self._group.create_task(
                self._refuse_tools(refused[:BUSY_ANSWERS_LIMIT]), name="tool-refusal"
            )

    def _withdraw_tools(self, ids: list[str]) -> None:
        """Stop every call running under these ids, its answer unsent: the service's
        toolCallCancellation, or the person's new turn going out."""
        withdrawn = False
        for call_id in ids:
            for task in self._tool_tasks.pop(call_id, ()):
                task.cancel(WITHDRAWN)  # the tool's line says so (LIVE_TOOL_RESULT=cancelled)
                withdrawn = True
            answered = call_id in self._answered or call_id in self._answered_busy
            if answered:  # on its way: the service will refuse it (1007)
                self._answer_crossed = withdrawn = True
        if withdrawn and not self._tool_tasks:  # no answer will go out: no reply follows one
            self._turn.tool_reply_owed = False
            self._turn.update()

    def _tool_ended(self, call_id: str, task: asyncio.Task[None]) -> None:
        """Forget the call for cancellations; not another call the service gave its id."""
        running = self._tool_tasks.get(call_id)
        if running is not None:
            running.discard(task)
            if not running:
                del self._tool_tasks[call_id]

    def _answerable(self, calls: list[types.FunctionCall]) -> list[types.FunctionCall]:
        """The calls an answer can be sent to. The SDK refuses a Gemini API response without
        an id (ValueError): sent, it ended the connection and the reply in flight. Such a
        call is not run: the model gets no answer to it, whatever the tool would do."""
        if self._cfg.backend == "vertex" or all(call.id for call in calls):
            return calls
        if not self._told_no_id:  # once a connection: a flood is one line
            self._told_no_id = True
            names = ", ".join(sorted({call_name(call.name) for call in calls if not call.id}))
            log.warning("the service called %s without an id: not run, it cannot be answered",
                        names)
        return [call for call in calls if call.id]

    async def _refuse_tools(self, calls: list[types.FunctionCall]) -> None:
        busy = {"error": "the device is busy with earlier tool calls; try again later"}
        self._answered_busy = frozenset(call.id or "" for call in calls)
        await self.session.send_tool_response(
            function_responses=[answer(call, busy) for call in calls]
        )

    async def _run_tool(self, call: types.FunctionCall) -> None:
        """Answer the call (a service only calls what was declared, but answering even an
        undeclared one lets the model carry on instead of waiting for ever). It is at work
        until its answer has gone out: the model's reply timer starts again from there."""
        self._tools_at_work(+1)
        try:
            if self._tools is None:
                if not self._told_no_tools:  # once a connection: a flood is one line
                    self._told_no_tools = True
                    log.warning(
                        "the service called %s, but no tools are enabled", call_name(call.name)
                    )
                response = answer(call, {"error": "no tools are enabled on this device"})
            else:
                response = await self._tools.run(call)
            self._answered.append(call.id or "")
            await self.session.send_tool_response(function_responses=[response])
            self._read_ahead.mark()  # what waits now ends no reply to this answer
        except asyncio.CancelledError as exc:
            self._answer_unsent = self._answer_unsent or exc.args != (WITHDRAWN,)
            raise
        finally:
            self._tools_at_work(-1)

    def _tools_at_work(self, change: int) -> None:
        turn, hooks = self._turn, self._hooks
        turn.tools_running += change
        if change > 0:
            turn.tool_called()
        turn.update()
        hooks.on_event(ToolsAtWork(session=hooks.session, calls=turn.tools_running))

    # -- the connection's life ------------------------------------------------------------

    def _plan_switch(self, time_left: str | None) -> None:
        """goAway: move to a new connection at a quiet moment, or before time runs out. A
        second goAway with less time left brings the move forward: kept to the first
        deadline, the service closed the connection under the box, a loss, not a move.
        The journal hears of one that at least halves the time it was last told is left: a
        service counting down (a goAway a message) was a line a message."""
        seconds = _seconds(time_left)
        now = asyncio.get_running_loop().time()
        at = now + max(0.0, seconds - SWITCH_MARGIN_S)
        if self._switch_at is not None and at >= self._switch_at:
            return
        said_end = self._switch_said_end
        if said_end is None or seconds < (said_end - now) / 2:
            self._switch_said_end = now + seconds
            said = f"{seconds:g} s" if seconds else "a moment"  # what the box read, not the raw
            log.info("the service will close this connection in %s", said)
        planned = self._switch_at is not None
        self._switch_at, self._switch_left = at, seconds
        if self._switch_deadline is not None:
            self._switch_deadline.reschedule(at)
        if not planned:
            assert self._group is not None
            self._group.create_task(self._switch_when_quiet(), name="live-switch")

    async def _switch_when_quiet(self) -> None:
        try:
            async with asyncio.timeout_at(self._switch_at) as self._switch_deadline:
                await self._turn.quiet.wait()
        except TimeoutError:
            log.info("no quiet moment before the connection ends: switching now")
        raise SwitchNow(f"goAway with {self._switch_left:g} s left")

    async def _watch_liveness(self) -> None:
        """A connection with no traffic at all for `dead_after_s` is dead; ping when quiet.

        The service answers pings late while it works, so a late pong alone is no
        verdict (websockets' own keepalive is off): only silence on both is.
        """
        keepalive, dead_after = self._cfg.keepalive_s, self._cfg.dead_after_s
        interval = min(keepalive, dead_after / 3)
        pinging: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(interval)
            if self._waiting_for_room:
                continue  # nothing is read meanwhile: no verdict on the link
            silent = time.monotonic() - self.last_traffic
            if silent >= dead_after:
                raise ConnectionDead(f"silent for {silent:.0f} s")
            if silent >= keepalive and (pinging is None or pinging.done()):
                # Not awaited: on a link that has stopped taking bytes the ping itself
                # waits for room, and the verdict above must still come.
                assert self._group is not None
                pinging = self._group.create_task(self._ping(), name="live-ping")

    async def _ping(self) -> None:
        ws = websocket_of(self.session)
        if ws is None:
            return
        pong = await ws.ping()
        pong.add_done_callback(self._on_pong)

    def _on_pong(self, pong: asyncio.Future[Any]) -> None:
        if not pong.cancelled() and pong.exception() is None:
            self.last_traffic = time.monotonic()

    def _unread(self, held: int) -> None:
        """What the box sends piles up unread (the service's pings answered, and nothing
        read): the connection is dead, whatever still comes from it."""
        if self._not_reading is None:
            self._not_reading = NotReading(f"{held / 2**20:.0f} MB wait to be sent")
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once: a dead peer would never finish a close handshake."""
        ws = websocket_of(self.session)
        if ws is not None:
            ws.transport.abort()


def _say_end_reason(reason: str) -> None:
    """The service ended a turn for a reason of its own, often without a word: the person
    heard silence, or a reply stop mid-sentence, and the owner could not tell it from a
    lost reply (LIVE_TURN_END: the reason, as the service spelled it). A warning, but for
    NEED_MORE_INPUT: the model waiting for the person to go on refuses nothing."""
    level = logging.INFO if reason == NEED_MORE_INPUT else logging.WARNING
    log.log(level, "the service ended the turn: %s", reason, extra={"LIVE_TURN_END": reason})


def _seconds(duration: str | None) -> float:
    """'50s' or '1.5s' (the wire's Duration) to seconds; unknown means 'now'."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)s\s*", duration or "")
    return float(match.group(1)) if match else 0.0
