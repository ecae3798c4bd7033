"""Keeps an audio device open: says when it fails or vanishes, reopens it until it is back.

A USB speakerphone gets unplugged, a HAT's driver hiccups, PulseAudio moves a
sink away: PortAudio then stops calling back, or stops the stream. The keeper
notices either within a second, closes the stream, reports the failure once,
and tries to open the device again every `reopen_s` seconds; when that works it
reports the recovery. Opening and closing block for as long as PortAudio takes
(hundreds of milliseconds on a small Pi), so they run in a worker thread and
never stall the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from device.states import DeviceFailed, DeviceRecovered, Event

log = logging.getLogger(__name__)

#: A stream whose callback has not run for this long is taken as dead.
STALE_S = 1.0
CHECK_EVERY_S = 1.0
#: A device just opened may take this long to call back the first time (USB devices do).
START_GRACE_S = 5.0


class Endpoint(Protocol):
    """A capture or playback stream (`device.audio.capture.Capture`, `.playback.Playback`)."""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None: ...

    def stop(self) -> None: ...

    def healthy(self, stale_s: float, grace_s: float = 0.0) -> bool: ...


class DeviceKeeper:
    """Owns one endpoint's open/closed life and reports it as device events."""

    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        on_event: Callable[[Event], None],
        reopen_s: float,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self._on_event = on_event
        self._reopen_s = reopen_s
        self.failure: str | None = None  # why the device is not working, if it is not

    async def open(self) -> bool:
        """One attempt to open the device; a failure is reported, not raised."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self.endpoint.start, loop)
        except Exception as exc:
            self._failed(f"cannot open: {exc}".splitlines()[0])
            return False
        if self.failure is not None:
            log.info("%s is back", self.name, extra={"LIVE_DEVICE": self.name})
            self.failure = None
            self._on_event(DeviceRecovered(self.name))
        return True

    async def keep(self) -> None:
        """Watch the open device and reopen it whenever it fails; runs until cancelled."""
        while True:
            if self.failure is not None and not await self.open():
                await asyncio.sleep(self._reopen_s)
                continue
            await asyncio.sleep(CHECK_EVERY_S)
            if not self.endpoint.healthy(STALE_S, grace_s=START_GRACE_S):
                await asyncio.to_thread(self.endpoint.stop)
                self._failed("stopped delivering audio (unplugged?)")

    def _failed(self, reason: str) -> None:
        if self.failure is None:
            log.error(
                "%s %s; retrying every %.0f s",
                self.name,
                reason,
                self._reopen_s,
                extra={"LIVE_DEVICE": self.name, "LIVE_ERROR": reason},
            )
            self._on_event(DeviceFailed(self.name, reason))
        self.failure = reason
