"""What the soak will do, decided from the seed alone: episodes of turns, and the faults in them.

Pure code: the same seed and mode give the same episodes, turn for turn and fault
for fault, whatever the daemon does, so a run that found something can be
replayed. Each fault is followed by a turn with none (the probe that shows the
box survived it), and a wire fault strikes at a moment when a connection exists.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from device.states import Mode

FAULT_CHANCE = 0.5  # of a turn that may carry one
LONG_EPISODE_CHANCE = 0.2  # a long conversation: connections reach the end of their life
LONG_GAP_CHANCE = 0.15  # a pause long enough for the session (or conversation) to end
ASK_WEIGHTS = (3, 1, 1)  # speech, text, tool: mostly people talk


class Fault(StrEnum):
    """What the local server does to the box, as the service does now and then."""

    GO_AWAY = "go_away"  # goAway with some time left, then close 1000
    CLOSE_1011 = "close_1011"  # close 1011 (internal error) at once
    DROP = "drop"  # the TCP connection dropped: no close frame
    STALL = "stall"  # nothing read or sent for a while: pings go unanswered
    FLOOD = "flood"  # a long reply sent as fast as the socket takes it
    SILENCE = "silence"  # the model lets the turn pass without a word
    UNANSWERED_INTERRUPTION = "unanswered_interruption"  # talked over, then no reply


#: Faults that hit the connection itself, at a chosen moment.
WIRE_FAULTS = frozenset({Fault.GO_AWAY, Fault.CLOSE_1011, Fault.DROP, Fault.STALL})


class Moment(StrEnum):
    """When a wire fault strikes."""

    BEFORE = "before"  # in the quiet before the turn, the session open
    SPEECH = "speech"  # while the person speaks
    REPLY = "reply"  # while the reply plays


class Ask(StrEnum):
    """How the person asks."""

    SPEECH = "speech"  # into the microphone (a press first, in push-to-talk)
    TEXT = "text"  # `ctl text`, as a home automation hook does
    TOOL = "tool"  # speech the model answers with a tool call first


@dataclass(frozen=True)
class Turn:
    """One thing the person asks, and what the server does to it."""

    ask: Ask
    speech_s: float  # how long the person speaks
    gap_s: float  # quiet before the turn
    fault: Fault | None = None
    moment: Moment | None = None  # wire faults only
    amount_s: float = 0.0  # goAway's time left, a stall's length, a flood's length
    at_s: float = 0.0  # how far into the speech or the reply the fault (or talk-over) comes
    cut: bool = True  # flood: talked over (else it plays out)


@dataclass(frozen=True)
class Episode:
    """Turns from a quiet box until it is quiet again by itself."""

    turns: tuple[Turn, ...]
    hang_up: bool  # hands-free: end with a press rather than by falling silent


class Planner:
    """The soak's decisions for one mode, drawn from one seeded generator in a fixed order."""

    def __init__(self, seed: int, mode: Mode, faults: frozenset[Fault] = frozenset(Fault)) -> None:
        self.mode = mode
        self.faults = sorted(faults)  # a fixed order: the same draws for the same seed
        self._random = random.Random(f"{seed}/{mode}")
        self._probe_due = False  # the last turn carried a fault: this one carries none

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.episode()

    def episode(self) -> Episode:
        r = self._random
        count = r.randint(6, 12) if r.random() < LONG_EPISODE_CHANCE else r.randint(1, 4)
        turns = tuple(self._turn(first=i == 0) for i in range(count))
        return Episode(turns, hang_up=self.mode is Mode.TOGGLE and r.random() < 0.5)

    def _turn(self, first: bool) -> Turn:
        r = self._random
        speech_s = round(r.uniform(0.3, 1.0), 2)
        long_gap = r.random() < LONG_GAP_CHANCE
        gap_s = round(r.uniform(4.0, 6.0) if long_gap else r.uniform(0.2, 1.5), 2)
        if self._probe_due or not self.faults or r.random() >= FAULT_CHANCE:
            self._probe_due = False
            return Turn(r.choices(list(Ask), weights=ASK_WEIGHTS)[0], speech_s, gap_s)
        self._probe_due = True
        fault = r.choice(self.faults)
        if fault in WIRE_FAULTS:
            # Before the turn only where a session is open: not the first of an episode,
            # and not after a pause long enough to close it.
            moments = [Moment.SPEECH, Moment.REPLY]
            if not first and not long_gap:
                moments.append(Moment.BEFORE)
            return Turn(
                Ask.SPEECH, speech_s, gap_s, fault, r.choice(moments),
                amount_s=round(_amount(r, fault), 2), at_s=round(r.uniform(0.0, 0.5), 2),
            )
        cut = fault is not Fault.FLOOD or r.random() < 0.7
        amount = 0.0
        if fault is Fault.FLOOD:
            amount = r.uniform(30.0, 120.0) if cut else r.uniform(5.0, 12.0)
        return Turn(
            Ask.SPEECH, speech_s, gap_s, fault, amount_s=round(amount, 2),
            at_s=round(r.uniform(0.8, 2.0), 2), cut=cut,
        )


def _amount(r: random.Random, fault: Fault) -> float:
    if fault is Fault.GO_AWAY:
        return r.uniform(0.5, 20.0)  # time left: at once, or time to wait for a quiet moment
    if fault is Fault.STALL:
        return r.uniform(1.0, 10.0)  # shorter and longer than the daemon's dead_after_s
    return 0.0
