"""How soon to connect again, for the whole life of a session.

A service that completes setup and then closes every connection at once must
not be hammered: the backoff grows with every connection that dies young and
survives the successful setups in between. It starts afresh only once a
connection has proved itself (it carried a completed turn, stayed up STABLE_S,
or was moved on by the service's goAway after MOVED_AFTER_S). A streak of
failures that lasts `give_up_after_s`, not counting the time its connections
were up, ends the session: the box shows an error and waits for the next press.
"""

from __future__ import annotations

import random
from collections.abc import Callable

FIRST_S = 0.5
MAX_S = 8.0
#: A connection that stays up this long has proved itself, turn or no turn.
STABLE_S = 30.0
#: A connection the service moved on from (goAway) after this long had worked until
#: then: a planned move, not a failure. Sooner, it is paced as one that died young (a
#: service sending goAway at every setup is not hammered).
MOVED_AFTER_S = 1.0


class Pacing:
    """Backoff with jitter across connections; pure, with the clock passed in."""

    def __init__(
        self,
        give_up_after_s: float,
        *,
        first_s: float = FIRST_S,
        max_s: float = MAX_S,
        jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),
    ) -> None:
        self._give_up_after_s = give_up_after_s
        self._first_s = first_s
        self._max_s = max_s
        self._jitter = jitter
        self._delay = first_s  # the next wait before jitter (0: at once, once proven)
        self._since: float | None = None  # when the current streak of failures began
        self.attempts = 0  # connections tried in the current streak

    def settled(self) -> None:
        """A connection proved itself: the next trouble starts a fresh streak, at once."""
        self._delay, self._since, self.attempts = 0.0, None, 0

    def at_once(self) -> None:
        """The next try goes at once (another kind of try: a fresh session where a resume
        was refused), within the same streak, which still counts towards giving up."""
        self._delay = 0.0

    def ended(self, lasted_s: float, completed_turn: bool, moved: bool = False) -> None:
        """A connection ended after `lasted_s`; `completed_turn`: it carried one; `moved`:
        the service asked for the move (goAway). One that proved itself is followed by a
        prompt try; one that died young, by the backoff."""
        if completed_turn or lasted_s >= STABLE_S or (moved and lasted_s >= MOVED_AFTER_S):
            self.settled()
        elif self._since is not None and lasted_s >= MOVED_AFTER_S:
            # The time it worked is not time spent failing: the streak's clock stops while a
            # connection is up (a drop after it still gets its tries); the backoff stays.
            self._since += lasted_s

    def wait(self, now: float) -> float | None:
        """Seconds to wait before the next try, or None once the streak has lasted
        `give_up_after_s`. A wait that would pass that moment is cut short to it: the
        last try goes at the end of the time promised, not a backoff before it."""
        if self._since is None:
            self._since = now
        left = self._since + self._give_up_after_s - now
        if left <= 0:
            return None
        wait = min(self._delay * self._jitter(), left)
        self.attempts += 1
        self._delay = min(max(self._delay * 2, self._first_s), self._max_s)
        return wait

    def streak_s(self, now: float) -> float:
        """How long the current streak of failures has lasted."""
        return 0.0 if self._since is None else now - self._since
