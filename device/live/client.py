"""A text turn and its reply: what `ask`, `doctor --turn` and the tests have in common.

`open_session` sets a session up exactly as the daemon sets one up; `run_turn`
sends one `client_content` turn and collects the reply until the service says
the turn is over: its words (output transcription), its audio and its timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from device.live.models import sdk_model
from device.live.reply import ReplyDecoder, end_reason
from device.live.turn import Transcript
from device.live.wire import REPLY_RATE, SAMPLE_BYTES
from device.workers import in_own_thread

if TYPE_CHECKING:
    from google.genai import types
    from google.genai.live import AsyncSession

    from device.config import Config


#: Reply audio one turn keeps at most, by default the daemon's `longest_reply_s`: a
#: service that streams a reply without end, faster than it plays, grew `ask` and
#: `doctor --turn` by hundreds of MB a second until their timeout.
LONGEST_REPLY_S = 300.0


class ReplyTooLong(Exception):
    """The service sent more reply audio for one turn than it may have."""


@dataclass
class Reply:
    """What came back for one turn."""

    text: str  # the output transcription, whole
    audio: bytes  # 24 kHz mono s16le
    first_audio_s: float | None  # from sending the turn to its first audio
    seconds: float  # from sending the turn to turnComplete
    interrupted: bool = False
    #: Why the service ended the turn, when it said (`turnCompleteReason`), cut to a line.
    end_reason: str | None = None

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / SAMPLE_BYTES / REPLY_RATE


async def open_session(stack: contextlib.AsyncExitStack, cfg: Config) -> AsyncSession:
    """A Live session set up exactly as the daemon sets one up, within `connect_timeout_s`;
    `stack` closes it. On Vertex AI the credentials are loaded and refreshed in threads of
    their own (a refresh left waiting in the loop's pool kept `ask` and `doctor` from
    ending until it gave up), and a timeout spent waiting for the token server says so:
    "no answer from the Live API" sent an owner to a service never asked."""
    from device.live.endpoint import race_addresses, usable_proxy
    from device.live.setup import build_client, connect_config

    race_addresses(asyncio.get_running_loop())
    token = None
    try:
        async with asyncio.timeout(cfg.live.connect_timeout_s):
            usable_proxy(cfg)
            client, token = await in_own_thread(
                functools.partial(build_client, cfg), "live-client"
            )
            if token is not None:
                await token.fresh()
            return await stack.enter_async_context(
                client.aio.live.connect(model=sdk_model(cfg.live), config=connect_config(cfg, None))
            )
    except TimeoutError as exc:
        if token is not None and (silent := token.timed_out()) is not None:
            raise silent from exc
        raise


async def send_text_turn(session: AsyncSession, text: str) -> None:
    """One complete user turn in words (`client_content`), as the daemon and `ask` send it."""
    from google.genai import types

    await session.send_client_content(
        turns=types.Content(role="user", parts=[types.Part(text=text)]), turn_complete=True
    )


async def run_turn(
    session: AsyncSession,
    text: str,
    on_audio: Callable[[bytes], None] | None = None,
    longest_s: float = LONGEST_REPLY_S,
) -> Reply:
    """Send one text turn and collect its reply until the server says the turn is over;
    ReplyTooLong past `longest_s` of its audio."""
    started = time.monotonic()
    limit = round(longest_s * REPLY_RATE) * SAMPLE_BYTES
    await send_text_turn(session, text)
    words = Transcript()  # bounded as the daemon's: a service may stream words without end
    audio = bytearray()
    first_audio: float | None = None
    interrupted = False
    ended_for: str | None = None
    decoder = ReplyDecoder()
    async for message in _one_turn(session):
        if message.tool_call is not None:
            await _answer_not_run(session, message.tool_call)
        content = message.server_content
        if content is None:
            continue
        for pcm in decoder.audio(content):
            if first_audio is None:
                first_audio = time.monotonic() - started
            if len(audio) + len(pcm) > limit:
                raise ReplyTooLong(
                    f"the reply ran past {longest_s:g} s of audio without the end of its turn"
                )
            audio += pcm
            if on_audio is not None:
                on_audio(pcm)
        if content.output_transcription is not None and content.output_transcription.text:
            words.add(content.output_transcription.text)
        interrupted = interrupted or bool(content.interrupted)
        ended_for = end_reason(content) or ended_for
    return Reply(
        words.text().strip(),
        bytes(audio),
        first_audio,
        time.monotonic() - started,
        interrupted,
        ended_for,
    )


async def _answer_not_run(session: AsyncSession, call: types.LiveServerToolCall) -> None:
    """`doctor --turn` sets the session up as the daemon does, its tools declared, but runs
    none: each call is answered as not run, so that the model replies (it waits for every
    answer) and the check times the link, not a wait for an answer that never comes."""
    from device.tools import BUSY_ANSWERS_LIMIT, answer

    said = {"error": "not run: this turn only checks the connection"}
    # The SDK refuses a Gemini API answer without an id (ValueError), which ended the
    # turn: such a call is left unanswered, as the daemon leaves it (`_answerable`).
    vertex = bool(getattr(session._api_client, "vertexai", False))
    calls = [one for one in call.function_calls or [] if one.id or vertex]
    responses = [answer(one, said) for one in calls[:BUSY_ANSWERS_LIMIT]]  # a flood: small
    if responses:
        await session.send_tool_response(function_responses=responses)


async def _one_turn(session: AsyncSession) -> AsyncIterator[types.LiveServerMessage]:
    """The turn's messages as `session.receive()` gives them, to the turn's end. One of a
    type this SDK cannot map (a newer service's: the SDK raises TypeError, the frame read
    whole) is skipped, as the daemon's connection skips it: `ask` and `doctor --turn`
    failed on a message the box itself talks past."""
    while True:
        try:
            async for message in session.receive():
                yield message
            return
        except TypeError:
            continue
