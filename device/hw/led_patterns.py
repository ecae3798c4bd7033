"""LED patterns as data: what each appliance state looks like, on one LED or a strip.

A pattern is a colour and a cycle of steps. The cycle repeats for as long as the
state lasts; a cycle of one step is static (its level is set once and held), so a
solid or dark state costs nothing while it lasts. The table is tuned so a person
can tell the states apart across a room on a single monochrome LED, by timing
alone; the colours help on an RGB LED or a set of coloured LEDs.

A strip of pixels (APA102) shows the same levels on every pixel, except where a
pattern has a `chase`: there a lit head with a fading tail goes round the strip
once per cycle, which a single LED cannot show, so it keeps the steps' blink.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

Rgb = tuple[float, float, float]
#: One colour per pixel, in strip order; a one-LED driver gets a frame of one.
Frame = tuple[Rgb, ...]

WHITE: Rgb = (1.0, 1.0, 1.0)
BLUE: Rgb = (0.0, 0.0, 1.0)
AMBER: Rgb = (1.0, 0.5, 0.0)
GREEN: Rgb = (0.0, 1.0, 0.0)
RED: Rgb = (1.0, 0.0, 0.0)
OFF: Rgb = (0.0, 0.0, 0.0)


def scaled(colour: Rgb, level: float) -> Rgb:
    """The colour at `level` (0..1) of its full brightness."""
    r, g, b = colour
    return (r * level, g * level, b * level)


def dark(pixels: int) -> Frame:
    """A frame with every pixel off."""
    return (OFF,) * pixels


@dataclass(frozen=True)
class Step:
    """Reach `level` (0..1) and stay `seconds`; with `fade`, ramp there over `seconds`."""

    level: float
    seconds: float = 0.0
    fade: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.level <= 1.0:
            raise ValueError(f"step level must be within 0..1, got {self.level}")
        if self.seconds < 0.0:
            raise ValueError(f"step seconds must not be negative, got {self.seconds}")


@dataclass(frozen=True)
class Pattern:
    """A colour, a repeating cycle of steps (one step: static), and an optional chase.

    `chase` is the levels of a moving head and its tail, head first, e.g.
    (1.0, 0.4, 0.1): on a strip of N pixels the head moves one pixel every
    cycle_seconds / N, so it goes round once per cycle whatever N is.
    """

    colour: Rgb
    steps: tuple[Step, ...]
    chase: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a pattern needs at least one step")
        if any(not 0.0 <= c <= 1.0 for c in self.colour):
            raise ValueError(f"colour channels must be within 0..1, got {self.colour}")
        # A repeating cycle with a zero-length step would spin the event loop.
        if not self.is_static and any(step.seconds <= 0.0 for step in self.steps):
            raise ValueError("every step of an animated pattern needs seconds > 0")
        if any(not 0.0 <= level <= 1.0 for level in self.chase):
            raise ValueError(f"chase levels must be within 0..1, got {self.chase}")
        if self.chase and self.is_static:
            raise ValueError("a chase needs a cycle of steps to set its speed")

    @property
    def is_static(self) -> bool:
        """True when the pattern is one level held for as long as the state lasts."""
        return len(self.steps) == 1

    @property
    def cycle_seconds(self) -> float:
        """Length of one cycle; 0 for a static pattern."""
        return 0.0 if self.is_static else sum(step.seconds for step in self.steps)

    def levels(self, frame_rate: float) -> tuple[tuple[float, float], ...]:
        """One cycle as (level, seconds to hold it); fades become `frame_rate` steps/s.

        A fade starts from the level before it, and the first step follows the
        last, so the cycle loops without a jump.
        """
        levels: list[tuple[float, float]] = []
        level = self.steps[-1].level
        for step in self.steps:
            if step.fade:
                count = max(1, round(step.seconds * frame_rate))
                start = level
                levels.extend(
                    (start + (step.level - start) * i / count, step.seconds / count)
                    for i in range(1, count + 1)
                )
            else:
                levels.append((step.level, step.seconds))
            level = step.level
        return tuple(levels)

    def frames(self, frame_rate: float, pixels: int = 1) -> tuple[tuple[Frame, float], ...]:
        """One cycle as (frame, seconds to hold it) for a driver of `pixels` lights.

        A cycle of one frame (seconds 0) is shown once and held.
        """
        if pixels < 1:
            raise ValueError(f"a driver has at least one pixel, got {pixels}")
        if self.chase and pixels > 1:
            return self._chase_frames(pixels)
        return tuple(
            ((scaled(self.colour, level),) * pixels, seconds)
            for level, seconds in self.levels(frame_rate)
        )

    def _chase_frames(self, pixels: int) -> tuple[tuple[Frame, float], ...]:
        seconds = self.cycle_seconds / pixels
        frames = []
        for head in range(pixels):
            frame = list(dark(pixels))
            for behind, level in enumerate(self.chase[:pixels]):
                frame[(head - behind) % pixels] = scaled(self.colour, level)
            frames.append((tuple(frame), seconds))
        return tuple(frames)


# One row per state (the names of device.states.State). Timings chosen to be
# told apart at a glance: off, fast blink, solid, slow blink (a spinning light
# on a strip), breathing, and a double flash that no other state makes.
PATTERNS: Mapping[str, Pattern] = MappingProxyType(
    {
        "idle": Pattern(WHITE, (Step(0.0),)),
        "connecting": Pattern(WHITE, (Step(1.0, 0.15), Step(0.0, 0.15))),
        "listening": Pattern(BLUE, (Step(1.0),)),
        "thinking": Pattern(AMBER, (Step(1.0, 0.6), Step(0.0, 0.6)), chase=(1.0, 0.4, 0.1)),
        "speaking": Pattern(GREEN, (Step(1.0, 0.6, fade=True), Step(0.15, 0.6, fade=True))),
        "error": Pattern(RED, (Step(1.0, 0.15), Step(0.0, 0.15), Step(1.0, 0.15), Step(0.0, 0.9))),
    }
)
