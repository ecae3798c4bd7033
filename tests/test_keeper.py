"""The audio keeper on its own: a device whose driver hangs fails the part, not the box."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import itertools
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import ClassVar

import pytest
from fakes import SPEAKERPHONE, Cable, CablePcm, IdlePcm, ListedPortAudio, SilentOutput, card
from helpers import until

from device import logs
from device.audio import capture as capture_module
from device.audio import keeper as keeper_module
from device.audio import playback as playback_module
from device.audio import stream as stream_module
from device.audio.alsa import AlsaError
from device.audio.capture import Capture
from device.audio.devices import AudioDeviceError, DeviceInfo
from device.audio.keeper import (
    STALE_S,
    TRIES_AFTER_A_CHANGE,
    AudioKeeper,
    DriverStuck,
    sound_cards,
)
from device.audio.playback import Playback
from device.states import DeviceFailed, DeviceRecovered, Event
from device.tasks import stop_task

#: What PortAudio listed, for an error that lists it.
DEVICE = DeviceInfo(0, "bcm2835 Headphones: - (hw:0,0)", 0, 8, 44100)


class HangingDevice:
    """An endpoint whose open blocks until `gate` is set (a driver stuck in the kernel)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.starts = 0
        self.opened = False
        self.on_change: Callable[[], None] | None = None
        self.busy = False

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.starts += 1
        self.gate.wait()
        self.opened = True

    def close_stream(self) -> None:
        self.opened = False

    def stop(self) -> None:
        self.opened = False

    def trouble(self, stale_s: float, grace_s: float = 0.0) -> str | None:
        return None if self.opened else "not open"


async def test_an_open_that_never_returns_is_a_failure_and_is_never_tried_twice() -> None:
    device, events = HangingDevice(), []
    keeper = AudioKeeper({"microphone": device}, events.append, 0.5, call_timeout_s=0.2)
    try:
        async with asyncio.timeout(2):
            await keeper.open()
        assert [type(e) for e in events] == [DeviceFailed]
        assert "did not answer in 0.2 s" in keeper.failures["microphone"]
        async with asyncio.timeout(2):
            await keeper.open()  # the next try, while the first open still hangs
        assert device.starts == 1, "no second thread into the stuck driver"
        assert len(events) == 1, "one report while it stays stuck"
    finally:
        device.gate.set()
    await asyncio.sleep(0.05)  # the stuck open returns at last
    await keeper.open()
    assert isinstance(events[-1], DeviceRecovered) and device.opened
    assert not keeper.failures


async def test_a_call_stuck_for_good_fails_the_keeper_so_a_new_process_can_start() -> None:
    """No thread can be stopped from outside and the device cannot open beside a stuck
    call: past its patience the keeper fails (the daemon exits 1, systemd restarts it),
    instead of a box in error for good whose watchdog stays fed."""
    device, events = HangingDevice(), []
    keeper = AudioKeeper(
        {"speaker": device}, events.append, 0.1, call_timeout_s=0.1, stuck_for_good_s=0.5
    )
    try:
        await keeper.open()
        assert [type(e) for e in events] == [DeviceFailed]
        with pytest.raises(DriverStuck, match="the speaker's driver has not returned"):
            async with asyncio.timeout(3):
                await keeper.keep()
        assert device.starts == 1
    finally:
        device.gate.set()


async def test_a_call_stuck_for_good_is_given_up_on_when_its_time_is_up_not_a_backoff_later(
) -> None:
    """The backoff between tries grows to a minute: the exit came up to two minutes after
    the call stuck, where the README says one."""
    device, events = HangingDevice(), []
    keeper = AudioKeeper(
        {"speaker": device}, events.append, 30.0, call_timeout_s=0.1, stuck_for_good_s=0.5
    )
    try:
        await keeper.open()
        with pytest.raises(DriverStuck):
            async with asyncio.timeout(2):  # not the 30 s wait before the next try
                await keeper.keep()
    finally:
        device.gate.set()


async def test_a_slow_call_that_returned_between_two_checks_is_simply_forgotten() -> None:
    """Forgetting it while the keeper looked at how long the stuck calls had left raised
    'dictionary changed size during iteration': the keeper died, the daemon restarted."""
    device, events = HangingDevice(), []
    keeper = AudioKeeper({"speaker": device}, events.append, 0.2, call_timeout_s=0.1)
    await keeper.open()  # the open hangs past its timeout: a failure, the call stuck
    assert keeper.failures
    device.gate.set()  # the driver answers at last, before the next try
    await asyncio.sleep(0.05)
    keeping = asyncio.create_task(keeper.keep())
    try:
        await until(lambda: not keeper.failures, within=3)
        assert not keeping.done(), "the keeper lives on"
    finally:
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)


async def test_a_stuck_call_that_returns_in_time_is_forgiven() -> None:
    device, events = HangingDevice(), []
    keeper = AudioKeeper(
        {"speaker": device}, events.append, 0.1, call_timeout_s=0.1, stuck_for_good_s=0.5
    )
    await keeper.open()
    threading.Timer(0.3, device.gate.set).start()  # the driver answers at last
    keeping = asyncio.create_task(keeper.keep())
    try:
        await until(lambda: not keeper.failures and device.opened, within=3)
        await asyncio.sleep(0.6)  # past the patience: nothing is stuck any more
        assert not keeping.done()
        assert isinstance(events[-1], DeviceRecovered)
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping


class StuckOnClose(HangingDevice):
    """An endpoint that opens, and whose close then blocks until `gate` is set."""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.starts += 1
        self.opened = True

    def close_stream(self) -> None:
        self.gate.wait()
        self.opened = False


async def test_a_stop_does_not_wait_for_a_close_stuck_in_a_driver() -> None:
    """The daemon stops (SIGTERM) while a driver hangs: the stop gives the close its
    limit and goes on, and the other device is closed all the same."""
    stuck, other, events = StuckOnClose(), StuckOnClose(), []
    other.gate.set()
    keeper = AudioKeeper({"speaker": stuck, "microphone": other}, events.append, 0.5)
    await keeper.open()
    try:
        async with asyncio.timeout(2):
            await keeper.close(0.2)
        assert stuck.opened, "the stuck close has not returned"
        assert not other.opened
    finally:
        stuck.gate.set()


async def test_a_stop_skips_a_device_already_stuck_in_its_driver() -> None:
    device, events = HangingDevice(), []
    keeper = AudioKeeper({"microphone": device}, events.append, 0.5, call_timeout_s=0.2)
    try:
        await keeper.open()  # the open hangs: reported, left behind
        async with asyncio.timeout(1):
            await keeper.close(5.0)  # nothing more is asked of that driver, so no wait
        assert device.starts == 1
    finally:
        device.gate.set()


CHECK_S = 0.2  # the keeper's look at a busy stream, shortened


class WatchedDevice(StuckOnClose):
    """An endpoint that opens at once and counts how often the keeper asks after it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.set()
        self.asked = 0
        self.sick: str | None = None

    def trouble(self, stale_s: float, grace_s: float = 0.0) -> str | None:
        self.asked += 1
        return self.sick


async def test_the_keeper_sleeps_while_all_is_well_and_wakes_when_a_stream_speaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle box's event loop is not woken to ask healthy devices how they are; a
    stream that is busy in its driver is looked at every CHECK_EVERY_S (a second); one
    that fails says so and is reported at once."""
    monkeypatch.setattr("device.audio.keeper.CHECK_EVERY_S", CHECK_S)
    speaker, microphone, events = WatchedDevice(), WatchedDevice(), []
    keeper = AudioKeeper({"speaker": speaker, "microphone": microphone}, events.append, 60)
    await keeper.open()
    keeping = asyncio.create_task(keeper.keep())
    try:
        await asyncio.sleep(CHECK_S * 1.5)
        assert (speaker.asked, microphone.asked) == (0, 0), "idle: nobody asked"
        speaker.busy = True  # the speaker starts playing, and says so
        assert speaker.on_change is not None
        speaker.on_change()
        await asyncio.sleep(CHECK_S * 2.5)
        assert speaker.asked >= 3, "looked at at once, then every second while it plays"
        speaker.busy, asked = False, speaker.asked
        await asyncio.sleep(CHECK_S * 2.5)
        assert speaker.asked <= asked + 1, "back to sleep once it stops"
        microphone.sick = "the microphone is not reading"
        assert microphone.on_change is not None
        microphone.on_change()
        await asyncio.sleep(0.05)
        assert [type(e) for e in events] == [DeviceFailed]
        assert "not reading" in keeper.failures["microphone"]
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping


async def test_a_card_that_takes_both_devices_with_it_is_one_journal_line(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A USB speakerphone pulled out: its microphone and its speaker fail at the same
    look. One event, one line naming both (the state machine hears of each), found by
    the README's `LIVE_DEVICE=speaker` and `LIVE_DEVICE=microphone` alike (the field is
    given once per value)."""
    path = str(tmp_path / "journal.socket")
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind(path)
    journald.setblocking(False)
    handler = logs.journal_handler(sender=logs.JournalSender(path))
    keeper_log = logging.getLogger("device.audio.keeper")
    keeper_log.addHandler(handler)
    speaker, microphone, events = WatchedDevice(), WatchedDevice(), []
    keeper = AudioKeeper({"speaker": speaker, "microphone": microphone}, events.append, 60)
    await keeper.open()
    keeping = asyncio.create_task(keeper.keep())
    try:
        microphone.sick, speaker.sick = "the microphone is not reading", "its card went away"
        assert microphone.on_change is not None
        microphone.on_change()
        await until(lambda: len(events) == 2)
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1, errors
        assert "microphone" in errors[0] and "speaker" in errors[0]
        assert set(keeper.failures) == {"microphone", "speaker"}
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        keeper_log.removeHandler(handler)
    datagram = journald.recv(1 << 20)
    journald.close()
    assert b"LIVE_DEVICE=microphone\n" in datagram and b"LIVE_DEVICE=speaker\n" in datagram


class MissingDevice(WatchedDevice):
    """A device that is not there: every open fails, and when."""

    def __init__(self) -> None:
        super().__init__()
        self.tries: list[float] = []

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.tries.append(time.monotonic())
        raise OSError("no such device")


async def test_a_device_not_found_is_one_clear_line_without_the_cut_listing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The configured card unplugged: the journal line said "...; available:" and stopped
    there (the listing that follows is on lines of its own); the summary says it all."""
    class Unplugged(WatchedDevice):
        def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
            raise AudioDeviceError("no output device matches 'USB'", [DEVICE])

    events: list = []
    await AudioKeeper({"speaker": Unplugged()}, events.append, 60).open()
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert error.startswith("speaker cannot open: no output device matches 'USB'; trying again")
    assert events == [DeviceFailed("speaker", "cannot open: no output device matches 'USB'")]


async def keeping_for(keeper: AudioKeeper, seconds: float) -> None:
    """The keeper at work for `seconds`, then stopped."""
    task = asyncio.create_task(keeper.keep())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_device_that_stays_missing_is_tried_less_and_less_often() -> None:
    """A box left for months with its microphone gone: the tries space out (twice the
    wait after each), and so do the speaker's openings beside them (each time a journal
    line and PortAudio's device scan)."""
    speaker, microphone, events = WatchedDevice(), MissingDevice(), []
    keeper = AudioKeeper({"speaker": speaker, "microphone": microphone}, events.append, 0.05)
    await keeper.open()
    await keeping_for(keeper, 1.0)
    gaps = [b - a for a, b in itertools.pairwise(microphone.tries)]
    assert 3 <= len(gaps) <= 5, gaps  # 0.05, 0.1, 0.2, 0.4: not twenty tries at 0.05
    assert all(later > 1.5 * earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert speaker.starts == len(microphone.tries), "opened beside each try, no more"
    assert [type(e) for e in events] == [DeviceFailed], "said once"


async def test_at_the_longest_wait_a_missing_device_is_tried_when_the_hardware_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each try starts and stops PortAudio, which keeps 25 KB each time: a box with its
    speakerphone unplugged for a week grew past its memory bound. At the longest wait
    the tries stop until a card comes or goes (then a few, as one is listed a moment
    before it opens), or BLIND_RETRY_S has passed."""
    monkeypatch.setattr(keeper_module, "REOPEN_MAX_S", 0.1)
    hardware = ["card 0: Headphones"]
    microphone, events = MissingDevice(), []
    keeper = AudioKeeper({"microphone": microphone}, events.append, 0.05,
                         hardware=lambda: tuple(hardware))  # fmt: skip
    await keeper.open()
    task = asyncio.create_task(keeper.keep())
    try:
        await asyncio.sleep(1.0)
        assert len(microphone.tries) == 2, "the open, then the try at 0.05 s; none at 0.1 s"
        hardware.append("card 1: USB speakerphone")  # plugged in
        await until(lambda: len(microphone.tries) == 2 + TRIES_AFTER_A_CHANGE, 2.0)
        await asyncio.sleep(0.5)
        assert len(microphone.tries) == 2 + TRIES_AFTER_A_CHANGE, "a few for the change"
        monkeypatch.setattr(keeper_module, "BLIND_RETRY_S", 0.3)
        await until(lambda: len(microphone.tries) == 3 + TRIES_AFTER_A_CHANGE, 1.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [type(e) for e in events] == [DeviceFailed], "said once"


def test_a_card_plugged_back_into_the_same_port_is_a_change(tmp_path: Path) -> None:
    """Unplugged and plugged back between two looks: the same card list and the same
    node names, but the nodes are made anew."""
    cards, nodes = tmp_path / "cards", tmp_path / "snd"
    cards.write_text(" 1 [Device]: USB-Audio - USB speakerphone\n")
    nodes.mkdir()
    (nodes / "pcmC1D0c").touch()
    before = sound_cards(cards, nodes)
    assert sound_cards(cards, nodes) == before, "nothing happened: no change"
    (nodes / "pcmC1D0c").unlink()
    time.sleep(0.01)
    (nodes / "pcmC1D0c").touch()
    assert sound_cards(cards, nodes) != before
    assert sound_cards(tmp_path / "none", tmp_path / "none") == ("",), "unreadable: empty"


class SilentDevice(WatchedDevice):
    """A microphone that opens but never delivers: its reader says so after each open."""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().start(loop)
        assert loop is not None and self.on_change is not None
        loop.call_soon_threadsafe(self.on_change)


async def test_a_device_back_only_to_fail_again_keeps_the_longer_wait() -> None:
    """Each time it is 'back' it fails again at once; the tries still space out instead
    of flapping every few seconds (a recovery and a failure in the journal each time)."""
    microphone, events = SilentDevice(), []
    microphone.sick = "no audio 5.0 s after opening"
    keeper = AudioKeeper({"microphone": microphone}, events.append, 0.05)
    await keeper.open()
    await keeping_for(keeper, 1.0)
    assert 3 <= microphone.starts <= 6, microphone.starts
    assert sum(isinstance(e, DeviceFailed) for e in events) <= 5


async def test_an_unplugged_speakerphone_is_not_said_back_while_its_speaker_opens_the_jack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Unset devices take the one USB card. Unplugged, the microphone has nowhere to go,
    but the speaker's "default" is the Pi's jack, which opens: at each try the keeper
    said "speaker is back" (and dropped it from the faults) while the speakerphone lay
    on the table, only to close it again with the microphone."""
    cable, node = Cable(), tmp_path / "pcmC2D0p"  # the speakerphone's, and its speaker's node
    node.touch()
    monkeypatch.setattr(playback_module, "SOUND_NODES", tmp_path)
    monkeypatch.setattr(CablePcm, "cable", cable)
    monkeypatch.setattr(capture_module, "CapturePcm", CablePcm)
    monkeypatch.setattr(capture_module, "open_portaudio", cable.listing)
    monkeypatch.setattr(stream_module, "open_portaudio", cable.listing)
    monkeypatch.setattr(playback_module, "OutputStream", SilentOutput)
    events: list[Event] = []
    speaker, mic = Playback(), Capture(lambda chunk, t: None, preroll=5)
    keeper = AudioKeeper({"speaker": speaker, "microphone": mic}, events.append, 0.05)
    await keeper.open()
    assert "Jabra" in speaker.device_name and "Jabra" in mic.device_name
    keeping = asyncio.create_task(keeper.keep())
    try:
        cable.plugged = False
        node.unlink()  # the kernel takes the card's nodes with it
        await until(lambda: set(keeper.failures) == {"speaker", "microphone"})
        await asyncio.sleep(0.5)  # tries at 0.05, 0.1, 0.2 s
        assert [e for e in events if isinstance(e, DeviceRecovered)] == []
        assert set(keeper.failures) == {"speaker", "microphone"}
        cable.plugged = True
        node.touch()
        await until(lambda: not keeper.failures, within=3)
        assert "Jabra" in speaker.device_name
        assert sorted(type(e).__name__ for e in events) == sorted(
            [DeviceFailed.__name__] * 2 + [DeviceRecovered.__name__] * 2
        )
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        await keeper.close()


class PlayingSpeaker:
    """The speaker while it plays: its thread calls the driver every 50 ms and stamps
    each call, as Playback does; `held` stops that thread as a stall of the process does
    (it comes back a moment after the stall, as a write returns from the driver)."""

    def __init__(self) -> None:
        self.held = threading.Lock()
        self.last_call = time.monotonic()
        self.on_change: Callable[[], None] | None = None
        self.busy = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def _write(self) -> None:
        while not self._stop.is_set():
            with self.held:
                pass
            time.sleep(0.05)
            self.last_call = time.monotonic()

    def close_stream(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()

    def trouble(self, stale_s: float, grace_s: float = 0.0) -> str | None:
        age = time.monotonic() - self.last_call
        return None if age < stale_s else f"write() has not returned for {age:.1f} s"


async def test_a_stall_of_the_whole_box_is_not_taken_for_a_dead_speaker() -> None:
    """The daemon at its MemoryHigh: the kernel holds its threads up to 2 s at a time to
    reclaim memory. The speaker's thread and the keeper stall alike; the keeper woke first
    and took the speaker for gone (\"unplugged?\"): the reply cut, the box in error, both
    devices closed and opened again."""
    speaker, events = PlayingSpeaker(), []
    keeper = AudioKeeper({"speaker": speaker}, events.append, 60)
    await keeper.open()
    keeping = asyncio.create_task(keeper.keep())
    try:
        await asyncio.sleep(0.3)
        with speaker.held:  # the whole process stalls
            time.sleep(1.5)  # noqa: ASYNC251 - the stall is what is tested
        await asyncio.sleep(2.5)
        assert events == [] and keeper.failures == {}
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        speaker.stop()


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


class FailingAtLast(HangingDevice):
    """An endpoint whose open blocks until `gate` is set, then fails: a driver stuck in the
    kernel that gives up at last (the card was pulled meanwhile)."""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.starts += 1
        self.gate.wait()
        raise OSError(errno.ENODEV, "No such device")


async def test_an_open_stuck_then_failing_puts_no_bug_in_the_journal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An open stuck in the driver, given up on (the journal said so), that fails when it
    returns at last: nobody is left to take its failure, and asyncio put "Future exception
    was never retrieved" and a traceback in the journal at ERROR, a bug's words for a
    device the journal had already named stuck."""
    device, events = FailingAtLast(), []
    keeper = AudioKeeper({"microphone": device}, events.append, 0.5, call_timeout_s=0.2)
    try:
        async with asyncio.timeout(2):
            await keeper.open()
        assert [type(e) for e in events] == [DeviceFailed]
    finally:
        device.gate.set()  # the stuck open returns at last, failing
    await until(lambda: not keeper._is_stuck("microphone"))
    gc.collect()  # the call is freed, and asyncio says what nobody took from it
    bugs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not bugs, bugs


@contextlib.asynccontextmanager
async def kept(keeper: AudioKeeper) -> AsyncIterator[None]:
    """The keeper's devices opened, and kept (reopened as they fail) until the block ends."""
    await keeper.open()
    task = asyncio.create_task(keeper.keep())
    try:
        yield
    finally:
        await stop_task(task)


class LateCard(WatchedDevice):
    """A USB sound card that enumerates after the service started: every open fails
    until it is `plugged`."""

    def __init__(self) -> None:
        super().__init__()
        self.plugged = False

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not self.plugged:
            raise OSError("no such device")
        super().start(loop)


async def test_a_card_that_enumerates_late_is_opened_when_it_appears_not_a_backoff_later() -> None:
    """Cold boot: the USB speakerphone enumerates seconds after the service opened its
    devices. The box came back only at the backoff's next try (3, 9, 21, 45, 93 s after
    the start): a card that appeared at 46 s answered the button at 93 s, the person's
    presses meanwhile met the error earcon. The keeper watches the sound hardware (a
    cheap look at /proc/asound and /dev/snd) while a device is missing, and tries at once
    when it changes."""
    await plugged_in_a_moment_after(LateCard(), ["card 0: Headphones"], backoff_s=30)


async def plugged_in_a_moment_after(
    microphone: LateCard, hardware: list[str], backoff_s: float
) -> None:
    """The keeper started with `microphone` missing from `hardware`; the USB card is
    plugged in 0.2 s later: the microphone comes back (within 5 s) and is open."""
    events: list[object] = []
    keeper = AudioKeeper({"microphone": microphone}, events.append, backoff_s,
                         hardware=lambda: tuple(hardware))  # fmt: skip
    async with kept(keeper):
        await asyncio.sleep(0.2)
        microphone.plugged = True
        hardware.append("card 1: USB speakerphone")
        await until(lambda: DeviceRecovered("microphone") in events, 5.0)
    assert microphone.opened


async def test_a_missing_device_with_the_sound_hardware_unchanged_waits_out_its_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The look at the sound hardware cuts the wait short only when it changed since the
    try began: taken for a change at each look, the backoff ran to its longest wait
    within seconds of a boot, and the card enumerating a moment later waited that out
    (a minute of error earcons), the very delay the look is there to spare."""
    monkeypatch.setattr(keeper_module, "HARDWARE_LOOK_S", 0.01)
    microphone = MissingDevice()
    keeper = AudioKeeper({"microphone": microphone}, lambda _: None, 3,
                         hardware=lambda: ("card 0: Headphones",))  # fmt: skip
    await keeper.open()
    await keeping_for(keeper, 0.5)
    assert len(microphone.tries) == 1, "the open only: the next try is 3 s after it"


async def test_a_card_listed_a_moment_before_it_opens_is_tried_again_when_its_nodes_come(
) -> None:
    """A card is listed (/proc/asound/cards) a moment before its device nodes can be
    opened: the try the listing brings fails, and the nodes come while it runs. That
    change is a reason to try again too, not the end of the backoff's wait (while the
    wait still grows: the first minutes after a boot, with the unit's 3 s)."""
    hardware = ["card 0: Headphones"]

    class ListedFirst(LateCard):
        def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
            if self.plugged and "pcmC1D0c" not in hardware:
                hardware.append("pcmC1D0c")  # made while this open fails
                raise OSError("no such device")
            super().start(loop)

    await plugged_in_a_moment_after(ListedFirst(), hardware, backoff_s=3)


async def test_a_card_coming_and_going_at_the_longest_wait_is_not_tried_at_every_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A card that keeps enumerating and dropping (a loose cable, a hub browning out) at
    the longest wait: each change cutting the wait short tried it at every change, and
    each try keeps about 25 KB in PortAudio, for months. At the longest wait the keeper
    waits it out and tries a few rounds after a change, as before it looked."""
    monkeypatch.setattr(keeper_module, "REOPEN_MAX_S", 0.3)
    monkeypatch.setattr(keeper_module, "HARDWARE_LOOK_S", 0.01)
    hardware: list[str] = []
    microphone = LateCard()
    tries = 0
    failing_start = microphone.start

    def counted(loop: asyncio.AbstractEventLoop | None = None) -> None:
        nonlocal tries
        tries += 1
        failing_start(loop)

    microphone.start = counted  # type: ignore[method-assign]
    keeper = AudioKeeper({"microphone": microphone}, lambda _: None, 0.3,
                         hardware=lambda: tuple(hardware))  # fmt: skip
    async with kept(keeper):
        for flap in range(60):  # a change every 20 ms for 1.2 s: four waits' worth
            hardware[:] = ["card 1: USB speakerphone"] if flap % 2 else []
            await asyncio.sleep(0.02)
    assert tries <= 6, f"{tries} tries in 1.2 s at a 0.3 s wait"
