"""The echo canceller's every call, recorded in the daemon and replayed offline.

The box's own voice taken for a person's (a false interruption) comes once in tens of
long replies on the loopback, and what caused it is in a few 10 ms frames of the
canceller's work just before. The echo benchmark runs its daemons through this module
(`python -m rig.echo_tap DIR run --config ...`): every canceller writes, to a file of its
own in DIR, what WebRTC's module was handed (the microphone and the speaker's
reference), what it handed back, and what went on towards the server after the guard.
The module is deterministic, so `python -m rig.echo_tap replay FILE --at T` runs a fresh
one over the same input, says whether its output is the same bit for bit, and prints the
frames of the moments before T (the capture's monotonic time, as the server's log has it).

Rig only: the installed box never writes what it hears anywhere.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from device.audio import echo, pcm
from device.audio.echo import Canceller, webrtc_module
from rig.server.vad import threshold_dbfs

HEADER = struct.Struct("<Bdii")  # kind, monotonic time, two sizes
MODULE, RESET, SENT = 0, 1, 2
NO_FAR = -1
#: The local server's voice detector at the box's default start sensitivity ("high"):
#: a frame louder than this is speech.
VOICE_DBFS = threshold_dbfs("START_SENSITIVITY_HIGH")


class TappedModule:
    """WebRTC's module, every call written down as it happens (unbuffered: a daemon
    stopped by SIGKILL loses nothing already processed)."""

    def __init__(
        self, module: Any, path: Path, *, echo: bool, noise: bool, latency_s: float = 0.0
    ) -> None:
        """`latency_s`: how far the module's output lags its input."""
        self._module = module
        self._file: BinaryIO = path.open("wb", buffering=0)
        self._file.write(json.dumps({"echo": echo, "noise": noise}).encode() + b"\n")
        self._latency_s = latency_s
        #: The end of the block being processed, by the capture's clock (monotonic time).
        self.recorded_until = 0.0

    def process(self, near: np.ndarray, far: np.ndarray | None) -> np.ndarray:
        out: np.ndarray = self._module.process(near, far)
        sizes = (near.size, NO_FAR if far is None else far.size)
        arrays = (near, out) if far is None else (near, far, out)
        self._write(MODULE, sizes, arrays)
        return out

    def reset(self) -> None:
        self._module.reset()
        self._write(RESET, (0, 0), ())

    def sent(
        self, recorded: np.ndarray, module_out: np.ndarray, sent: np.ndarray, waiting: int
    ) -> None:
        """What the guard made of the module's output, beside what was recorded; stamped
        with when its last sample was recorded (`waiting`: samples of the block held for
        the next one, less than a frame)."""
        until = self.recorded_until - self._latency_s - waiting / echo.RATE
        self._write(SENT, (sent.size, 0), (recorded, module_out, sent), until)

    def _write(
        self, kind: int, sizes: tuple[int, int], arrays: Sequence[np.ndarray],
        t: float | None = None,
    ) -> None:  # fmt: skip
        payload = b"".join(np.asarray(a, dtype="<i2").tobytes() for a in arrays)
        stamp = self.recorded_until if t is None else t
        self._file.write(HEADER.pack(kind, stamp, *sizes) + payload)


@contextmanager
def tapping(directory: Path) -> Iterator[None]:
    """While inside, every `Canceller` built records its calls into `directory`."""
    built, process, guard = Canceller.__init__, Canceller.process, Canceller._guard
    count = itertools.count(1)

    def tapped_init(self: Canceller, far: echo.FarEnd | None, *, noise: bool = False) -> None:
        built(self, far, noise=noise)
        path = directory / f"canceller-{os.getpid()}-{next(count)}.tap"
        self._apm = TappedModule(
            self._apm, path, echo=far is not None, noise=noise, latency_s=self.latency_s
        )

    def tapped_process(
        self: Canceller, samples: np.ndarray, t_first: float, active: bool = True
    ) -> np.ndarray:
        self._apm.recorded_until = t_first + samples.size / echo.RATE
        return process(self, samples, t_first, active)

    def tapped_guard(
        self: Canceller, out: np.ndarray, near: np.ndarray, far: np.ndarray | None
    ) -> np.ndarray:
        sent = guard(self, out, near, far)
        self._apm.sent(near, out, sent, waiting=self._held.size)
        return sent

    Canceller.__init__ = tapped_init  # type: ignore[method-assign]
    Canceller.process = tapped_process  # type: ignore[method-assign]
    Canceller._guard = tapped_guard  # type: ignore[method-assign]
    try:
        yield
    finally:
        Canceller.__init__ = built  # type: ignore[method-assign]
        Canceller.process = process  # type: ignore[method-assign]
        Canceller._guard = guard  # type: ignore[method-assign]


# -- reading and replaying -----------------------------------------------------------------


@dataclass
class Call:
    kind: int
    t: float
    arrays: tuple[np.ndarray, ...]


def read(path: Path) -> tuple[dict[str, bool], list[Call]]:
    """A recording's settings and its calls, in order (a last call cut short is left out)."""
    data = path.read_bytes()
    line_end = data.index(b"\n") + 1
    settings = json.loads(data[:line_end])
    calls: list[Call] = []
    at = line_end
    while at + HEADER.size <= len(data):
        kind, t, a, b = HEADER.unpack_from(data, at)
        counts = {MODULE: (a, a) if b == NO_FAR else (a, b, a), RESET: (), SENT: (a, a, a)}[kind]
        end = at + HEADER.size + 2 * sum(counts)
        if end > len(data):
            break
        flat = np.frombuffer(data, dtype="<i2", count=sum(counts), offset=at + HEADER.size)
        parts = np.split(flat, np.cumsum(counts)[:-1]) if counts else []
        calls.append(Call(kind, t, tuple(parts)))
        at = end
    return settings, calls


@dataclass
class Replay:
    """A recording run again through a fresh module."""

    calls: int = 0  # to the module
    differing: list[float] = field(default_factory=list)  # times of calls whose output differed


def replay(path: Path, module: Callable[..., Any] = webrtc_module) -> Replay:
    settings, calls = read(path)
    fresh = module(echo=settings["echo"], noise=settings["noise"])
    result = Replay()
    for call in calls:
        if call.kind == RESET:
            fresh.reset()
        elif call.kind == MODULE:
            near, *far, out = call.arrays
            again = fresh.process(near.copy(), far[0].copy() if far else None)
            result.calls += 1
            if not np.array_equal(again, out):
                result.differing.append(call.t)
    return result


@dataclass(frozen=True)
class Frame:
    """One 10 ms frame on its way to the server, its loudness at each step (dBFS)."""

    t: float  # when its last sample was recorded (by the capture's clock)
    mic: float  # about the frame's mean (a microphone's DC offset out, as the guard does)
    module: float
    sent: float

    @property
    def loud(self) -> bool:
        """The server's detector would take it for speech (on its own)."""
        return self.sent > VOICE_DBFS

    @property
    def added(self) -> bool:
        """The module handed back more than the microphone recorded."""
        return self.module >= self.mic + echo.ADDED_DB


def frames(calls: list[Call], start: float, end: float) -> list[Frame]:
    """The frames handed on that were recorded in [start, end] (within the few ms a
    remainder of less than a frame waits for the next block)."""
    step = echo.FRAME / echo.RATE
    out: list[Frame] = []
    for call in calls:
        if call.kind != SENT or not start <= call.t <= end + 0.1:
            continue
        recorded, module_out, sent = call.arrays
        levels = list(zip(pcm.frame_dbfs(recorded, echo.FRAME, centred=True),
                          pcm.frame_dbfs(module_out, echo.FRAME),
                          pcm.frame_dbfs(sent, echo.FRAME), strict=True))  # fmt: skip
        for i, frame in enumerate(levels):
            t = call.t - (len(levels) - 1 - i) * step
            if start <= t <= end:
                out.append(Frame(t, *frame))
    return out


def held_by_guard(calls: list[Call], onset: float, until: float) -> float | None:
    """Seconds the canceller's guard held back a person's first 10 ms frame loud enough
    for the server, after the module let it through (0: not at all); None where it
    cannot tell: nothing loud came out of the module, or nothing loud went on, between
    `onset` and `until` (the server's interruption)."""
    heard = frames(calls, onset, until)
    let_through = next((f.t for f in heard if f.module > VOICE_DBFS), None)
    sent = next((f.t for f in heard if f.loud), None)
    if let_through is None or sent is None:
        return None
    return max(0.0, sent - let_through)


def all_calls(directory: Path) -> list[Call]:
    """Every recording's calls in `directory`, in time order (cancellers one after another;
    a file without its settings line, from a daemon killed as it began, has none)."""
    calls = [c for path in directory.glob("canceller-*.tap") if _started(path)
             for c in read(path)[1]]  # fmt: skip
    return sorted(calls, key=lambda c: c.t)


def _started(path: Path) -> bool:
    with path.open("rb") as f:
        return f.readline().endswith(b"\n")


def describe(path: Path, at: float | None, before_s: float) -> str:
    """What `replay` prints."""
    _, calls = read(path)
    again = replay(path)
    same = "bit for bit" if not again.differing else (
        f"{len(again.differing)} differ, the first at {again.differing[0]:.3f}")
    lines = [f"{path.name}: {again.calls} calls to the module replayed: {same}"]
    if at is not None:
        lines.append(f"frames handed on from {before_s:g} s before {at:.3f} (t - {at:.3f}):")
        for f in frames(calls, at - before_s, at):
            marks = " ".join(m for m, on in (("LOUD", f.loud), ("added", f.added)) if on)
            lines.append(f"  {f.t - at:+8.3f} s  mic {f.mic:6.1f}  module {f.module:6.1f}  "
                         f"sent {f.sent:6.1f}  {marks}".rstrip())  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] != ["replay"]:  # DIR, then the daemon's own arguments
        from device import cli

        if not args:
            print("usage: python -m rig.echo_tap DIR run ... | replay FILE [--at T]",
                  file=sys.stderr)  # fmt: skip
            return 2
        with tapping(Path(args[0])):
            return cli.main(args[1:])
    parser = argparse.ArgumentParser(prog="python -m rig.echo_tap replay")
    parser.add_argument("file", type=Path)
    parser.add_argument("--at", type=float, help="monotonic time to show the frames before")
    parser.add_argument("--before", type=float, default=2.0, metavar="SECONDS")
    parsed = parser.parse_args(args[1:])
    print(describe(parsed.file, parsed.at, parsed.before))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
