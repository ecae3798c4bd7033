"""Shared fixtures: one loopback sound server for the whole test session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyaudio
import pytest

from rig.daemon import Daemon, start_daemon
from rig.loopback import PulseLoopback, measure_latency
from rig.server.server import ServerThread


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
    """The worst of a few measurements of the harness's own latency, in seconds."""
    return max(measure_latency(loopback, repeats=3))


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

    def make(settings: dict[str, dict[str, Any]] | None = None, **server_options: Any):
        server = ServerThread(**server_options)
        server.start()
        assert server.server is not None
        daemon = start_daemon(workdir, loopback, server.server, settings=settings)
        started.append((server, daemon))
        daemon.wait_ready()
        return server, daemon

    yield make
    for server, daemon in started:
        daemon.terminate()
        server.stop()
