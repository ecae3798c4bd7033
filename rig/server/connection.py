"""One client connection: setup, the user's turns, the paced reply, barge-in, faults.

The reader coroutine (``run``) never waits for the reply: each reply is its own
task, owned by the connection and cancelled when it closes, so a barge-in or
a close is noticed while audio is still streaming out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from uuid import uuid4

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from device.live.wire import CLOSE_INTERNAL, CLOSE_INVALID, MIC_RATE, pcm_mime
from rig.server.log import ConnectionRecord, Entry
from rig.server.setup import SessionOptions, read_setup
from rig.server.vad import EnergyDetector
from rig.server.voice import chunk_bytes, reply_audio
from rig.server.wire import ProtocolError, b64decode, b64encode, check_audio_mime, has, pick

if TYPE_CHECKING:
    from rig.server.server import LiveServer

REALTIME_KINDS = {
    "audio": "audio",
    "video": "video",
    "text": "text",
    "activity_start": "activity_start",
    "activity_end": "activity_end",
    "audio_stream_end": "audio_stream_end",
}
TOP_LEVEL = ("realtime_input", "client_content", "tool_response")
# The service's session length limits without context window compression (PROTOCOL.md).
AUDIO_SESSION_LIMIT_S = 15 * 60
VIDEO_SESSION_LIMIT_S = 2 * 60
MAX_REASON_BYTES = 123
# Parts a reply may carry beside its audio, which are not for the speaker (other_parts).
OTHER_PARTS = [
    {"text": "(a note beside the audio)"},
    {"inlineData": {"mimeType": "image/png", "data": b64encode(b"\x89PNG\r\n\x1a\n" * 64)}},
]
logger = logging.getLogger(__name__)


@dataclass
class SessionState:
    """What survives a reconnect with a resumption handle."""

    turns: int = 0
    history: list[str] = field(default_factory=list)
    owner: int | None = None  # the connection serving the session now
    started: float = field(default_factory=time.monotonic)
    video: bool = False  # a frame arrived: the shorter session limit applies
    expired: bool = False  # ended by the session length limit; cannot be resumed


@dataclass(frozen=True)
class Utterance:
    """What the user said in one turn: text, or a length of speech."""

    text: str
    speech_ms: int | None = None

    def reply_line(self, turn: int) -> str:
        """The output transcription of the reply to this utterance."""
        if self.speech_ms is None:
            return f'Reply {turn}: you said "{self.text}".'
        return f"Reply {turn}: I heard {self.speech_ms} ms of audio."


def speech(ms: int) -> Utterance:
    """An audio turn of ``ms`` milliseconds."""
    return Utterance(f"{ms} ms of speech", ms)


def short_reason(reason: str) -> str:
    """Close reasons are limited to 123 bytes of UTF-8."""
    data = reason.encode()
    return data[:MAX_REASON_BYTES].decode(errors="ignore")


class LiveConnection:
    """Serve one WebSocket as the Live API would."""

    def __init__(self, server: LiveServer, ws: ServerConnection, record: ConnectionRecord) -> None:
        self.server = server
        self.ws = ws
        self.record = record
        self.id = record.id
        self.options: SessionOptions | None = None
        self.state = SessionState()
        self.vad = EnergyDetector()
        self.in_activity = False
        self.activity_ms = 0
        self.pending_tools: dict[str, Utterance] = {}
        self._reply: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = asyncio.Event()
        self._running.set()
        self._link_free = 0.0  # when a slow uplink has carried every message read so far

    # ---- plumbing ---------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start a task this connection owns (cancelled and awaited at close)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished task; a client leaving mid-send is normal, anything else is not."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, ConnectionClosed):
            logger.error("connection %d: task failed", self.id, exc_info=exc)

    def log(self, direction: Literal["in", "out"], kind: str, raw: dict[str, Any] | None,
            data: bytes | None = None) -> None:
        self.server.log.add(Entry(direction, time.monotonic(), self.id, kind, data, raw))

    async def send(self, kind: str, message: dict[str, Any], data: bytes | None = None) -> None:
        """Send one JSON message in a binary frame, as the service does; wait out a stall."""
        await self._running.wait()
        await self.ws.send(json.dumps(message).encode())
        self.log("out", kind, message, data)

    async def send_raw(self, frame: str | bytes) -> None:
        """Send a frame exactly as given (robustness tests)."""
        await self._running.wait()
        await self.ws.send(frame)
        self.log("out", "raw", None, frame.encode() if isinstance(frame, str) else frame)

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and reason the client will see."""
        await self.ws.close(code, short_reason(reason))

    def drop(self) -> None:
        """Abort the TCP connection: no close frame (the client sees 1006)."""
        self.ws.transport.abort()

    def stall(self, seconds: float | None = None) -> None:
        """Stop reading and sending (pings go unanswered) for ``seconds`` or until resume()."""
        self.ws.transport.pause_reading()
        self._running.clear()
        if seconds is not None:
            self.spawn(self._resume_after(seconds))

    async def _resume_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.resume()

    def resume(self) -> None:
        """End a stall."""
        if not self._running.is_set():
            self.ws.transport.resume_reading()
            self._running.set()

    async def go_away(self, seconds: float, time_left: str) -> None:
        """Warn the client, then close with 1000 when the time is up."""
        await self.send("go_away", {"goAway": {"timeLeft": time_left}})
        self.spawn(self._close_after(seconds))

    async def _close_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.close(1000, "The connection reached the end of its life (goAway).")

    @property
    def is_open(self) -> bool:
        """Open as far as the server knows (a stalled peer that went away still counts)."""
        return self.ws.state is State.OPEN

    async def _lifetime(self, lifetime: float, warning: float) -> None:
        """The service's connection lifetime: goAway, then close 1000 (scaled seconds)."""
        scale = self.server.config.time_scale
        await asyncio.sleep(max(0.0, lifetime - warning) / scale)
        await self.go_away(warning / scale, f"{warning / scale:g}s")

    async def _session_limit(self) -> None:
        """Without compression a session ends at 15 min of audio, 2 with video (scaled)."""
        scale = self.server.config.time_scale
        while True:
            limit = VIDEO_SESSION_LIMIT_S if self.state.video else AUDIO_SESSION_LIMIT_S
            age = (time.monotonic() - self.state.started) * scale
            if age >= limit:
                self.state.expired = True
                await self.close(
                    CLOSE_INTERNAL,
                    "Deadline expired: session length limit reached (no compression).",
                )
                return
            await asyncio.sleep(min(0.25, (limit - age) / scale))

    # ---- lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        """Serve until the client leaves or a protocol error closes the connection."""
        try:
            await self._setup()
            async for frame in self.ws:
                await self._uplink(frame)
                await self._handle(self._parse(frame))
        except ProtocolError as err:
            await self.close(err.code, err.reason)
        except ConnectionClosed:
            pass
        finally:
            await self.shutdown()
            if self.state.owner == self.id:
                self.state.owner = None
            self.record.closed = time.monotonic()
            self.record.close_code = self.ws.close_code
            self.server.log.touch()

    async def _uplink(self, message: str | bytes) -> None:
        """Wait until a slow uplink (``uplink_bytes_per_s``) would have delivered this message.

        The link carries one message after another: each starts when the one before has
        arrived, or when it is read if the link was idle. Nothing more is read meanwhile, so
        what the client sends next backs up behind it.
        """
        rate = self.server.config.uplink_bytes_per_s
        if not rate:
            return
        now = time.monotonic()
        self._link_free = max(self._link_free, now) + len(message) / rate
        await asyncio.sleep(self._link_free - now)

    async def shutdown(self) -> None:
        """Cancel and await every task this connection owns."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _parse(self, frame: str | bytes) -> dict[str, Any]:
        try:
            message = json.loads(frame)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(CLOSE_INVALID, f"Invalid JSON payload received: {exc}.") from exc
        if not isinstance(message, dict) or len(message) != 1:
            raise ProtocolError(
                CLOSE_INVALID, "Invalid message: expected exactly one top-level field."
            )
        return message

    async def _setup(self) -> None:
        message = self._parse(await self.ws.recv())
        request = self.ws.request
        assert request is not None  # the handshake is over
        credential = self.server.check_auth(self.record, request)
        if not has(message, "setup"):
            raise ProtocolError(CLOSE_INVALID, "Invalid message: the first message must be setup.")
        setup = pick(message, "setup")
        self.log("in", "setup", message)
        self.record.setup = setup
        config = self.server.config
        if config.refuse_setup is not None:
            raise ProtocolError(*config.refuse_setup)
        options = read_setup(setup, config.models)
        if options.resume_handle:
            self.state = self.server.resume(options.resume_handle)
        elif self.record.auth == "ephemeral_token":
            self.server.use_token(credential)
        self.server.claim(self.state, self.id)
        self.options = options
        self.vad = EnergyDetector(threshold=options.threshold, silence_ms=options.silence_ms)
        if config.setup_delay:
            await asyncio.sleep(config.setup_delay)
        await self.send("setup_complete", {"setupComplete": {"sessionId": uuid4().hex}})
        if config.close_after_setup is not None:  # a service that fails every connection
            raise ProtocolError(*config.close_after_setup)
        if config.connection_lifetime_s is not None:
            self.spawn(self._lifetime(config.connection_lifetime_s, config.go_away_before_s))
        if config.session_limits and not options.compression:
            self.spawn(self._session_limit())

    # ---- what the client sends ----------------------------------------------------

    async def _handle(self, message: dict[str, Any]) -> None:
        key = next(iter(message))
        name = next((n for n in TOP_LEVEL if has(message, n)), None)
        if name is None:
            raise ProtocolError(
                CLOSE_INVALID, f"Invalid message: unknown or misplaced field {key!r}."
            )
        body = message[key]
        if name == "realtime_input":
            await self._realtime(body, message)
        elif name == "client_content":
            await self._client_content(body, message)
        else:
            await self._tool_response(body, message)

    async def _realtime(self, body: Any, message: dict[str, Any]) -> None:
        present = [n for n in REALTIME_KINDS if has(body, n)]
        if len(present) != 1 or len(body) != 1:
            raise ProtocolError(
                CLOSE_INVALID,
                "Invalid realtime_input: set exactly one of audio, video, text, activityStart, "
                "activityEnd, audioStreamEnd.",
            )
        kind = present[0]
        value = pick(body, kind)
        if kind == "audio":
            check_audio_mime(pick(value, "mime_type"))
            pcm = b64decode(pick(value, "data"))
            self.log("in", "audio", message, pcm)
            await self._audio(pcm)
        elif kind == "video":
            self.log("in", "video", message, b64decode(pick(value, "data")))
            self.state.video = True
        elif kind == "text":
            self.log("in", "text", message)
            await self._barge_in()
            self._end_turn(Utterance(str(value)))
        elif kind == "activity_start":
            self.log("in", "activity_start", message)
            await self._barge_in()
            self.in_activity, self.activity_ms = True, 0
        elif kind == "activity_end":
            self.log("in", "activity_end", message)
            if self.in_activity and self._manual:
                self.in_activity = False
                self._end_turn(speech(self.activity_ms))
        else:
            self.log("in", "audio_stream_end", message)
            if self.vad.speaking and not self._manual:
                self.vad.reset()
                self._end_turn(speech(self.vad.speech_ms))

    @property
    def _manual(self) -> bool:
        return self.options is not None and self.options.manual_activity

    async def _audio(self, pcm: bytes) -> None:
        if self._manual:
            if self.in_activity:
                self.activity_ms += len(pcm) * 1000 // (2 * MIC_RATE)
            return
        for event in self.vad.feed(pcm):
            if event == "start":
                await self._barge_in()
            else:
                self._end_turn(speech(self.vad.speech_ms))

    async def _client_content(self, body: Any, message: dict[str, Any]) -> None:
        self.log("in", "client_content", message)
        texts = [
            str(pick(part, "text"))
            for turn in pick(body, "turns") or []
            for part in pick(turn, "parts") or []
            if has(part, "text")
        ]
        if pick(body, "turn_complete", False):
            await self._barge_in()
            self._end_turn(Utterance(" ".join(texts)))
        else:
            self.state.history.extend(texts)

    async def _tool_response(self, body: Any, message: dict[str, Any]) -> None:
        self.log("in", "tool_response", message)
        responses = pick(body, "function_responses") or []
        ids = [pick(r, "id") for r in responses]
        unknown = [i for i in ids if i not in self.pending_tools]
        if not ids or unknown:
            raise ProtocolError(
                CLOSE_INVALID, f"Invalid tool_response: unknown function call id {unknown}."
            )
        for call_id in ids:
            self._start_reply(self.pending_tools.pop(call_id))

    # ---- turns and replies ---------------------------------------------------------

    def _end_turn(self, heard: Utterance) -> None:
        """The user finished a turn: answer with a queued tool call, or with audio."""
        self.state.history.append(heard.text)
        config = self.server.config
        if config.unanswered_turns > 0:
            config.unanswered_turns -= 1
            return
        call = self.server.next_tool_call()
        if call is None:
            self._start_reply(heard)
            return
        self.pending_tools[call["id"]] = heard
        self.spawn(self._call_tool(call))

    async def _call_tool(self, call: dict[str, Any]) -> None:
        """The call, after the model's first words and before their turnComplete, when
        the server is told to say some (`tool_preamble_seconds`)."""
        config = self.server.config
        seconds, rate = config.tool_preamble_seconds, config.reply_rate
        pcm = reply_audio(0, seconds, rate, config.voice) if seconds else b""
        step = chunk_bytes(config.chunk_seconds, rate)
        for offset in range(0, len(pcm), step):
            chunk = pcm[offset:offset + step]
            part = {"inlineData": {"mimeType": pcm_mime(rate), "data": b64encode(chunk)}}
            await self._content("audio", {"modelTurn": {"parts": [part]}}, chunk)
        await self.send("tool_call", {"toolCall": {"functionCalls": [call]}})
        if pcm:
            await self._content("turn_complete", {"turnComplete": True})

    def _start_reply(self, heard: Utterance) -> None:
        previous = self._reply
        self._reply = self.spawn(self._speak(heard, previous))

    async def _speak(self, heard: Utterance, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        opts, config = self.options, self.server.config
        assert opts is not None
        self.state.turns += 1
        turn = self.state.turns
        if opts.input_transcription:
            await self._content("transcription_in", {"inputTranscription": {"text": heard.text}})
        if opts.resumption:
            await self.send("resumption_update", {"sessionResumptionUpdate": {"resumable": False}})
        await asyncio.sleep(config.think_seconds)
        rate = config.reply_rate
        pcm = reply_audio(turn, config.reply_seconds, rate, config.voice)
        step = chunk_bytes(config.chunk_seconds, rate) + config.odd_parts
        others = OTHER_PARTS if config.other_parts else []
        start = time.monotonic()
        halfway = len(pcm) // 2 // step * step
        for offset in range(0, len(pcm), step):
            if config.more_after_s is not None and offset == halfway:
                await self._content("turn_complete", {"turnComplete": True,
                                                      "interactionStatus": "IN_PROGRESS"})
                await asyncio.sleep(config.more_after_s)
                start += config.more_after_s
            chunk = pcm[offset:offset + step]
            part = {"inlineData": {"mimeType": pcm_mime(rate),
                                   "data": b64encode(chunk)}}
            await self._content("audio", {"modelTurn": {"parts": [*others, part]}}, chunk)
            due = start + (offset + step) / 2 / rate * config.pace
            await asyncio.sleep(max(0.0, due - time.monotonic()) if config.pace else 0)
        if opts.output_transcription:
            await self._content("transcription_out",
                                {"outputTranscription": {"text": heard.reply_line(turn)}})
        await self._content("generation_complete", {"generationComplete": True})
        idle = {} if config.more_after_s is None else {"interactionStatus": "IDLE"}
        await self._content("turn_complete", {"turnComplete": True, **idle})
        await self._resumption_update()

    async def _content(self, kind: str, content: dict[str, Any], data: bytes | None = None) -> None:
        await self.send(kind, {"serverContent": content}, data)

    async def _resumption_update(self) -> None:
        if self.options is not None and self.options.resumption:
            handle = self.server.new_handle(self.state)
            await self.send("resumption_update",
                            {"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    async def _barge_in(self) -> None:
        """New speech during a reply: stop it, say so, cancel pending tool calls."""
        if self.options is None or not self.options.interruptible:
            return
        if self.pending_tools:
            await self.cancel_tool_calls(list(self.pending_tools))
        reply = self._reply
        if reply is None or reply.done():
            return
        reply.cancel()
        await asyncio.gather(reply, return_exceptions=True)
        await self._content("interrupted", {"interrupted": True})
        await self._content("turn_complete", {"turnComplete": True})
        await self._resumption_update()

    async def cancel_tool_calls(self, ids: list[str]) -> None:
        """Withdraw tool calls the client has not answered."""
        for call_id in ids:
            self.pending_tools.pop(call_id, None)
        await self.send("tool_call_cancellation", {"toolCallCancellation": {"ids": ids}})


