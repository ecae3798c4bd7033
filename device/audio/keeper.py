"""Keeps the microphone and the speaker open: says when one fails or vanishes, reopens them.

A USB speakerphone gets unplugged, a HAT's driver hiccups, PulseAudio moves a
sink away: the microphone's reads then fail or bring nothing, and the speaker's
stream stops or its writes fail. The streams' own threads see that first and say
so (`on_change`); the keeper then closes the streams, reports the failure once,
and tries to open the devices again after `reopen_s` seconds, twice as long after
each try that fails (up to REOPEN_MAX_S); when that works it reports the recovery.
A device back only to fail again within SETTLED_S (a microphone that opens but
delivers nothing) keeps the longer wait: a box left with one broken device tries
it, and says so, now and then, not every few seconds for months.

While a device is missing, the keeper looks at the sound hardware (`sound_cards`)
every HARDWARE_LOOK_S and tries at once when it changed: at boot a USB card may
enumerate after the service started. Once the wait is at its longest, tries go on
only for a few rounds after the sound hardware changed (a card plugged in, taken
out or plugged back; a card is listed a moment before it can be opened), or every
BLIND_RETRY_S: each try starts and stops PortAudio, which keeps about 25 KB
each time (in the library, not here); at a try a minute a box with its
speakerphone unplugged grew 35 MB a day, past the unit's memory bound within a
week.

Nothing polls while all is well: the keeper looks at the streams itself every
second only while one is in the middle of calls into its driver (the speaker
playing: a call that never returns cannot say so), and otherwise every
`LOOK_EVERY_S`, for a thread stuck where it cannot tell. An idle box's event
loop sleeps.

Both streams close and reopen together. PortAudio lists the devices only when
the last user lets go of it, so a card that comes back under another `hw:`
number is found only if nothing held PortAudio meanwhile; and with either
device gone there is no conversation to keep anyway. Opening and closing block
for as long as PortAudio and ALSA take (hundreds of milliseconds on a small Pi), so they
run in a worker thread and never stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Protocol

from device.audio.devices import AudioDeviceError
from device.states import DeviceFailed, DeviceRecovered, Event
from device.tasks import failure_seen

log = logging.getLogger(__name__)

#: A stream whose thread has read or written nothing for this long past when it was due
#: (stuck in a call into the driver, or no audio coming) is taken as dead.
STALE_S = 1.0
#: How often the keeper looks while a stream is busy calling into its driver...
CHECK_EVERY_S = 1.0
#: ... and otherwise: the streams' threads report what they see at once.
LOOK_EVERY_S = 10.0
#: A device just opened may take this long to deliver its first audio (USB devices do).
START_GRACE_S = 5.0
#: Opening or closing a device takes hundreds of milliseconds on a small Pi; a call
#: into PortAudio that takes this long is stuck (a driver that hangs): the device is
#: reported failed and the call is left to finish alone, never started twice.
CALL_TIMEOUT_S = 10.0
#: The longest wait between tries to reopen a failed device.
REOPEN_MAX_S = 60.0
#: A device that fails again this soon after it was back was not really back.
SETTLED_S = 60.0
#: At the longest wait, with the sound hardware as it was at the last try, the next
#: try waits this long (a device that is there and fails, or one PulseAudio serves).
BLIND_RETRY_S = 30 * 60.0
#: Tries at the longest wait after the sound hardware changed.
TRIES_AFTER_A_CHANGE = 3
#: How often the keeper looks at the sound hardware while a device is missing: a card
#: that appears (one that enumerates after the service started, one plugged in) is
#: tried at once, not at the end of the backoff's wait.
HARDWARE_LOOK_S = 1.0
#: A call still stuck this long will not return: no thread can be stopped from outside,
#: and the device cannot be opened again beside it. The keeper then fails (DriverStuck),
#: the daemon stops with an error and systemd starts a fresh process, instead of a box
#: in error for good with its watchdog fed.
STUCK_FOR_GOOD_S = 60.0


def sound_cards(
    cards: Path = Path("/proc/asound/cards"), nodes: Path = Path("/dev/snd")
) -> tuple[object, ...]:
    """The kernel's sound cards and their device nodes, each node with its inode and
    change time: a card plugged in or taken out, or plugged back into the same port
    (its nodes made anew), or a driver that comes back, changes them. Unreadable:
    empty, and never changing."""
    try:
        listed = cards.read_text()
    except OSError:
        listed = ""
    made: list[tuple[str, int, int]] = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(nodes), key=lambda e: e.name):
            with contextlib.suppress(OSError):
                node = entry.stat(follow_symlinks=False)
                made.append((entry.name, node.st_ino, node.st_ctime_ns))
    return (listed, *made)


class DriverStuck(Exception):
    """A device's driver has held a call for STUCK_FOR_GOOD_S: only a new process helps."""


class Endpoint(Protocol):
    """A capture or playback stream (`device.audio.capture.Capture`, `.playback.Playback`)."""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None: ...

    def close_stream(self) -> None: ...

    def stop(self) -> None: ...

    def trouble(self, stale_s: float, grace_s: float = 0.0) -> str | None:
        """None while the stream works; otherwise what is wrong, for the journal."""

    #: Set by the keeper: the stream's thread calls it (on the loop) when the stream
    #: fails, stops delivering, or becomes busy; the keeper then looks at once.
    on_change: Callable[[], None] | None

    @property
    def busy(self) -> bool:
        """The stream's thread is calling into the driver (a call may hang unseen)."""


class AudioKeeper:
    """Owns the streams' open/closed life and reports it as device events."""

    def __init__(
        self,
        endpoints: dict[str, Endpoint],
        on_event: Callable[[Event], None],
        reopen_s: float,
        *,
        call_timeout_s: float = CALL_TIMEOUT_S,
        stuck_for_good_s: float = STUCK_FOR_GOOD_S,
        hardware: Callable[[], object] = sound_cards,
        heard_first: Callable[[Collection[str]], Awaitable[None]] | None = None,
    ) -> None:
        """`heard_first(failed)` is awaited when devices in use fail, once the failure is
        reported and before the streams close: the report's sound (the error earcon) into
        a speaker that still works (HDMI or the jack beside a USB microphone) plays out
        first, or the person's question was lost in silence."""
        self.endpoints = endpoints
        self._heard_first = heard_first
        self._on_event = on_event
        self._reopen_s = reopen_s
        self._retry_s = reopen_s  # the wait before the next try, doubled by each failed one
        self._recovered_at = -SETTLED_S  # time.monotonic() of the last recovery
        self._call_timeout_s = call_timeout_s
        self._stuck_for_good_s = stuck_for_good_s
        #: device -> a call that has not returned, and since when
        self._stuck: dict[str, tuple[asyncio.Future[None], float]] = {}
        self.failures: dict[str, str] = {}  # device name -> why it is not working
        self._hardware = hardware
        self._tried_at = -math.inf  # the last open
        self._tried_with: object = None  # the sound hardware as the last open began
        self._seen: object = None  # the sound hardware at the last look (a round's)
        self._eager = 0  # tries still due at the longest wait after a change
        self._changed = asyncio.Event()
        for endpoint in endpoints.values():
            endpoint.on_change = self._changed.set

    async def open(self) -> None:
        """Open every device; the ones that fail are reported, not raised. A failed device
        is back only once all open: with one failing, all close again, and one that opened
        meanwhile may not be the card that went (unset, a speaker's "default" is a Pi's
        jack while the USB speakerphone is out)."""
        loop = asyncio.get_running_loop()
        was_working = not self.failures
        self._tried_at = time.monotonic()
        self._tried_with = self._hardware()
        failed: dict[str, str] = {}
        for name, endpoint in self.endpoints.items():
            try:
                await self._call(name, functools.partial(endpoint.start, loop))
            except Exception as exc:
                failed[name] = f"cannot open: {_one_line(exc)}"
        if failed:
            self._plan_retry(was_working)
            self._failed(failed)
            await self.close()
            return
        for name in list(self.failures):
            del self.failures[name]
            self._recovered_at = time.monotonic()
            log.info("%s is back", name, extra={"LIVE_DEVICE": name})
            self._on_event(DeviceRecovered(name))

    async def keep(self) -> None:
        """Watch the open devices and reopen them whenever one fails; runs until cancelled."""
        while True:
            if self.failures:
                await self._until_retry_or_new_hardware()
                self._give_up_if_stuck_for_good()
                if not self._worth_a_try():
                    continue
                await self.open()
                continue
            busy = any(endpoint.busy for endpoint in self.endpoints.values())
            looked = await self._until_changed(CHECK_EVERY_S if busy else LOOK_EVERY_S)
            sick = self._sick()
            if sick and looked:
                # Nothing said so: a stream silent for STALE_S may be one the process's stall
                # held (a loaded CPU, or the kernel reclaiming memory at the unit's
                # MemoryHigh, up to 2 s at a time), which the keeper woke from first. It
                # gets STALE_S more to show it lives; a driver that hangs does not.
                await asyncio.sleep(STALE_S)
                sick = self._sick()
            if sick:
                self._plan_retry(was_working=True)
                self._failed(
                    {name: f"stopped delivering audio (unplugged?): {trouble}"
                     for name, trouble in sick.items()}
                )
                if self._heard_first is not None:
                    await self._heard_first(tuple(sick))
                await self.close()

    async def _until_retry_or_new_hardware(self) -> None:
        """Sleep the wait before the next try, cut short when the sound hardware is no
        longer as it was when the last try began: at a cold boot a USB card enumerates
        seconds after the service started, and the backoff's next try (3, 9, 21, 45, 93 s)
        kept the box in error up to a minute past it; a card's nodes come while the try
        its listing brought fails. A look reads /proc/asound/cards and /dev/snd only.
        Not once the wait is at its longest: a card that keeps coming and going (a loose
        cable, a hub browning out) would be tried at every change, and each try keeps
        about 25 KB in PortAudio (`_worth_a_try` bounds those tries)."""
        deadline = time.monotonic() + min(self._retry_s, self._until_stuck_for_good())
        if self._retry_s >= REOPEN_MAX_S:
            await asyncio.sleep(deadline - time.monotonic())
            return
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, HARDWARE_LOOK_S))
            if self._hardware() != self._tried_with:
                return

    def _sick(self) -> dict[str, str]:
        """What is wrong with each stream in trouble."""
        return {
            name: trouble
            for name, endpoint in self.endpoints.items()
            if (trouble := endpoint.trouble(STALE_S, grace_s=START_GRACE_S))
        }

    async def _until_changed(self, seconds: float) -> bool:
        """Sleep `seconds`, or until a stream says something changed; True for the former
        (the keeper looks on its own, no stream having said anything)."""
        try:
            async with asyncio.timeout(seconds):
                await self._changed.wait()
        except TimeoutError:
            return True
        finally:
            self._changed.clear()  # a change from here on wakes the next wait
        return False

    async def close(self, limit_s: float | None = None) -> None:
        """Close every stream: PortAudio in a worker thread, each call within `limit_s` (by
        default the keeper's limit), the rest back on the loop. A call stuck in a driver
        is never waited for on the loop: when the daemon stops, it is left to the worker
        pool's exit (systemd would kill the box at TimeoutStopSec instead)."""
        for name, endpoint in self.endpoints.items():
            if self._is_stuck(name):
                continue  # said when it got stuck; stop() would wait for PortAudio on the loop
            try:
                await self._call(name, endpoint.close_stream, limit_s)
            except TimeoutError as exc:
                log.warning("closing the %s failed: %s", name, exc)
                continue
            except Exception as exc:  # a device that is gone may fail to close: it is closed
                log.warning("closing the %s failed: %s", name, exc)
            endpoint.stop()  # nothing left for PortAudio: buffers and timers, on the loop

    async def _call(
        self, name: str, function: Callable[[], None], limit_s: float | None = None
    ) -> None:
        """A blocking PortAudio call for `name` in a worker thread, within `limit_s` (by
        default the keeper's limit); none while an earlier one for the same device is
        still stuck."""
        limit = self._call_timeout_s if limit_s is None else limit_s
        if self._is_stuck(name):
            raise TimeoutError(f"still stuck in PortAudio for over {limit:g} s")
        # A future, not a task: a call stuck for good is left to the worker pool's exit,
        # owned by `_stuck`, never a task still pending when the daemon stops.
        call = asyncio.get_running_loop().run_in_executor(None, function)
        try:
            async with asyncio.timeout(limit):
                await asyncio.shield(call)
        except TimeoutError:
            self._left_running(name, call)
            raise TimeoutError(f"PortAudio did not answer in {limit:g} s") from None
        except asyncio.CancelledError:  # a stop during start-up: the call goes on alone
            self._left_running(name, call)
            raise

    def _left_running(self, name: str, call: asyncio.Future[None]) -> None:
        """A call nobody waits for any more: no other call for `name` until it returns
        (PortAudio must not close a stream another thread is still opening)."""
        if not call.done():
            self._stuck[name] = (call, time.monotonic())
            call.add_done_callback(failure_seen)

    def _is_stuck(self, name: str) -> bool:
        """A call for `name` has not returned (forgotten once it has)."""
        stuck = self._stuck.get(name)
        if stuck is not None and stuck[0].done():
            del self._stuck[name]
            return False
        return stuck is not None

    def _until_stuck_for_good(self) -> float:
        """Seconds until a call stuck now has been stuck for good (the backoff's wait, up
        to a minute, must not put the exit that far past it)."""
        since = [since for name, (_, since) in list(self._stuck.items()) if self._is_stuck(name)]
        if not since:
            return math.inf
        return max(0.0, min(since) + self._stuck_for_good_s - time.monotonic())

    def _give_up_if_stuck_for_good(self) -> None:
        """Raise DriverStuck for a call stuck past the keeper's patience."""
        for name in list(self._stuck):
            if self._is_stuck(name):
                stuck_s = time.monotonic() - self._stuck[name][1]
                if stuck_s >= self._stuck_for_good_s:
                    raise DriverStuck(
                        f"the {name}'s driver has not returned from a call for {stuck_s:.0f} s; "
                        "only a new process can open it again"
                    )

    def _worth_a_try(self) -> bool:
        """Whether to open the devices again now: while the wait still grows, yes; at its
        longest, for TRIES_AFTER_A_CHANGE rounds once the sound hardware changed, and
        BLIND_RETRY_S after the last try."""
        hardware = self._hardware()
        changed, self._seen = hardware != self._seen, hardware
        if self._retry_s < REOPEN_MAX_S:
            return True
        if changed:
            self._eager = TRIES_AFTER_A_CHANGE
        if self._eager:
            self._eager -= 1
            return True
        return time.monotonic() - self._tried_at >= BLIND_RETRY_S

    def _plan_retry(self, was_working: bool) -> None:
        """The wait before the next try: `reopen_s` for a new fault in devices that had
        settled, twice the last for one that persists or keeps coming back."""
        if was_working and time.monotonic() - self._recovered_at >= SETTLED_S:
            self._retry_s = self._reopen_s
        else:
            self._retry_s = min(self._retry_s * 2, max(REOPEN_MAX_S, self._reopen_s))

    def _failed(self, reasons: dict[str, str]) -> None:
        """Each device's failure to the state machine, and one journal line for those not
        failing already: a card that goes takes its microphone and its speaker at once,
        one event worth knowing."""
        new = {name: reason for name, reason in reasons.items() if name not in self.failures}
        self.failures.update(reasons)
        if not new:
            return
        log.error(
            "%s; trying again in %.3g s",
            "; ".join(f"{name} {reason}" for name, reason in new.items()),
            self._retry_s,
            extra={"LIVE_DEVICE": tuple(new), "LIVE_ERROR": "; ".join(new.values())},
        )
        for name, reason in new.items():
            self._on_event(DeviceFailed(name, reason))


def _one_line(exc: Exception) -> str:
    """Why an open failed, for one journal line: a device not found without the list of
    the ones there are (it follows on lines of its own), with its fix if it has one."""
    if isinstance(exc, AudioDeviceError):
        return f"{exc.summary}; {exc.fix}" if exc.fix else exc.summary
    return str(exc).splitlines()[0]
