"""The soak's side of the local server: what it sent and received lately, and its faults on cue.

The server's log holds every message of the run (an hour of them); `Wire` reads
only what is new since its last look, and keeps the current turn's share.
"""

from __future__ import annotations

from typing import Any

from device.audio import pcm
from device.live.wire import REPLY_RATE
from rig.bench.harness import Harness
from rig.server.log import Entry
from rig.soak.plan import Fault, Turn

#: The server's reply to an ordinary turn, in seconds: several chunks, long enough to hear.
REPLY_S = 1.0
#: A reply long enough to be talked over (the unanswered interruption's).
LONG_REPLY_S = 4.0
#: The server's knobs as the soak leaves them between turns.
CALM: dict[str, Any] = {"pace": 1.0, "reply_seconds": REPLY_S, "unanswered_turns": 0}
CALL_TIMEOUT_S = 30.0  # a close waits for the client's closing handshake


class Wire:
    """The server's log as the soak reads it: the entries since the turn began."""

    def __init__(self, harness: Harness) -> None:
        self.server = harness.server
        self.set = harness.configure  # the server's knobs (ServerConfig), on its own loop
        _, self._mark = self.server.log.since(0)
        self.recent: list[Entry] = []
        self.go_aways = 0  # every goAway sent, the service's own and the soak's

    def poll(self) -> list[Entry]:
        """Take in what the server logged since the last look; returns it."""
        new, self._mark = self.server.log.since(self._mark)
        self.recent.extend(new)
        self.go_aways += sum(1 for e in new if e.kind == "go_away")
        return new

    def forget(self) -> None:
        """A new turn: what came before it no longer matters."""
        self.poll()
        self.recent.clear()

    def first(self, kind: str, direction: str, after: float) -> Entry | None:
        self.poll()
        found = (e for e in self.recent if e.kind == kind and e.direction == direction)
        return next((e for e in found if e.t >= after), None)

    def events(self, after: float) -> list[str]:
        """What the service did to the connection since `after`: goAways and closes."""
        self.poll()
        kinds = [e.kind for e in self.recent if e.t >= after and e.kind == "go_away"]
        closed = [
            f"close {c.close_code}"
            for c in self.server.log.connections()
            if c.closed is not None and c.closed >= after
        ]
        return kinds + closed

    def open_connection(self) -> int | None:
        """The newest connection the server still serves, if any."""
        open_ = [c.id for c in self.server.log.connections() if c.closed is None]
        return max(open_) if open_ else None

    def quiet(self) -> bool:
        """No connection open at the server: nothing of the box's reaches the service."""
        return self.open_connection() is None

    # -- the server's behaviour --------------------------------------------------------

    def calm(self) -> None:
        """Back to ordinary replies: paced, short, every turn answered."""
        self.set(**CALM)

    def queue_tool_call(self) -> None:
        sim = self.server.server
        assert sim is not None
        self.server.call(sim.queue_tool_call, "get_time")

    def strike(self, turn: Turn) -> bool:
        """The wire fault of `turn` on the newest open connection; False if none was open."""
        sim = self.server.server
        conn = self.open_connection()
        if sim is None or conn is None:
            return False
        try:
            if turn.fault is Fault.GO_AWAY:
                self.server.call(
                    sim.send_go_away, f"{turn.amount_s:g}s", conn, timeout=CALL_TIMEOUT_S
                )
            elif turn.fault is Fault.CLOSE_1011:
                self.server.call(sim.close, conn, 1011, "Internal error", timeout=CALL_TIMEOUT_S)
            elif turn.fault is Fault.DROP:
                self.server.call(sim.drop, conn)
            elif turn.fault is Fault.STALL:
                self.server.call(sim.stall, turn.amount_s, conn)
            else:
                raise ValueError(f"{turn.fault} is not a wire fault")
        except KeyError:  # it closed in the meantime
            return False
        return True


def reply_pitch(entry: Entry) -> float:
    """The pitch of the reply a chunk belongs to (each reply of the server is one tone)."""
    return pcm.dominant_frequency(entry.data or b"", REPLY_RATE)
