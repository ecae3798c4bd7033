"""The loop's worker pool: a stop waits for calls in flight, never for one stuck in a
driver, and the process still ends (the interpreter's own exit would wait for ever)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
from fakes import press_until_failed, presses_in_an_outage

from device import workers

STUCK_PROGRAM = textwrap.dedent("""
    import asyncio, sys, threading
    from device import workers

    async def main(stuck):
        loop = asyncio.get_running_loop()
        loop.set_default_executor(workers.Workers())
        if stuck:
            loop.run_in_executor(None, threading.Event().wait)  # never returns
        await asyncio.to_thread(sum, [1, 2])

    asyncio.run(main(sys.argv[1] == "stuck"))
    sys.exit(workers.exit_past_stuck(3))
""")


def test_a_stop_waits_for_a_call_in_flight() -> None:
    pool = workers.Workers()
    call = pool.submit(lambda: time.sleep(0.1) or "done")
    pool.shutdown(wait=True)
    assert call.done() and call.result() == "done"


def test_a_stop_does_not_wait_for_a_call_stuck_in_a_driver() -> None:
    pool = workers.Workers()
    gate = threading.Event()
    stuck = pool.submit(gate.wait)
    pool.shutdown(wait=True)
    assert not stuck.done(), "shutdown returned while the call was still in the driver"
    gate.set()
    assert stuck.result(timeout=10) is True


def test_the_daemon_process_ends_with_its_status_past_a_stuck_call() -> None:
    ended = subprocess.run([sys.executable, "-c", STUCK_PROGRAM, "stuck"],
                           capture_output=True, text=True, timeout=60)
    assert ended.returncode == 3
    assert "1 call(s) still unfinished (a driver, a name lookup)" in ended.stderr


def test_with_nothing_stuck_the_process_ends_as_usual() -> None:
    ended = subprocess.run([sys.executable, "-c", STUCK_PROGRAM, "free"],
                           capture_output=True, text=True, timeout=60)
    assert ended.returncode == 3 and ended.stderr == ""


# Name lookups that hang (an internet outage behind a working Wi-Fi, fakes.SilentResolver)
# ran in the loop's pool of eight, which also runs the key lookup of each press, the
# camera's start, stop and JPEG encoding and the audio keeper's PortAudio calls.


async def test_a_press_in_an_outage_fails_in_its_own_time_after_many(
    silent_resolver: list[str],
) -> None:
    """Pressing through an internet outage left the pool's eight threads in lookups
    nobody waited for any more: the next press showed "connecting" until glibc gave one
    up (15-25 s; its key lookup queued behind them), then its own timeout on top."""
    link, events = await presses_in_an_outage(silent_resolver)
    took = await press_until_failed(link, events, 100)
    assert took < 4, f"the press showed connecting for {took:.1f} s"
    lookups = [t for t in threading.enumerate() if t.name == "lookup"]
    assert len(lookups) <= workers.LOOKUPS, "a thread for every lookup that ever hung"


async def test_a_lookup_whose_thread_cannot_start_gives_its_place_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread that cannot start (TasksMax=64 reached: hung tools, a wedged driver) fails
    that lookup; its place must come back. It stayed taken: after LOOKUPS such failures
    every later name lookup waited for a place that never came, and each press showed
    "connecting" to its timeout until the daemon was restarted."""
    loop = asyncio.get_running_loop()
    workers.lookups_apart(loop)
    start = threading.Thread.start
    failing = workers.LOOKUPS

    def start_or_not(self: threading.Thread) -> None:
        nonlocal failing
        if self.name == "lookup" and failing > 0:
            failing -= 1
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", start_or_not)
    for _ in range(workers.LOOKUPS):
        with pytest.raises(RuntimeError):
            await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    async with asyncio.timeout(5):
        found: list[Any] = await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    assert found


async def test_a_call_in_its_own_thread_abandoned_ends_without_an_error_line() -> None:
    """A tool or a token refresh whose await timed out finishes alone later: its result
    is nobody's, and must not put "Exception in callback ... InvalidStateError" (an
    ERROR line, a bug to the owner) in the journal when it comes."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    release, threads = threading.Event(), set[threading.Thread]()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(workers.in_own_thread(release.wait, "slow", threads), 0.05)
        release.set()
        [thread] = threads
        await asyncio.to_thread(thread.join, 5)
        await asyncio.sleep(0.05)  # the loop runs what the thread handed it
    finally:
        loop.set_exception_handler(None)
    assert not errors, errors
