"""What is in flight between the device and the service, across connections.

The state machine knows what the person is doing; this knows what the wire
has carried: whether an activity is open, a reply awaited or arriving, tools
running, and whether what arrives belongs to a reply the person talked over.
It outlives a connection, so the next one can pick up where the last stopped,
and it tells the session when a quiet moment has come to switch connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from time import monotonic

from device.errors import shortened, words_on_one_line
from device.live.wire import MIC_RATE, SAMPLE_BYTES
from device.outbox import Kind

log = logging.getLogger(__name__)

#: Characters of one side's transcription kept for a turn's journal line: minutes of
#: speech. A service that never ends a turn cannot grow it; what is past it is counted.
TRANSCRIPT_LIMIT = 4000
#: Microphone audio in no resumption handle kept to send again on the next connection
#: (`WireTurn.unsaved`): the newest minute, 1.9 MB ...
UNSAVED_BYTES = 60 * MIC_RATE * SAMPLE_BYTES
#: ... and a push-to-talk press up to `longest_turn_s`, up to this long (9.6 MB): a press
#: held through a switch goes again whole, and one longer than this says what it lost.
UNSAVED_MOST_S = 300.0


def unsaved_limit(longest_turn_s: float, reach_back_s: float = 0.0) -> int:
    """The bytes `WireTurn.unsaved` keeps: a whole press up to `longest_turn_s` (bounded
    by UNSAVED_MOST_S) and the `reach_back_s` its audio starts before the press is taken
    (the timer starts then), and never less than UNSAVED_BYTES."""
    press_s = min(longest_turn_s, UNSAVED_MOST_S) + reach_back_s
    return max(UNSAVED_BYTES, round(press_s * MIC_RATE) * SAMPLE_BYTES)


@dataclass
class Transcript:
    """One side's transcription of a turn, its first TRANSCRIPT_LIMIT characters kept."""

    parts: list[str] = field(default_factory=list)
    kept: int = 0
    cut: int = 0  # characters past the limit

    def add(self, text: str) -> None:
        room = TRANSCRIPT_LIMIT - self.kept
        if len(text) > room:
            self.cut += len(text) - room
            text = text[:room]
        if text:
            self.parts.append(text)
            self.kept += len(text)

    def text(self) -> str:
        return shortened("".join(self.parts), self.cut)

    def clear(self) -> None:
        self.parts.clear()
        self.kept = self.cut = 0

    def __bool__(self) -> bool:
        return self.kept > 0 or self.cut > 0


@dataclass
class WireTurn:
    """What is in flight between the device and the service, across connections."""

    activity_open: bool = False  # activityStart sent, activityEnd not yet
    awaiting_reply: bool = False  # a turn was handed over and has not completed
    replying: bool = False  # reply content is arriving
    tools_running: int = 0
    #: A tool of the model's was called and the reply that follows its answer has not
    #: ended: it is owed to the person. Hands-free nothing else marks a reply awaited (the
    #: service hears when they have finished), and a connection lost while the tool works
    #: (its call ends with it) or before that reply lost the answer without a sound.
    tool_reply_owed: bool = False
    superseded: bool = False  # the person spoke over a reply: its rest is not theirs to hear
    #: The service said it stopped that reply (interrupted). Without, its turnComplete ends
    #: a reply it had sent whole before it read the press: a late word on it may follow.
    superseded_cut: bool = False
    #: Turns handed over while an earlier one awaited its reply (quick taps, a slow
    #: uplink): that many ends (an interrupted or a turnComplete before any audio, up to
    #: its turnComplete) are earlier turns', not the newest one's.
    earlier_unanswered: int = 0
    #: The last reply ended with its turnComplete and no reply audio came since: an
    #: interrupted now is the service's late word on it (seen right after a turnComplete),
    #: and ends nothing of a turn asked since.
    last_reply_whole: bool = False
    #: Such an interrupted came alone: the turnComplete that follows an interrupted may
    #: still come, before any reply, and is its end, not the next turn's.
    stray_end_due: bool = False
    handle_fresh: bool = True  # a resumption handle came after the last turn
    #: The person said something new since the last reply ended (the service's
    #: transcription of it, or a text turn): the next reply answers it, and whatever is
    #: left of the last one is stale. A reply that follows a tool's answer has no new words.
    new_words: bool = False
    #: Speech over a reply stops it (`Config.speech_interrupts`): then new words heard
    #: after a reply ended make the next reply replace whatever of it still plays.
    speech_interrupts: bool = True
    #: `[live] log_transcripts`: a turn's words in the journal, or only how many.
    log_transcripts: bool = True
    heard: Transcript = field(default_factory=Transcript)  # input transcription of the turn
    said: Transcript = field(default_factory=Transcript)  # output transcription of the turn
    quiet: asyncio.Event = field(default_factory=asyncio.Event)
    #: The open push-to-talk turn's audio sent so far (its newest UNSAVED_BYTES). A
    #: connection resumed with the newest handle has none of it: the service keeps only
    #: what a handle covers, so a switch mid-turn (a goAway's deadline, a drop) lost what
    #: the person said before it, and the model heard the rest of the question. A handle
    #: that arrives during the turn does not cover it either: the service issues handles
    #: as its replies end (or the press cuts one short), so it issued that one as it read
    #: the activityStart at the latest, while the audio that had gone out by its arrival
    #: was still on its way (a round trip's worth, all that a slow link held).
    #: Hands-free (no activity open), what the person said since the last handle came,
    #: until the model answers it: a question cut by a drop, or asked as the model thought
    #: when it dropped, was heard on the next connection in half, or not at all. Not what
    #: is heard while a reply arrives (its echo may be in it; what plays after its end
    #: came is kept, the audio the service heard and let pass); and what went out within
    #: a round trip before a handle came is lost, never repeated. Each with the time it
    #: went out (the monotonic clock).
    unsaved: deque[tuple[float, bytes]] = field(default_factory=deque)
    unsaved_bytes: int = 0
    unsaved_limit: int = UNSAVED_BYTES  # `unsaved_limit()` of the owner's longest_turn_s
    #: Of the open press, audio past `unsaved_limit` no longer kept: said at a switch.
    press_forgotten_bytes: int = 0
    #: Hands-free, the microphone's stream paused (audioStreamEnd): the service ends the
    #: person's turn on it, so it follows their words sent again.
    stream_paused: bool = False
    #: `[conversation] reply_timeout_s`: hands-free, what went out this long ago with no
    #: answer was let pass (said to someone else, the TV, a fan the quiet gate never
    #: pauses for: the model chooses), or will not be answered. Sent again on a later
    #: connection, it was answered out of the blue, or held the person's next words back.
    answer_within_s: float = 30.0

    def __post_init__(self) -> None:
        self.update()

    def update(self) -> None:
        """Quiet: nothing in flight (a reply cut short has ended too) and the newest
        handle covers the last turn."""
        if self.busy or not self.handle_fresh:
            self.quiet.clear()
        else:
            self.quiet.set()

    def drop_turn(self) -> None:
        """What waited to go out of the person's turn was dropped (the reply timer gave up
        on it between connections): a turn it opened on the connection before is not
        opened again on the next one, where nothing would ever end it."""
        self.activity_open = False
        self.forget_audio()
        self.update()

    def spoke(self, pcm: bytes) -> None:
        """Microphone audio went out: kept while it is in no handle (`unsaved`)."""
        if not self.activity_open and self.replying:
            return  # hands-free, over the reply
        self.unsaved.append((monotonic(), pcm))
        self.unsaved_bytes += len(pcm)
        while self.unsaved_bytes > self.unsaved_limit:
            forgotten = self._forget_oldest()
            if self.activity_open:
                self.press_forgotten_bytes += forgotten

    def forget_audio(self) -> None:
        """A turn started or ended: none of its audio is to be sent again."""
        self.unsaved.clear()
        self.unsaved_bytes = self.press_forgotten_bytes = 0

    def words_to_repeat(self) -> list[bytes]:
        """What a new connection sends first: what no handle covers and the model has not
        answered; hands-free, of that only what went out within `answer_within_s` (a
        push-to-talk press is sent again whole: the model has not heard its end)."""
        if not self.activity_open:
            let_pass = monotonic() - self.answer_within_s
            while self.unsaved and self.unsaved[0][0] < let_pass:
                self._forget_oldest()
        elif self.press_forgotten_bytes:
            lost_s = self.press_forgotten_bytes / SAMPLE_BYTES / MIC_RATE
            log.warning(
                "the press went on past what is kept to send again on a new connection: "
                "its first %s s are lost",
                # Two figures below 10 s: a press a chunk past it lost 0.04 s, not "0 s".
                f"{lost_s:.2g}" if lost_s < 10 else f"{lost_s:.0f}",
            )
        return [pcm for _, pcm in self.unsaved]

    def _forget_oldest(self) -> int:
        """Forget the oldest audio kept; its size."""
        size = len(self.unsaved.popleft()[1])
        self.unsaved_bytes -= size
        return size

    def handle_came(self) -> None:
        """A resumption handle: hands-free, it covers what the person said before it."""
        self.handle_fresh = True
        if not self.activity_open:  # push-to-talk, not the open turn's audio (`unsaved`)
            self.forget_audio()
        self.update()

    def answered(self) -> None:
        """Hands-free, the model answers (its reply begins, or it calls a tool): what the
        person said is not to be sent again."""
        if not self.activity_open:
            self.forget_audio()

    def tool_called(self) -> None:
        """A tool of the model's was called: its answer is a turn owed a reply."""
        self.tool_reply_owed = True
        self.answered()
        self.update()

    def supersede(self) -> None:
        """A press or a text turn over the reply arriving (called as it is queued, with the
        speaker cleared: the rest read ahead must not refill it before it is sent). The
        service answers it with interrupted and turnComplete for the old reply; until they
        come, what arrives belongs to the reply talked over."""
        if self.replying:
            self.superseded, self.replying, self.awaiting_reply = True, False, False
            self.update()

    def sent(self, kind: Kind) -> None:
        """`kind` went out on the wire: what the service will answer next, and which of
        its ends belong to a turn the person has already spoken over, follow from it."""
        if kind in ("activity_start", "text") and self.replying:
            self.supersede()
        elif kind in ("activity_start", "text") and self.awaiting_reply:
            # Pressed again before any reply: the earlier turn may still end first.
            self.earlier_unanswered += 1
        if kind == "activity_start":
            self.activity_open, self.handle_fresh = True, False
            self.forget_audio()  # a new turn: nothing of it went out yet
        elif kind == "activity_end":
            self.activity_open, self.awaiting_reply = False, True
            self.forget_audio()
        elif kind == "text":
            self.awaiting_reply, self.handle_fresh = True, False
            self.new_words = True
        elif kind == "audio":
            # Hands-free (no activity markers) the microphone's sound since the last handle
            # is in no handle: a switch now would lose it, or the question it asked. The
            # quiet gate sends nothing while the room is silent; the next handle (after the
            # reply) or the goAway's deadline ends the wait.
            self.handle_fresh, self.stream_paused = False, False
        elif kind == "audio_stream_end":
            self.stream_paused = True
        self.update()

    @property
    def in_flight(self) -> bool:
        """A reply is awaited or arriving."""
        return self.awaiting_reply or self.replying or self.tool_reply_owed

    @property
    def words_replace(self) -> bool:
        """Words the service transcribes now were said over a reply, and the answer to them
        replaces what of it still plays (`speech_interrupts`). Not while the reply to a
        tool's answer is owed: transcripts are not ordered with the audio, and words then
        are the question that called the tool, late; the reply answers it, not them."""
        return self.speech_interrupts and not self.tool_reply_owed

    @property
    def busy(self) -> bool:
        """The service owes an answer: the person's turn is open, a reply is awaited or
        arriving (or one talked over is still ending), or a tool is at work."""
        return self.activity_open or self.in_flight or self.superseded or self.tools_running > 0

    def lost(self) -> None:
        """The connection died, or the session was closed: whatever was awaited from it
        will not come. The words of the turn cut short still reach the journal (a reply
        talked over, whose end was still to come, said so)."""
        cut = self.superseded
        self.awaiting_reply = self.replying = self.superseded = self.superseded_cut = False
        self.tool_reply_owed = False
        self.earlier_unanswered, self.new_words = 0, False
        self.last_reply_whole = self.stray_end_due = False
        self.tools_running = 0
        self.log_words(cut)
        self.update()

    def log_words(self, cut: bool = False) -> None:
        """The turn's transcripts to the journal, then forgotten. `cut`: the reply was
        talked over; its transcription runs as far ahead of the speaker as its audio came,
        so the words logged are what the model meant to say, not what the person heard."""
        if self.heard or self.said:
            _log_transcript(self.log_transcripts, self.heard.text(), self.said.text(), cut)
        self.heard.clear()
        self.said.clear()


def _log_transcript(words: bool, heard: str, said: str, cut: bool) -> None:
    """One journal line per side of a turn; only lengths when the owner keeps words out.
    The model's, of a reply `cut` short, says so (LIVE_REPLY_CUT=1)."""
    cut = cut and bool(said)
    marked = {"LIVE_REPLY_CUT": 1} if cut else {}
    if not words:
        log.info(
            "turn transcript: %d words heard, %d said%s (words not logged)",
            len(heard.split()),
            len(said.split()),
            ", cut short" if cut else "",
            extra=marked,
        )
        return
    heard, said = words_on_one_line(heard), words_on_one_line(said)
    if heard:
        log.info("user said: %s", heard, extra={"LIVE_TRANSCRIPT_IN": heard})
    if said:
        log.info(
            "model said%s: %s",
            " (cut short)" if cut else "",
            said,
            extra={"LIVE_TRANSCRIPT_OUT": said, **marked},
        )
