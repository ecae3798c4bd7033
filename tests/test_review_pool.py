"""Review (worker pool): name lookups that hang must not take the pool from the rest.

With the internet down behind a working Wi-Fi, the router's resolver does not answer:
glibc asks again and again (5 s a try, 2 tries, each nameserver: 15-25 s) and the
thread asking keeps waiting after the connect's timeout gave up. Those lookups ran in
the loop's pool of eight, which also runs the key lookup of each press, the camera's
start, stop and JPEG encoding and the audio keeper's PortAudio calls.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import until

from device import workers
from device.config import CameraConfig, Config, LiveConfig, Secret
from device.hw.camera import CameraFeed
from device.live import endpoint
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import ConnectFailed, Event

DEAD = "live.dns-silent.test"
#: A resolver that never answers in a test (glibc's gives up after 15-25 s).
SILENT_PROGRAM = textwrap.dedent(f"""
    import asyncio, socket, sys, time
    from device.config import Config, LiveConfig
    from device.doctor.network import check_network
    from device.doctor.progress import Progress
    from device.doctor.result import Context, Options

    real = socket.getaddrinfo

    def silent(host, *args, **kwargs):
        if host == {DEAD!r}:
            time.sleep(30)
        return real(host, *args, **kwargs)

    socket.getaddrinfo = silent
    cfg = Config(live=LiveConfig(base_url="https://{DEAD}", connect_timeout_s=1))
    result = asyncio.run(check_network(Context(cfg, Options(), Progress())))
    print(result.status, result.measured, flush=True)
""")


@pytest.fixture
def silent_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """DEAD's lookups wait until the test ends, as a router's resolver with no uplink
    keeps glibc waiting; the list holds one entry per lookup waiting now."""
    real = socket.getaddrinfo
    gate = threading.Event()
    waiting: list[str] = []

    def silent(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == DEAD:
            waiting.append(host)
            gate.wait()
            waiting.remove(host)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", silent)
    monkeypatch.setattr(endpoint, "DNS_CHECK_S", 0.2)
    try:
        yield waiting
    finally:
        gate.set()


async def press_until_failed(link: LiveLink, events: list[Event], session: int) -> float:
    """A press with the internet down: how long until its error (the beep, the red LEDs)."""
    pressed = time.monotonic()
    link.open(session)
    try:
        await until(lambda: any(isinstance(e, ConnectFailed) for e in events), within=6)
    finally:
        await link.close()
    events.clear()
    return time.monotonic() - pressed


async def presses_in_an_outage(silent_resolver: list[str]) -> tuple[LiveLink, list[Event]]:
    """The box's own pool as the daemon runs it, and three presses with the internet down:
    each leaves four lookups waiting (a connect and its DNS check, tried twice)."""
    asyncio.get_running_loop().set_default_executor(workers.Workers())
    cfg = Config(
        live=LiveConfig(base_url=f"https://{DEAD}", connect_timeout_s=0.5),
        api_key=Secret("a-key"),
    )
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(5), events.append, lambda *_: None)
    for session in range(1, 4):
        await press_until_failed(link, events, session)
    assert silent_resolver, "no lookup waits: the outage is not one"
    return link, events


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


async def test_the_camera_starts_in_an_outage_after_many_presses(
    silent_resolver: list[str],
) -> None:
    """The same outage, a video session: the camera's start queued behind the lookups
    past its limit, "the camera is stuck in its start", its light on, audio only."""
    await presses_in_an_outage(silent_resolver)
    frames: list[bytes] = []
    failures: list[str] = []
    feed = CameraFeed(
        CameraConfig(source="synthetic", size=64),
        lambda jpeg, _: frames.append(jpeg),
        failures.append,
        switch_timeout_s=1.0,
    )
    feed.start_frames()
    try:
        await until(lambda: frames or failures, within=3)
    finally:
        await feed.shutdown()
    assert frames and not failures, failures


def test_the_doctor_ends_at_its_dns_timeout_with_the_resolver_silent() -> None:
    """`doctor` with the internet down said "DNS: ... timed out" after the connect timeout,
    then sat until glibc gave up (15-25 s; --json printed nothing till then): the end of
    asyncio.run waits for every thread of its pool, the lookup's too."""
    started = time.monotonic()
    ran = subprocess.run(
        [sys.executable, "-c", SILENT_PROGRAM], capture_output=True, text=True, timeout=60
    )
    took = time.monotonic() - started
    assert ran.returncode == 0, ran.stderr
    assert "DNS" in ran.stdout, ran.stdout
    assert took < 10, f"the doctor ended {took:.0f} s after it started"
