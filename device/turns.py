"""Per-turn timings: what the person at the button felt, one summary line per turn.

Hands-free there is no release: each exchange of a conversation (listening, the
reply, listening again) is a turn, and its "release" is the last word the
microphone heard before the reply came; an exchange in which nothing was heard
and nothing answered (the silence before a hang-up) is none.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from device.outbox import Kind

log = logging.getLogger("device.turns")


@dataclass
class Turn:
    """The moments of one turn that a person feels (monotonic seconds), for its latencies."""

    pressed: float
    first_audio_sent: float | None = None
    released: float | None = None
    activity_end_sent: float | None = None
    first_reply: float | None = None
    ended: float | None = None
    exchange: bool = False  # hands-free, one after the conversation's first

    def timings_ms(self) -> dict[str, float | None]:
        """The waits a person notices: how soon their words leave after the press, how soon
        the service hears they are done, how long until the answer starts, and the whole
        turn (None where the turn never got there)."""

        def span(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round((b - a) * 1000, 1)

        return {
            "press_to_first_audio_ms": span(self.pressed, self.first_audio_sent),
            "release_to_activity_end_ms": span(self.released, self.activity_end_sent),
            "release_to_first_reply_ms": span(self.released, self.first_reply),
            "turn_ms": span(self.pressed, self.ended),
        }


class TurnLog:
    """The turn in progress and the last few finished ones, for `ctl status` and the journal."""

    def __init__(self, keep: int = 10) -> None:
        self.current: Turn | None = None
        self._done: deque[dict[str, Any]] = deque(maxlen=keep)
        self._count = 0

    def start(self, t: float, session_id: str | None) -> None:
        """A new turn; one still in progress (a press over its reply) ends here, with its
        own summary line. One in which nothing happened yet (a conversation a text turn
        opened: the text is the turn) is no turn to count."""
        current = self.current
        if current is not None and not (current.first_audio_sent or current.released):
            self.current = None
        self.finish(t, session_id)
        self.current = Turn(pressed=t)

    def next_exchange(self, t: float, session_id: str | None) -> None:
        """Hands-free, back to listening after a reply: that exchange ends, the next starts."""
        self.finish(t, session_id)
        self.current = Turn(pressed=t, exchange=True)

    def sent(self, kind: Kind, t: float) -> None:
        turn = self.current
        if turn is None:
            return
        if kind == "audio" and turn.first_audio_sent is None:
            turn.first_audio_sent = t
        elif kind == "activity_end" and turn.activity_end_sent is None:
            turn.activity_end_sent = t

    def released(self, t: float) -> None:
        if self.current is not None:
            self.current.released = t

    def reply_received(self, t: float, last_word: float | None = None) -> None:
        """The reply's first audio at `t`; hands-free, `last_word`: when the microphone
        last heard speech, the turn's release if it has none (and it was in this turn)."""
        turn = self.current
        if turn is None or turn.first_reply is not None:
            return
        turn.first_reply = t
        if turn.released is None and last_word is not None and last_word >= turn.pressed:
            turn.released = last_word

    def finish(self, t: float, session_id: str | None, failed: bool = False) -> None:
        """The turn ends at `t` (`failed`: in the error state) with its summary line."""
        turn, self.current = self.current, None
        if turn is None:
            return
        if turn.exchange and not failed and turn.released is None and turn.first_reply is None:
            return  # listening again, then nothing: no turn
        turn.ended = t
        self._count += 1
        timings = turn.timings_ms()
        log.info(
            "turn %d%s: %s",
            self._count,
            " failed" if failed else "",
            ", ".join(f"{k[:-3]} {v:.0f} ms" for k, v in timings.items() if v is not None),
            extra={
                "LIVE_TURN": self._count,
                "LIVE_SESSION": session_id or "",
                **({"LIVE_TURN_RESULT": "error"} if failed else {}),
                **{f"LIVE_{k.upper()}": v for k, v in timings.items() if v is not None},
            },
        )
        self._done.append({"turn": self._count, "failed": failed, **timings, "raw": asdict(turn)})

    def recent(self) -> list[dict[str, Any]]:
        return list(self._done)
