"""Reply audio read ahead of the speaker, so that what the service says next is seen at once.

A reply may arrive faster than it plays. Read only as the speaker makes room, an
`interrupted` (the person spoke over the box) would wait behind the audio the
service sent before it, and the box would talk on for as long as that audio lasts.
So the socket is read on: a message that cannot be handled yet (audio for a full
speaker, and whatever came after it) waits here in order, up to READ_AHEAD_S of
audio (what else the messages carry weighs as its size) or READ_AHEAD_MESSAGES
messages of any kind; past that the reply waits in the service (TCP's flow control
holds it). An interruption drops the audio waiting here, which is not to be heard any
more, and is handled at once, after the other messages that came before it. The
answer to words the person said over a reply that had come whole (the service, which
has nothing left to interrupt, transcribes them and answers) drops the old one's audio
the same way; the model going on after a tool's answer does not, even behind a late
transcript of the question that called the tool. The box itself, when it hears the
person talking over a reply whose end waits here (`drop_whole_reply`), drops the audio
of every whole reply waiting, a tool's answer's too. A message that is not the reply's
content (a goAway, a resumption handle, a tool call or its cancellation) never waits:
a goAway's time left counts from its arrival, and a tool need not wait for the words
before it.

What still waits when a connection ends goes on to the next one (`unhandled`,
`carried`) when the reply's end is among it: the reply was received whole, and the
speaker plays it out across the switch (goAway), the drop or the close.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Iterable

from google.genai import types

from device.live.hooks import SpeakerRoom
from device.live.inbound import AudioOnly
from device.live.wire import REPLY_RATE

Message = types.LiveServerMessage | AudioOnly

#: Reply audio held here at most: a minute at 24 kHz is 2.9 MB. Everything else a
#: message carries (words, search results, code, signatures) counts by its size as the
#: service wrote it against the same bound, and each part beyond the first PART_COST
#: more (what holding it costs): 300 transcripts of a megabyte each grew the box to
#: 380 MB, 100 messages of 12,000 one-sample parts to 270 MB, 300 of a megabyte of
#: grounding metadata each to 350 MB.
READ_AHEAD_S = 60.0
READ_AHEAD_BYTES = round(READ_AHEAD_S * REPLY_RATE) * 2
PART_COST = 256
#: Messages held here at most, whatever they carry: a minute of the service's audio is
#: about 300, its transcripts as many again. Without it, a flood of small messages
#: behind a full speaker was read on without end (100 MB for 50,000 transcripts).
READ_AHEAD_MESSAGES = 1024


class ReadAhead:
    """Messages read and not yet handled, handed to `handle` in order as the speaker takes
    their audio, each with whether it was read before the last `mark`: `take` is the
    reader's, `run` (a task) hands on what waits."""

    def __init__(
        self,
        handle: Callable[[Message, bool], None],
        speaker: SpeakerRoom | None,
        carried: Iterable[Message] = (),
        words_replace: bool = True,
        answer_owed: Callable[[], bool] = lambda: False,
    ) -> None:
        """`carried`: what still waited on the connection before, handed on first;
        `words_replace`: the answer to words said over a whole reply drops its rest
        (speech interrupts; without, the person hears the reply to its end first);
        `answer_owed`: whether a reply to a tool's answer is owed now."""
        self._handle = handle
        self._words_replace = words_replace
        self._answer_owed = answer_owed
        self._speaker = speaker
        #: Each with its audio's bytes and its weight (`_weight`, worked out once).
        self._waiting: deque[tuple[Message, int, int]] = deque()
        self._held = 0  # what the messages waiting weigh (`_weight`)
        self._ends = 0  # messages waiting that end an interaction
        self._before_mark = 0  # the first messages waiting, read before the last `mark`
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        #: What is handed on now is of a reply whose audio was dropped (`_drop_audio`): the
        #: turn it ends was cut short, whatever its end says.
        self.dropping = False
        for message in carried:
            self._wait(message, _audio_bytes(message))

    @property
    def full(self) -> bool:
        """READ_AHEAD_BYTES' weight, or READ_AHEAD_MESSAGES, wait: the reader must not read on."""
        return not self._room.is_set()

    async def take(self, message: Message) -> None:
        """A message just read: handled now if nothing waits and the speaker takes it, or
        if it is not the reply's content."""
        size = _audio_bytes(message)
        if _not_content(message) or (not self._waiting and not self._must_wait(size)):
            await self._hand_on(message, size)
        elif _interrupts(message):
            self._drop_audio()
            self._handle(message, False)
        elif size and self._ends and self._words_replace and self._words_after_an_end():
            await self._answer_at_once(message, size)
        else:
            self._wait(message, size)

    def mark(self) -> None:
        """Something went out (a tool's answer): what waits now was read before it, and is
        handed on saying so. No answer to it is among them."""
        self._before_mark = len(self._waiting)

    def end_after_mark(self) -> bool:
        """A turn's end read after the last `mark` waits: the reply to the answer came."""
        waiting = list(self._waiting)[self._before_mark:]
        return any(ends_interaction(message) for message, _, _ in waiting)

    def unhandled(self) -> list[Message]:
        """What still waits, in order (the connection has ended: for the next one)."""
        return [message for message, _, _ in self._waiting]

    def _wait(self, message: Message, size: int) -> None:
        weight = _weight(message, size)
        self._waiting.append((message, size, weight))
        self._held += weight
        self._ends += ends_interaction(message)
        self._mind_the_bound()
        self._arrived.set()

    async def room(self) -> None:
        """Returns once the bounds' worth no longer waits."""
        await self._room.wait()

    async def run(self) -> None:
        """Hand on what waits as the speaker makes room; runs until cancelled."""
        while True:
            await self._arrived.wait()
            while self._waiting:
                _, size, _ = self._waiting[0]
                if self._must_wait(size):
                    assert self._speaker is not None
                    await self._speaker.wait_for_room()
                    continue  # an interruption may have emptied the queue meanwhile
                [(message, size, earlier)] = self._pop(1)
                await self._hand_on(message, size, earlier)
            self._arrived.clear()

    async def _hand_on(self, message: Message, size: int, earlier: bool = False) -> None:
        """Handle the message (`earlier`: read before the last `mark`); after audio, let the
        loop run once. The audio reaches the speaker through the appliance's events, and
        until it has, the speaker's room says nothing of it: a reply read in one go went
        whole into the speaker, past its bound, and nothing waited here."""
        self._handle(message, earlier)
        if size and self._speaker is not None:
            await asyncio.sleep(0)

    def _pop(self, count: int) -> list[tuple[Message, int, bool]]:
        """The first `count` messages waiting, taken off, each with its audio's bytes and
        whether it was read before the last `mark`."""
        popped = []
        for _ in range(count):
            message, size, weight = self._waiting.popleft()
            self._held -= weight
            self._ends -= ends_interaction(message)
            popped.append((message, size, self._before_mark > 0))
            self._before_mark = max(0, self._before_mark - 1)
        self._mind_the_bound()
        return popped

    def _mind_the_bound(self) -> None:
        """The reader may read on while less than either bound's worth waits."""
        if self._held >= READ_AHEAD_BYTES or len(self._waiting) >= READ_AHEAD_MESSAGES:
            self._room.clear()
        else:
            self._room.set()

    def _must_wait(self, size: int) -> bool:
        return size > 0 and self._speaker is not None and not self._speaker.has_room()

    def _words_after_an_end(self) -> bool:
        """The service's transcription of the person waits behind the end of a whole reply.
        While the reply to a tool's answer is owed, of one read after the answer went out:
        words behind the model's first words, read before it, are the question that called
        the tool, late (transcripts are not ordered with the audio)."""
        first = self._before_mark if self._answer_owed() else 0
        ended = False
        for message, _, _ in itertools.islice(self._waiting, first, None):
            ended = ended or ends_interaction(message)
            if ended and _brings_words(message):
                return True
        return False

    async def _answer_at_once(self, message: Message, size: int) -> None:
        """The answer to words said over a whole reply: the old reply's rest is dropped, and
        what came after its end goes on at once with `message`, the transcript of the words
        first (the state machine clears the speaker for the answer they bring): the
        answer's first audio, read before it (the two are not ordered), is its start."""
        self._drop_audio(self._up_to_the_last_end())
        after = [*self._pop(len(self._waiting)), (message, size, False)]
        for waiting, audio, earlier in sorted(after, key=lambda each: not _brings_words(each[0])):
            await self._hand_on(waiting, audio, earlier)

    def drop_whole_reply(self) -> bool:
        """The person talks over a reply the service has sent whole (its end waits here):
        drop its audio still waiting. False when no such end waits."""
        count = self._up_to_the_last_end()
        if not count:
            return False
        self._drop_audio(count)
        return True

    def _up_to_the_last_end(self) -> int:
        """How many of the messages waiting are whole replies: up to the last end (0: none)."""
        ends = [i for i, (message, _, _) in enumerate(self._waiting) if ends_interaction(message)]
        return ends[-1] + 1 if ends else 0

    def _drop_audio(self, count: int | None = None) -> None:
        """The audio of the first `count` messages waiting (all by default) is not to be
        heard: drop the messages of audio alone, hand on the rest of them in order (what
        audio such a message carries, read through the SDK's models, goes on with it, and
        the speaker is cleared after it); those after them wait on."""
        count = len(self._waiting) if count is None else count
        self.dropping = True
        try:
            for message, _, earlier in self._pop(count):
                if not isinstance(message, AudioOnly):
                    self._handle(message, earlier)
        finally:
            self.dropping = False


def _audio_bytes(message: Message) -> int:
    if isinstance(message, AudioOnly):
        return sum(len(data) for data, _ in message.parts)
    content = message.server_content
    if content is None or content.model_turn is None:
        return 0
    return sum(
        len(part.inline_data.data or b"")
        for part in content.model_turn.parts or []
        if part.inline_data is not None
    )


#: What of a message's content is not weighed as its JSON: the audio's bytes, counted as
#: they are (base64 would count them a third heavier).
_AUDIO_DATA = {"model_turn": {"parts": {"__all__": {"inline_data": {"data"}}}}}


def _weight(message: Message, audio_bytes: int) -> int:
    """What holding a message costs, for the bound: its audio, the rest of what it carries
    (words, grounding metadata, code, anything a newer service adds) as JSON, its parts."""
    if isinstance(message, AudioOnly):
        return audio_bytes + PART_COST * (len(message.parts) - 1)
    content = message.server_content
    if content is None:
        return 0  # never waits
    parts = (content.model_turn.parts or []) if content.model_turn else []
    try:
        rest = len(content.model_dump_json(exclude_none=True, exclude=_AUDIO_DATA))
    except ValueError:
        # Nested deeper than pydantic writes (a call's arguments, which the SDK read): it
        # weighs the whole bound, and the reader waits until it has been handed on.
        rest = READ_AHEAD_BYTES
    return audio_bytes + rest + PART_COST * max(0, len(parts) - 1)


def _not_content(message: Message) -> bool:
    """A message about the connection or the tools: nothing of it is heard."""
    return isinstance(message, types.LiveServerMessage) and message.server_content is None


def _content(message: Message) -> types.LiveServerContent | None:
    """The reply's content the message carries, if it is a full message with some."""
    return message.server_content if isinstance(message, types.LiveServerMessage) else None


def ends_turn(message: Message) -> bool:
    """The message completes the model's turn."""
    content = _content(message)
    return content is not None and bool(content.turn_complete)


def ends_interaction(message: Message) -> bool:
    """The message completes the model's turn and nothing more of its reply follows."""
    content = _content(message)
    return ends_turn(message) and content is not None and not more_to_come(content)


def _brings_words(message: Message) -> bool:
    """The message carries the service's transcription of what the person said."""
    content = _content(message)
    heard = content.input_transcription if content is not None else None
    return heard is not None and bool(heard.text)


def more_to_come(content: types.LiveServerContent) -> bool:
    """A turnComplete whose interaction is not IDLE: the model works on (background
    reasoning) and more of its reply may follow. Only IDLE, or no status, ends it (the
    SDK's receive() reads it so too)."""
    status = content.interaction_status
    return status not in (
        None,
        types.InteractionStatus.INTERACTION_STATUS_UNSPECIFIED,
        types.InteractionStatus.IDLE,
    )


def _interrupts(message: Message) -> bool:
    content = _content(message)
    return content is not None and bool(content.interrupted)
