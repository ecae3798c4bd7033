"""A slow or starved Pi: systemd busy, an SD card that stalls writes, a speaker's thread late.

What is checked is what a person at the box would notice: a box restarted by its
watchdog while it works, a crackling reply the journal never mentions, a volume
change the model is told failed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from fakes import SPEAKERPHONE, FakeParts, IdlePcm, ListedPortAudio, card, config, running
from helpers import until

from device.appliance import Appliance
from device.audio import capture as capture_module
from device.audio.alsa import AlsaError
from device.audio.capture import Capture
from device.audio.keeper import STALE_S, AudioKeeper
from device.audio.playback import Playback
from device.parts import Parts
from device.service import Notifier
from device.states import Event, Heartbeat
from device.tasks import stop_task

#: WatchdogSec in these tests: its heartbeat every 30 s, so any ping sooner is a retry.
WATCHDOG_S = 60.0


class SocketNotifier(Notifier):
    """The real notifier on a real socket, keeping what systemd received."""

    def __init__(self, address: str) -> None:
        super().__init__({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))})
        self.messages: list[str] = []
        self.sent = asyncio.Event()

    def send(self, *fields: str) -> None:
        lost = self.lost
        super().send(*fields)
        if self.lost <= lost:  # got through
            self.messages.extend(fields)
            self.sent.set()

    def count(self, message: str) -> int:
        return self.messages.count(message)


@dataclass
class SystemdParts(FakeParts):
    """Fake parts, but a notifier that talks to a socket standing in for PID 1's."""

    address: ClassVar[str] = ""

    def notifier(self):  # type: ignore[no-untyped-def]
        return self._keep("notifier", SocketNotifier(self.address))


def fill(address: bytes) -> socket.socket:
    """A socket whose datagrams fill the queue of the one at `address` (PID 1 not reading)."""
    other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.connect(address)
    other.setblocking(False)
    try:
        while True:
            other.send(b"STATUS=another service")
    except BlockingIOError:
        return other


def drain(sock: socket.socket) -> list[bytes]:
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096))
    except BlockingIOError:
        return got


async def test_a_watchdog_ping_systemd_could_not_take_is_sent_again_well_before_the_next(
    tmp_path: Path,
) -> None:
    """PID 1 busy for a moment (a daemon-reload on a slow SD card, apt upgrading systemd):
    the one WATCHDOG=1 it cannot take must not leave the box without a ping for a whole
    WatchdogSec, or systemd kills a box that works (the conversation cut, the LEDs dark)."""
    name = f"review-slow-{uuid.uuid4().hex}"
    pid1 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid1.bind(b"\0" + name.encode())
    SystemdParts.address = "@" + name
    async with running(tmp_path, parts_class=SystemdParts, watchdog_s=WATCHDOG_S) as box:
        notifier: SocketNotifier = box.parts.made["notifier"]
        assert notifier.count("WATCHDOG=1") >= 1  # the start-up's heartbeat
        other = fill(b"\0" + name.encode())
        box.appliance.post(Heartbeat())  # the 15 s tick, while PID 1 reads nothing
        await asyncio.sleep(0.2)
        assert notifier.lost, "the ping was left out"
        fed = notifier.count("WATCHDOG=1")
        drain(pid1)  # PID 1 reads again
        started = time.monotonic()
        async with asyncio.timeout(5):
            while notifier.count("WATCHDOG=1") == fed:
                notifier.sent.clear()
                await notifier.sent.wait()
        assert time.monotonic() - started < WATCHDOG_S / 4
        other.close()
    pid1.close()


class RealSpeakerParts(FakeParts):
    """Fake parts, but the speaker the daemon makes (never opened here)."""

    speaker = Parts.speaker


async def test_a_speaker_running_out_mid_reply_is_said_in_the_journal_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A throttled Pi, or apt beside the box, makes the speaker's writer late: the reply
    clicks or breaks up. The owner reading the journal must find that, as they find the
    microphone's overflows, not only a count in `ctl status`."""
    appliance = Appliance(config(), RealSpeakerParts(config(), tmp_path))
    speaker = appliance.speaker
    assert isinstance(speaker, Playback)
    speaker._loop = asyncio.get_running_loop()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # three clicks in one reply: one line
            speaker._ran_out(waited=True)
        await asyncio.sleep(0.01)
    said = [r for r in caplog.records if "speaker" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert said[0].__dict__["LIVE_SPEAKER_UNDERFLOWS"] == 1
    assert appliance.status()["speaker_underflows"] == 3


class StalledPcm(IdlePcm):
    """A capture device that delivers on time, once read; its reader is held for longer
    than its buffer at its tenth read (a starved thread: apt, a thermally throttled Pi),
    so the card overran meanwhile, as ALSA says at the next read."""

    stall_s: ClassVar[float] = 2.5
    stalled: ClassVar[threading.Event] = threading.Event()
    reads = 0

    def read(self) -> tuple[bytes, int]:
        self.reads += 1
        if self.reads == 10 and not StalledPcm.stalled.is_set():
            StalledPcm.stalled.set()
            time.sleep(self.stall_s)
            raise AlsaError(errno.EPIPE, "overrun")
        return bytes(2 * self.channels * self.period_frames), 0

    def recover(self, error: AlsaError) -> None:
        """Started again, as ALSA does after an overrun."""


async def test_a_microphone_that_overran_while_its_reader_was_starved_is_not_taken_for_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reader held for over the card's buffer finds an overrun: a few words lost, the
    card fine. Taken for a microphone that stopped delivering, the keeper closed both
    devices: the reply cut, the error beep, the conversation over."""
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: ListedPortAudio(
        card(SPEAKERPHONE, 2)))  # fmt: skip
    monkeypatch.setattr(capture_module, "CapturePcm", StalledPcm)
    monkeypatch.setattr(StalledPcm, "stalled", threading.Event())
    events: list[Event] = []
    mic = Capture(lambda chunk, t: None)  # in a turn: read as audio arrives
    keeper = AudioKeeper({"microphone": mic}, events.append, 0.5)
    await keeper.open()
    keeping = asyncio.create_task(keeper.keep())
    try:
        await until(lambda: mic.overflows == 1, 5)
        await asyncio.sleep(STALE_S + 0.5)
        assert events == [], "a starved reader is no device gone"
        assert mic.trouble(STALE_S) is None
    finally:
        await stop_task(keeping)
        await keeper.close()
