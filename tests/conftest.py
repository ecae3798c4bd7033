"""Shared fixtures: one loopback sound server for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator

import pyaudio
import pytest

from device.sim.loopback import PulseLoopback, measure_latency


@pytest.fixture(scope="session")
def loopback() -> Iterator[PulseLoopback]:
    """PulseAudio with mic/speaker null sinks, and this process pointed at it.

    Never skipped: if the sound server cannot start, the tests that need it fail
    with the server's own stderr in the message.
    """
    with PulseLoopback() as server:
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
