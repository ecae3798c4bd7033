"""What the soak counts: turns asked and answered, faults struck and survived, stuck states.

A fault is survived when the box comes back by itself and the next turn free of
faults (the probe) is answered. A turn the service cut short on its own (a
connection's end of life mid-reply) proves nothing either way: the faults wait
for the next probe.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from device.states import Mode
from rig.soak.plan import Fault


@dataclass
class Asked:
    """One thing the person asked, and how it went."""

    mode: Mode
    episode: int
    what: str  # speech, text, tool, or talk-over
    fault: Fault | None
    silence_expected: bool  # the server was told to let it pass
    answered: bool = False
    events: list[str] = field(default_factory=list)  # goAways and closes during it
    note: str = ""  # why it was not asked (a refused `ctl text`)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": str(self.mode), "episode": self.episode, "what": self.what,
            "fault": self.fault and str(self.fault), "answered": self.answered,
            "silence_expected": self.silence_expected, "events": self.events, "note": self.note,
        }


@dataclass
class Tally:
    """Everything counted in one run, across both modes."""

    asked: list[Asked] = field(default_factory=list)
    struck: Counter[tuple[Mode, Fault]] = field(default_factory=Counter)
    missed: Counter[tuple[Mode, Fault]] = field(default_factory=Counter)  # no connection to hit
    survived: Counter[tuple[Mode, Fault]] = field(default_factory=Counter)
    not_survived: list[dict[str, Any]] = field(default_factory=list)
    stuck: list[dict[str, Any]] = field(default_factory=list)
    _pending: list[tuple[Mode, int, Fault]] = field(default_factory=list)

    def add(self, asked: Asked) -> None:
        """A turn is over: count it, and settle the faults waiting for a probe."""
        self.asked.append(asked)
        if asked.fault is not None or asked.silence_expected:
            return
        if asked.answered:
            for mode, _, fault in self._pending:
                self.survived[mode, fault] += 1
            self._pending.clear()
        elif not asked.events:
            self._fail_pending(f"the next turn (episode {asked.episode}) was not answered")

    @property
    def pending(self) -> bool:
        """Faults struck whose probe has not come yet."""
        return bool(self._pending)

    def fault(self, mode: Mode, episode: int, fault: Fault, struck: bool) -> None:
        if struck:
            self.struck[mode, fault] += 1
            self._pending.append((mode, episode, fault))
        else:
            self.missed[mode, fault] += 1

    def got_stuck(self, record: dict[str, Any]) -> None:
        self.stuck.append(record)
        self._fail_pending(f"stuck: {record['what']}")

    def _fail_pending(self, why: str) -> None:
        for mode, episode, fault in self._pending:
            self.not_survived.append(
                {"mode": str(mode), "episode": episode, "fault": str(fault), "why": why}
            )
        self._pending.clear()

    # -- figures ------------------------------------------------------------------------

    def turns(self, mode: Mode | None = None) -> dict[str, int]:
        """Turns asked, and how each went: exactly one of the other five."""
        mine = [a for a in self.asked if mode is None or a.mode is mode]
        unanswered = [a for a in mine if not a.answered and not a.silence_expected]
        return {
            "asked": len(mine),
            "answered": sum(a.answered for a in mine),
            "let_pass": sum(a.silence_expected and not a.answered for a in mine),
            "cut_by_a_fault": sum(a.fault is not None for a in unanswered),
            "cut_by_the_service": sum(a.fault is None and bool(a.events) for a in unanswered),
            "lost": len(self.lost(mode)),
        }

    def lost(self, mode: Mode | None = None) -> list[Asked]:
        """Turns with no reply and no reason for it: no planned silence, no goAway or close."""
        return [
            a for a in self.asked
            if (mode is None or a.mode is mode)
            and not a.answered and not a.silence_expected and not a.events
            and a.fault is None
        ]

    def faults(self) -> dict[str, dict[str, int]]:
        """Per kind: struck, survived, not survived, and missed (nothing open to strike)."""
        out: dict[str, dict[str, int]] = {}
        for kind in Fault:
            not_survived = sum(1 for n in self.not_survived if n["fault"] == kind)
            out[str(kind)] = {
                "struck": sum(n for (_, f), n in self.struck.items() if f is kind),
                "survived": sum(n for (_, f), n in self.survived.items() if f is kind),
                "not_survived": not_survived,
                "missed": sum(n for (_, f), n in self.missed.items() if f is kind),
            }
        return out
