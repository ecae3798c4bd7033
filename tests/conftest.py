"""Shared fixtures: one loopback sound server for the whole test session, a tool's gate,
and a check that each test puts back the process-wide state the daemon sets up.

Tests that need the sound server, or run the daemon as a process, are marked `rig`:
`scripts/test -m "not rig"` runs the rest, in-process and on every core, in under a
minute.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pyaudio
import pytest
from _pytest.mark.expression import Expression
from fakes import Gate, SilentResolver
from helpers import all_loggers, trusted_server

from device import logs
from device.live import endpoint
from rig.daemon import Daemon, scratch_dir, start_daemon
from rig.loopback import PulseLoopback, measure_latency
from rig.server.server import LiveServer, ServerThread

#: Fixtures that bring up the rig: the sound server, or the daemon as a process.
RIG_FIXTURES = {"loopback", "pa", "loopback_latency", "make_rig"}
#: Modules whose every test runs a process of the installed box's (installer, systemd).
RIG_MODULES = {"test_install_script", "test_systemd_unit"}


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (in pyproject's addopts): in-process tests mostly wait on short timers and
    share the cores; the rig's tests time real audio and processes, so when one of them
    can be selected everything runs in this one process, as before."""
    markexpr = config.option.markexpr
    if markexpr and not _may_select_rig(Expression.compile(markexpr)):
        return max(2, os.cpu_count() or 1)
    return 0


def _may_select_rig(expression: Expression) -> bool:
    """A test marked rig alone, or rig among every other mark, matches the expression."""
    return expression.evaluate(lambda name, /, **_: name == "rig") or expression.evaluate(
        lambda _name, /, **_: True
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses_rig = RIG_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses_rig or item.path.stem in RIG_MODULES:
            item.add_marker(pytest.mark.rig)


def _process_state() -> dict[str, Any]:
    """What the daemon sets for the whole process (logs.setup, Appliance.run): a test that
    leaves it changed changes the tests after it on the same worker, whichever they are."""
    return {
        "sys.excepthook": sys.excepthook,
        "threading.excepthook": threading.excepthook,
        "logger levels": {name: logger.level for name, logger in all_loggers().items()},
        "session of the threads' lines": logs._sessions_on_threads,
    }


@pytest.fixture(autouse=True)
def process_state_put_back() -> Iterator[None]:
    """Fails the test that leaves the process changed, not the one that happens to run
    after it (xdist hands tests out differently at each run)."""
    before = _process_state()
    yield
    after = _process_state()
    for name in after["logger levels"].keys() - before["logger levels"].keys():
        before["logger levels"][name] = logging.NOTSET  # one the test made: as logging makes it
    left = {what: after[what] for what, value in before.items() if after[what] != value}
    if "logger levels" in left:
        levels = before["logger levels"]
        left["logger levels"] = {n: v for n, v in left["logger levels"].items() if levels[n] != v}
    assert not left, f"the test left changed: {left}"


@pytest.fixture(scope="session")
def loopback() -> Iterator[PulseLoopback]:
    """PulseAudio with mic/speaker null sinks, and this process pointed at it.

    Never skipped: if the sound server cannot start, the tests that need it fail
    with the server's own stderr in the message.
    """
    with PulseLoopback(witness=True) as server:
        server.apply_env()
        yield server


@pytest.fixture
def pa(loopback: PulseLoopback) -> Iterator[pyaudio.PyAudio]:
    """A PortAudio instance created after the loopback environment is in place."""
    instance = pyaudio.PyAudio()
    yield instance
    instance.terminate()


@pytest.fixture(scope="session")
def loopback_latency(loopback: PulseLoopback) -> float:
    """The worst of a few measurements of the harness's own latency, in seconds; never
    below 0 (a click timed a fraction of a millisecond early is the measurement's noise,
    and a test that waits this long cannot wait less than nothing)."""
    return max(0.0, *measure_latency(loopback, repeats=3))


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short private directory: UNIX socket paths are limited to 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rig-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_rig(loopback: PulseLoopback, workdir: Path) -> Iterator[Any]:
    """Start a server (with options) and the daemon (with settings) against the loopback."""
    started: list[tuple[ServerThread, Daemon]] = []

    def make(
        settings: dict[str, dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        *,
        client_built: bool = True,
        tap: Path | None = None,
        **server_options: Any,
    ):
        server = ServerThread(**server_options)
        server.start()
        assert server.server is not None
        daemon = start_daemon(
            workdir, loopback, server.server, settings=settings, env=env, tap=tap
        )
        started.append((server, daemon))
        daemon.wait_ready(client=client_built)
        return server, daemon

    yield make
    for server, daemon in started:
        daemon.terminate()
        server.stop()


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    """The local Live server in this test's loop, its certificate trusted as the box's
    own CA bundle would be; replies of 0.2 s, sent as fast as the link takes them."""
    async with trusted_server(monkeypatch, pace=0, reply_seconds=0.2) as live:
        yield live


@pytest.fixture
def gate() -> Iterator[Gate]:
    """A tool body held until the test opens it (`fakes.gated_tools`)."""
    gate = Gate()
    yield gate
    gate.opened.set()  # never leave a worker thread blocked behind the test


@pytest.fixture
def silent_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """DEAD's lookups wait until the test ends, as a router's resolver with no uplink
    keeps glibc waiting; the list holds one entry per lookup waiting now."""
    resolver = SilentResolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setattr(endpoint, "DNS_CHECK_S", 0.2)
    try:
        yield resolver.waiting
    finally:
        resolver.answer()


@pytest.fixture
def systemctl(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """A `systemctl` on PATH that answers `show` with the properties a test gives it."""
    bin_dir = scratch_dir("systemctl-bin-")
    answer = bin_dir / "answer"

    def set_answer(**props: str) -> None:
        answer.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    script = bin_dir / "systemctl"
    script.write_text(f"#!/bin/sh\ncat {answer}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    yield set_answer
    shutil.rmtree(bin_dir, ignore_errors=True)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory any local user may enter (pytest's own tmp_path is its user's alone)."""
    place = Path(tempfile.mkdtemp(prefix="owners-"))
    place.chmod(0o755)
    try:
        yield place
    finally:
        shutil.rmtree(place)
