"""The doctor's service check after restarts the owner asked for (a SIGHUP), told apart
from crashes by systemd's own journal lines about the unit."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import daemon_saying
from test_doctor import RUNNING, context

from device.doctor.result import Options, Status
from device.doctor.service import check_service

#: systemd's MESSAGE_IDs: "Scheduled restart job" (N_RESTARTS=), "Failed with result".
SCHEDULED = "5eb03494b6584870a536b337290809b3"
FAILED = "d9b373ed55a64feb8242e02dbe79a49c"
STARTED = "39f53479d3a045ac8e11786248231fbf"
IDLE = {"status": "idle", "session_open": False, "turns": []}


def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: list[dict[str, str]]) -> None:
    """A `journalctl` on PATH that prints `entries` (its JSON output), whatever it is asked."""
    bin_dir = tmp_path / "journal-bin"
    bin_dir.mkdir()
    (bin_dir / "entries").write_text("".join(json.dumps(e) + "\n" for e in entries))
    script = bin_dir / "journalctl"
    script.write_text(f"#!/bin/sh\ncat {bin_dir / 'entries'}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


async def service_check(tmp_path: Path) -> Any:
    async with daemon_saying(IDLE) as sock:
        return await check_service(context(tmp_path, Options(), control={"socket": str(sock)}))


async def test_restarts_a_sighup_asked_for_are_not_called_crashes(
    systemctl: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`systemctl kill -s HUP live-appliance` twice (what tools send for "read your
    configuration again"): the daemon stopped with status 3 and systemd started it again,
    as the unit asks; NRestarts counts each. The doctor warned "It has crashed and
    restarted" of a box that never had."""
    systemctl(**{**RUNNING, "NRestarts": "2"})
    journal(tmp_path, monkeypatch, [
        {"MESSAGE_ID": FAILED, "UNIT_RESULT": "exit-code"},  # a bad config, fixed since
        {"MESSAGE_ID": STARTED},  # the owner's start
        {"MESSAGE_ID": SCHEDULED, "N_RESTARTS": "1"},
        {"MESSAGE_ID": STARTED},
        {"MESSAGE_ID": SCHEDULED, "N_RESTARTS": "2"},
        {"MESSAGE_ID": STARTED},
    ])  # fmt: skip
    result = await service_check(tmp_path)
    assert result.status is Status.PASS, result
    assert "crash" not in result.measured + (result.fix or ""), result


async def test_a_crash_among_asked_restarts_is_still_said(
    systemctl: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    systemctl(**{**RUNNING, "NRestarts": "2"})
    journal(tmp_path, monkeypatch, [
        {"MESSAGE_ID": SCHEDULED, "N_RESTARTS": "1"},  # an older run of restarts
        {"MESSAGE_ID": STARTED},
        {"MESSAGE_ID": FAILED, "UNIT_RESULT": "watchdog"},
        {"MESSAGE_ID": SCHEDULED, "N_RESTARTS": "1"},
        {"MESSAGE_ID": STARTED},
        {"MESSAGE_ID": SCHEDULED, "N_RESTARTS": "2"},  # a SIGHUP
        {"MESSAGE_ID": STARTED},
    ])  # fmt: skip
    result = await service_check(tmp_path)
    assert result.status is Status.WARN, result
    assert result.fix is not None and "crashed" in result.fix, result
    assert "2 restarts (1 after a crash)" in result.measured, result.measured


async def test_a_journal_that_does_not_tell_is_not_taken_for_no_crash(
    systemctl: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user the journal is closed to (not in group adm), or a journal rotated since:
    the restarts are still said, as restarts."""
    systemctl(**{**RUNNING, "NRestarts": "2"})
    journal(tmp_path, monkeypatch, [])
    result = await service_check(tmp_path)
    assert result.status is Status.WARN, result
    assert result.fix is not None and "journalctl -u live-appliance -b" in result.fix, result
