"""When a sound card recorded a sample, on time.monotonic()'s scale.

The card counts samples at its own steady pace; the program that reads them runs
late by a varying amount (waiting for the GIL while the event loop works, or on a
busy machine). Each read says "by `now`, at least this many samples had been
recorded": the read that ran soonest after the card delivered gives the truest
offset between the two clocks, so the smallest offset seen is kept. The two
clocks' rates differ a little, so the offset may creep up, slowly, when no read
has run on time to show it. A card whose clock is slower than the creep allows
(a cheap USB card hundreds of ppm off, with the capture open for months) shows
itself when even the soonest read of a whole window comes later than the offset:
the offset then catches up by that much, so the times never fall behind.
"""

from __future__ import annotations

#: How fast the offset may creep up: 100 ppm, as two quartz clocks at most. Faster, the
#: times drift with how late reads run: creeping by a share of each read's lateness,
#: they drifted 1.5 ms a second on a busy machine, which the echo canceller cannot
#: follow without letting echo through.
CLOCK_CREEP = 1e-4
#: Reads are compared with the offset over windows this long (20 reads of an idle box);
#: if every read of one came later than the offset, it catches up by the least of them.
CATCH_UP_WINDOW_S = 10.0


class CardClock:
    """Sample counts of one running capture, put on time.monotonic()."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._offset: float | None = None  # time.monotonic() less the card's time
        self._seen = 0.0  # when the offset was last set (time.monotonic())
        self._window_from = 0.0  # the window of reads compared with the offset began
        self._least_late = 0.0  # how much later than the offset its soonest read came

    def restart(self) -> None:
        """The count starts again at 0 (the device started, or lost samples)."""
        self._offset = None

    def when(self, frame: int, recorded: int, now: float) -> float:
        """When frame number `frame` was recorded, given that `recorded` frames had been
        by `now` (a time.monotonic() taken just after the card said so)."""
        diff = now - recorded / self.rate
        if self._offset is None or diff < self._offset:
            self._offset = diff
            self._window_from, self._least_late = now, 0.0
        else:
            creep = CLOCK_CREEP * (now - self._seen)
            self._offset += min(diff - self._offset, creep)
            self._least_late = min(self._least_late, diff - self._offset)
        if now - self._window_from >= CATCH_UP_WINDOW_S:
            self._offset += self._least_late  # 0 unless every read of the window was late
            self._window_from, self._least_late = now, float("inf")
        self._seen = now
        return frame / self.rate + self._offset
