"""Camera frames while someone talks to the box, and the camera on only around that.

Frames cost tokens and show the inside of a home, so the appliance asks for them
only while a person is talking to the box (`start_frames` at the press,
`stop_frames` at the release). The camera is switched on at the first request,
kept on `linger_s` after the last frame for a quick follow-up, and switched off
at once by `aclose()`. Frames are paced on a fixed grid of 1/fps seconds, the
first as soon as the camera delivers one; a capture still running when a tick
comes makes that tick be skipped, so frames are dropped, never queued.

One task owns the camera for as long as it is on. Starting and stopping the
camera, taking and encoding frames all happen in other threads; `on_frame` and
`on_failure` are called on the event loop. A camera that fails to start or dies
is reported once (a warning and `on_failure`), and the feed stays off until
`aclose()`: the session goes on with audio only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from device.hw.camera_sources import (
    CameraError,
    Frame,
    FrameSource,
    UnusableFrame,
    brightest,
    encode_jpeg,
    make_source,
)
from device.logs import AtMostEvery, SaidOnce
from device.tasks import failure_seen, stop_task
from device.workers import STOP_WAIT_S, in_own_thread

if TYPE_CHECKING:
    from device.config import CameraConfig

__all__ = ["CameraError", "CameraFeed", "Still", "capture_still"]

logger = logging.getLogger(__name__)

#: A camera that delivers no frame for this long is taken for dead.
CAPTURE_TIMEOUT_S = 5.0
#: Switching a camera on or off takes a second or two; one that takes this long is stuck.
SWITCH_TIMEOUT_S = 10.0
#: A picture whose brightest pixels (the top 1%) are darker than this, of 255, shows nothing.
BLACK_LEVEL = 12
#: A camera's first frames may come before its exposure has settled (a Pi camera's first
#: few, black in a room it then shows well): the doctor's picture, while black, is taken
#: again every SETTLE_PAUSE_S for this long after the first frame before it is believed.
SETTLE_S = 1.0
SETTLE_PAUSE_S = 0.1
#: The least of the switch limit a stop after a start that a close cancelled is given: a
#: start that came back late in its limit leaves the stop the time a stop takes, not none
#: (the journal would call a working camera stuck), and the two stay well within the
#: watchdog's margin (1.25 limits and a heartbeat's 15 s: 27.5 s of WatchdogSec=30 s).
STOP_SHARE = 0.25
#: The Live API takes at most one frame a second: a quick release and press within a
#: session waits out the rest of that second from the last frame, however fast its start.
MIN_FRAME_GAP_S = 1.0
#: Frames skipped as undecodable are said in the journal at most this often.
UNUSABLE_LOG_EVERY_S = 600.0

T = TypeVar("T")


class CameraStuck(CameraError):
    """A call into the camera (start, stop) that did not return in time."""


class _Released(Exception):
    """Frames stopped while the camera sent only unusable ones: no usable one is waited for
    (each try is another picture of the room, for a turn that is over)."""


async def _in_thread(
    function: Callable[[], T],
    limit_s: float,
    on_stuck: Callable[[asyncio.Future[Any]], None] | None = None,
    spawn: Callable[[Callable[[], T]], Awaitable[T]] = asyncio.to_thread,
) -> T:
    """Run a blocking camera call in a worker thread (`spawn`'s), for at most `limit_s`.

    A camera that is starting cannot be interrupted: cancelled, this still waits for
    the call (within the same limit), so that whoever cancelled can rely on the camera
    being off once we are done. A call that outlasts the limit goes on in its thread,
    which cannot be stopped: `on_stuck` gets it, and CameraStuck (or the cancellation)
    is raised. The part fails, not the box.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    running = asyncio.ensure_future(spawn(function))
    running.add_done_callback(failure_seen)  # given up on: said as stuck or cancelled
    try:
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(running)
    except TimeoutError:
        raise CameraStuck(f"the camera did not answer in {limit_s:g} s") from None
    except asyncio.CancelledError:
        await asyncio.wait({running}, timeout=max(0.0, deadline - loop.time()))
        raise
    finally:
        if not running.done() and on_stuck is not None:
            on_stuck(running)


async def _grab(
    source: FrameSource,
    timeout_s: float,
    on_unusable: Callable[[UnusableFrame], None] = lambda _: None,
) -> Frame:
    """The next frame that can be used: one that cannot (`on_unusable` is told) is
    skipped, and a camera that sends none for `timeout_s` is taken for dead; said as
    sending only broken frames if it did send some (its cable, not a silent camera)."""
    skipped, last = 0, None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    return await source.grab()
                except UnusableFrame as exc:
                    skipped, last = skipped + 1, exc
                    on_unusable(exc)
    except TimeoutError:
        if last is not None:
            raise CameraError(
                f"the camera delivered {skipped} frame(s) in {timeout_s:g} s, none that "
                f"could be decoded; the last: {last}"
            ) from None
        raise CameraError(f"the camera delivered no frame for {timeout_s:g} s") from None


async def _stop(
    source: FrameSource,
    limit_s: float,
    on_stuck: Callable[[asyncio.Future[Any]], None] | None = None,
    spawn: Callable[[Callable[[], None]], Awaitable[None]] = asyncio.to_thread,
) -> None:
    """Switch the camera off; a camera that fails even at that is logged, not raised."""
    try:
        await _in_thread(source.stop, limit_s, on_stuck, spawn)
    except Exception as exc:
        logger.warning("the camera did not stop cleanly: %s", exc)


def _open_light(pin: int | None) -> Any:
    """The LED on `pin` that shows the camera is on (off until it is); None without a pin."""
    if pin is None:
        return None
    try:
        from gpiozero import LED

        return LED(pin)
    except Exception as exc:
        # The light is a privacy promise: without it the camera stays off.
        raise CameraError(f"[camera] led_pin {pin}: {exc}") from exc


def _next_tick(due: float, period: float, now: float) -> float:
    """The first tick of the grid `due + k * period` that is still ahead of `now`."""
    return due + period * (math.floor((now - due) / period) + 1)


class CameraFeed:
    """Frames while someone talks to the box; the camera itself runs only around that."""

    def __init__(
        self,
        cfg: CameraConfig,
        on_frame: Callable[[bytes, float], None],
        on_failure: Callable[[str], None] | None = None,
        *,
        capture_timeout_s: float = CAPTURE_TIMEOUT_S,
        switch_timeout_s: float = SWITCH_TIMEOUT_S,
    ) -> None:
        """`on_frame(jpeg, t)`: each frame and the time.monotonic() it was taken, on the loop.

        `on_failure(reason)`: once, on the loop, when the camera cannot start or dies.
        Nothing is opened here.
        """
        self._cfg = cfg
        self._on_frame = on_frame
        self._on_failure = on_failure
        self._capture_timeout_s = capture_timeout_s
        self._switch_timeout_s = switch_timeout_s
        self._stuck: asyncio.Future[Any] | None = None  # a start or stop that never returned
        self._recovering: asyncio.Task[None] | None = None  # switches it off once it returns
        self._source = make_source(cfg.source, cfg.size)
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # start_frames / stop_frames happened
        self._wanted = False  # between start_frames and stop_frames
        self._generation = 0  # counts start_frames calls that (re)started the frames
        self._running = False
        self._failed = False
        self._failure: str | None = None  # the last failure's reason, till a frame comes
        self._closing = False
        self._led: Any = None
        self._frames = 0  # delivered during the current camera run, for the journal
        self._last_sent: float | None = None  # when the session's last frame was handed on
        self._unusable = 0  # frames skipped as undecodable
        self._unusable_told = AtMostEvery(UNUSABLE_LOG_EVERY_S)
        # A camera gone for good fails each conversation: one line while it stays gone
        # (a month of presses put one a press in the journal), news again once it worked.
        self._failing = SaidOnce(logger, fields={"LIVE_CAMERA": "failed"})

    @property
    def running(self) -> bool:
        """The camera (hardware or synthetic) is on, or may be: a start or stop stuck in it
        keeps its light on until the call returns, and `ctl status` says what the light does."""
        return self._running or self._stuck is not None

    @property
    def failure(self) -> str | None:
        """Why the camera last failed, until it delivers a frame again: the journal said it
        once, and `ctl status` and the doctor, run later, say it too."""
        return self._failure

    def start_frames(self) -> None:
        """Frames from now on: the camera starts if it is off, the first frame comes as
        soon as it can, then one every 1/fps seconds. Idempotent while already wanted."""
        if not self._cfg.enabled or self._failed or self._closing or self._wanted:
            return
        if self._stuck is not None:
            return  # stuck in its last call (said when it got stuck): audio only
        self._wanted = True
        self._generation += 1
        self._changed.set()
        # Done, not None: a task cancelled before it first ran (a session ended in the same
        # breath as its press) never reached the `finally` that forgets it.
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="camera")

    def stop_frames(self) -> None:
        """No more frames; the camera stops `linger_s` later unless start_frames() comes first."""
        if self._wanted:
            self._wanted = False
            self._changed.set()

    async def shutdown(self) -> None:
        """The daemon stops: camera off, and no task of the feed's left, stuck or not.

        A start in progress is waited for STOP_WAIT_S at most, not the switch's limit
        (SWITCH_TIMEOUT_S, as long as the unit's TimeoutStopSec, where systemd kills the
        box): the process's end switches the camera off, and a call stuck in it is left
        to the workers' exit. A stop that hangs is given as long: it starts only once the
        task is cancelled, and would wait out the switch's limit past the cancellation."""
        self._switch_timeout_s = min(self._switch_timeout_s, STOP_WAIT_S)
        try:
            async with asyncio.timeout(STOP_WAIT_S):
                await self.aclose()
        except TimeoutError:
            logger.warning("the camera is stuck in a call; stopping without waiting for it")
            await stop_task(self._task)  # cancelled again, it stops waiting for the call
        await stop_task(self._recovering)

    async def aclose(self) -> None:
        """Camera off now and every task done; the feed may be started again afterwards.

        A camera stuck in a call stays with the task that switches it off once the call
        returns (it outlives the session: the camera must not be left on)."""
        self._closing = True
        self._wanted = False
        try:
            if self._task is not None and self._task.cancelling():
                # A close already under way (the session's, cancelled by a stop) waits for
                # a start to return, then stops the camera: cancelled again, it gave up on
                # the start at once, and left a camera that came on to the process's end.
                await asyncio.wait({self._task})
            else:
                await stop_task(self._task)
            if self._led is not None and self._stuck is None:  # else lit till the stop returns
                self._led.close()
                self._led = None
        finally:
            self._closing = False
            self._failed = False
            self._last_sent = None  # the session is over: the next one starts afresh

    # --- the task that owns the camera -----------------------------------------------

    async def _run(self) -> None:
        try:
            while self._wanted:  # a press while the camera was switching off starts it again
                await self._camera_run()
        except Exception as exc:
            self._fail(exc)
        finally:
            self._task = None

    async def _camera_run(self) -> None:
        """One stretch of the camera being on: start, frames and lingering, stop."""
        led = self._open_led()
        self._frames = 0
        loop = asyncio.get_running_loop()
        switched_by: float | None = loop.time() + self._switch_timeout_s  # while starting
        came_on = False  # the start returned, if only after a close: "off" is said too

        def start() -> str:
            nonlocal came_on
            description = self._source.start()
            came_on = True
            return description

        try:
            if led is not None:  # lit from the start call on: the camera may be on from then
                led.on()
            self._running = True  # as the light: `ctl status` said off while it started
            description = await _in_thread(start, self._switch_timeout_s, self._got_stuck)
            switched_by = None
            self._failing.ended()
            logger.info("camera on: %s", description, extra={"LIVE_CAMERA": "on"})
            while True:
                if self._wanted:
                    await self._stream()
                    continue
                deadline = time.monotonic() + self._cfg.linger_s
                await self._wait(deadline, lambda: not self._wanted)
                if not self._wanted:
                    return
        finally:
            # A close that came while the camera was starting waited for the start: the stop
            # gets what is left of that limit (STOP_SHARE of it at least), not a new one. The
            # state machine waits for the close, and two limits in a row outlasted the
            # watchdog (WatchdogSec=30 s, a heartbeat every 15 s): systemd killed a box
            # whose camera alone had failed.
            limit = self._switch_timeout_s
            if switched_by is not None:
                limit = max(limit * STOP_SHARE, switched_by - loop.time())
            stuck_in = "start" if self._stuck is not None else "stop"
            try:
                if self._stuck is None:  # a camera stuck in its start cannot be stopped now
                    await _stop(self._source, limit, self._got_stuck)
            finally:
                self._running = False
                self._said_off(led, came_on, stuck_in)

    async def _stream(self) -> None:
        """Frames until stop_frames: the first at once, then on a grid of 1/fps seconds."""
        generation = self._generation
        period = 1.0 / self._cfg.fps
        due = time.monotonic()
        if self._last_sent is not None:  # a press again: at once, but the API's second apart
            due = max(due, self._last_sent + MIN_FRAME_GAP_S)
        while True:
            await self._wait(due, lambda: self._streaming(generation))
            if not self._streaming(generation):
                return
            try:
                rgb, taken = await _grab(
                    self._source,
                    self._capture_timeout_s,
                    lambda frame: self._skipped(frame, generation),
                )
            except _Released:
                return
            jpeg = await asyncio.to_thread(encode_jpeg, rgb, self._cfg.size, self._cfg.quality)
            if not self._streaming(generation):
                return  # released while this frame was being taken: dropped, never sent late
            self._deliver(jpeg, taken)
            self._last_sent = time.monotonic()
            due = _next_tick(due, period, time.monotonic())

    def _skipped(self, unusable: UnusableFrame, generation: int) -> None:
        """A frame skipped: counted, and said in the journal now and then, not each time;
        _Released once the frames were stopped (no next one is taken)."""
        self._unusable += 1
        released = not self._streaming(generation)
        if self._unusable_told.due():
            logger.warning(
                "skipped %d camera frame(s) so far, %s: %s",
                self._unusable,
                "none taken after it (the frames stopped)" if released else "the next one used",
                unusable,
                extra={"LIVE_CAMERA": "skipped", "LIVE_ERROR": str(unusable)},
            )
        if released:
            raise _Released from unusable

    def _streaming(self, generation: int) -> bool:
        return self._wanted and self._generation == generation

    async def _wait(self, deadline: float, keep_waiting: Callable[[], bool]) -> None:
        """Sleep until `deadline`, or until a start/stop makes keep_waiting() false."""
        while keep_waiting():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return

    def _got_stuck(self, call: asyncio.Future[Any]) -> None:
        """A start or stop that never returned: the camera is left alone until it does,
        then switched off (a start that returns at last has switched it on)."""
        self._stuck = call
        self._recovering = asyncio.create_task(self._off_when_back(call), name="camera-stuck")

    def _said_off(self, led: Any, came_on: bool, stuck_in: str) -> None:
        """The run is over: light off and, after a start, "camera off" in the journal;
        unless a start or stop is stuck in the camera (it may still be on: the light
        stays on until the call returns, and `_off_when_back` switches both off)."""
        if self._stuck is not None:
            logger.warning(
                "the camera is stuck in its %s after %d frame(s); it may be on, and its "
                "light stays on until the call returns",
                stuck_in,
                self._frames,
                extra={"LIVE_CAMERA": "stuck", "LIVE_CAMERA_FRAMES": self._frames},
            )
            return
        if led is not None:
            led.off()
        if came_on:
            logger.info(
                "camera off after %d frame(s)",
                self._frames,
                extra={"LIVE_CAMERA": "off", "LIVE_CAMERA_FRAMES": self._frames},
            )

    async def _off_when_back(self, call: asyncio.Future[Any]) -> None:
        """Switches the camera off once `call` returns; a stop that hangs in its turn keeps
        it stuck (light on, "stuck" in the journal and `ctl status`) until that returns."""
        stuck: asyncio.Future[Any] | None = call

        def stuck_again(stop: asyncio.Future[Any]) -> None:
            nonlocal stuck
            stuck = self._stuck = stop

        try:
            while stuck is not None:
                await asyncio.wait({stuck})
                stuck = None
                await _stop(self._source, self._switch_timeout_s, stuck_again)
            if self._led is not None:
                self._led.off()
            logger.info(
                "the stuck camera call returned; camera off after %d frame(s)",
                self._frames,  # no run starts while a call is stuck: still this run's
                extra={"LIVE_CAMERA": "off", "LIVE_CAMERA_FRAMES": self._frames},
            )
        finally:
            self._stuck = self._recovering = None

    def _deliver(self, jpeg: bytes, taken: float) -> None:
        self._frames += 1
        self._failure = None
        try:
            self._on_frame(jpeg, taken)
        except Exception:
            logger.exception("the camera frame handler failed")

    def _open_led(self) -> Any:
        """The LED that shows the camera is on, if one is configured (off until it is)."""
        if self._led is None:
            self._led = _open_light(self._cfg.led_pin)
        return self._led

    def _fail(self, exc: Exception) -> None:
        self._failed, self._wanted = True, False
        reason = str(exc) if isinstance(exc, CameraError) else f"the camera failed: {exc!r}"
        self._failure = reason
        self._failing.hit(
            "camera off until the session ends, going on without video: %s",
            reason,
            extra={"LIVE_ERROR": reason},
            exc_info=not isinstance(exc, CameraError),
        )
        if self._on_failure is not None:
            try:
                self._on_failure(reason)
            except Exception:
                logger.exception("the camera failure handler failed")


@dataclass(frozen=True)
class Still:
    """The doctor's picture: the JPEG a frame would be, and the size of the camera's own
    picture it was made from (one much smaller was blown up to cfg.size x cfg.size)."""

    jpeg: bytes
    width: int
    height: int
    brightest: int  # of 255, its brightest 1% (`brightest`)


async def capture_still(cfg: CameraConfig) -> Still:
    """One frame of cfg.size x cfg.size, for `live-appliance doctor camera`; CameraError if
    not."""
    if not cfg.enabled:
        raise CameraError("the camera is turned off ([camera] enabled = false)")
    # Daemon threads of their own, not the pool: a call stuck in the camera (a ribbon cable
    # worked loose) held the command's end for good, its loop's close joining the pool.
    spawn: Callable[[Callable[[], Any]], Awaitable[Any]] = partial(
        in_own_thread, name="doctor-camera"
    )
    source = make_source(cfg.source, cfg.size)
    light = _open_light(cfg.led_pin)  # lit as the daemon's is: the room is told
    stuck = False
    try:
        if light is not None:
            light.on()
        await _in_thread(source.start, SWITCH_TIMEOUT_S, spawn=spawn)
        settled_by = None  # SETTLE_S after the first frame (a webcam's may come late)
        while True:
            rgb, _ = await _grab(source, CAPTURE_TIMEOUT_S)
            settled_by = settled_by or time.monotonic() + SETTLE_S
            jpeg = await asyncio.to_thread(encode_jpeg, rgb, cfg.size, cfg.quality)
            level = await asyncio.to_thread(brightest, jpeg)
            if level >= BLACK_LEVEL or time.monotonic() >= settled_by:
                return Still(jpeg, width=rgb.shape[1], height=rgb.shape[0], brightest=level)
            await asyncio.sleep(SETTLE_PAUSE_S)
    except CameraStuck:
        stuck = True  # still starting, it cannot be stopped
        raise
    finally:
        # A call stuck in the camera (its start, or its stop) may leave it filming: lit
        # until the process's end releases both.
        if not stuck:
            stop_stuck: list[object] = []
            await _stop(source, SWITCH_TIMEOUT_S, on_stuck=stop_stuck.append, spawn=spawn)
            stuck = bool(stop_stuck)
        if light is not None and not stuck:
            light.off()
            light.close()
