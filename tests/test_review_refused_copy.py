"""A second copy refused by the running daemon's socket says one thing in the journal:
that it is refused, and by whom."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fakes import running

from device.control import AlreadyRunning


async def test_a_copy_refused_by_the_socket_does_not_say_it_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another user in the service's group (no lock for it) ran `live-appliance run`
    beside the service: the journal said "stopped", then that it is already running. The
    owner reading from the top took the service for stopped; nothing had been started."""
    caplog.set_level(logging.INFO, "device")

    def already_running(parts) -> None:  # type: ignore[no-untyped-def]
        parts.made["control"].fails = AlreadyRunning("process 1234 serves the socket")

    with pytest.raises(AlreadyRunning):
        async with running(tmp_path, prepare=already_running):
            pass
    assert [r.getMessage() for r in caplog.records] == []
