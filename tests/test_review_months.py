"""Review: a box left alone for months: a full or read-only card, a clock that steps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fakes import CHUNK, config, running

from device.audio.keeper import AudioKeeper
from device.states import SetupComplete, Timer

#: `end_after_silence_s`, shortened (dataclasses.replace does not validate).
SILENCE_S = 0.25


def _run_saves(path: Path, volumes: list[float], fsize: int) -> list[str]:
    """The journal's lines of a daemon that saves `volumes` one after another with writes
    past `fsize` bytes failing (a full card; 0: none can be written, as read-only)."""
    script = textwrap.dedent(
        """
        import logging, resource, signal, sys
        from pathlib import Path
        from device.persist import StateFile
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the bound fails EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
        state = StateFile(Path(sys.argv[1]))
        state.load()  # the start
        for volume in sys.argv[3:]:
            state.save(volume=float(volume))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(fsize), *map(str, volumes)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_card_that_fills_up_mid_write_leaves_the_old_volume_and_no_half_file(
    tmp_path: Path,
) -> None:
    """The SD card full (a journal that grew, a log of another program): the write of the
    new volume stops part way. The old file stays whole, and no half-written file is left
    beside it in the state directory."""
    path = tmp_path / "state.json"
    path.write_text('{"volume": 0.3}\n')
    lines = _run_saves(path, [0.9], fsize=8)
    assert any("cannot keep settings" in line for line in lines), lines  # said, not raised
    assert json.loads(path.read_text()) == {"volume": 0.3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_damaged_state_file_on_a_card_that_cannot_be_written_is_said_once(
    tmp_path: Path,
) -> None:
    """ext4 remounts a damaged card read-only, often with the file it was writing damaged
    too: the box starts at its configured volume and says so, once. Each volume the model
    set then said again that the file is unreadable, a line per "louder" for months."""
    path = tmp_path / "state.json"
    path.write_bytes(b"\0" * 64)
    lines = _run_saves(path, [0.2, 0.4, 0.6, 0.8], fsize=0)
    assert len([line for line in lines if "ignoring unreadable" in line]) == 1, lines
    assert len([line for line in lines if "cannot keep settings" in line]) == 1, lines


async def test_words_heard_before_the_silence_ran_out_keep_the_conversation_through_a_stall(
    tmp_path: Path,
) -> None:
    """Hands-free, the box stalls a moment as the silence runs out (a loaded CPU, its
    memory squeezed at MemoryHigh): the person's first words, recorded just before, and the
    silence's end reach the state machine together. The words restarted the silence, but
    its end, already on its way, hung up on them all the same."""
    cfg = config(button={"mode": "toggle"}, conversation={"end_after_silence_s": SILENCE_S})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.settle()
        assert Timer.SILENCE in box.appliance.machine.timers
        loop = asyncio.get_running_loop()
        ends = box.appliance._timers[Timer.SILENCE].when()
        await asyncio.sleep(ends - loop.time() - SILENCE_S / 5)
        loop.call_soon(box.mic.record, CHUNK)  # the reader hands words over; the loop stalls
        time.sleep(SILENCE_S / 2)  # noqa: ASYNC251 - the stall is what is tested
        await asyncio.sleep(0)  # the words and the silence's end reach the queue at once
        await box.settle()
        assert box.state == "listening" and box.appliance.machine.session_open
        assert box.link.closed == 0


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
