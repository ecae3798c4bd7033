"""A box that crashed again and again comes back by itself later (issue 14, point 6),
and a configuration error waits for its owner."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from hilrig import (
    CONFIG,
    UNIT,
    active,
    cursor,
    daemon_entries,
    dropin,
    journal,
    main_pid,
    restart_service,
    save,
    sh,
    show,
    wait_active,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("installed")
TIMER = "live-appliance-retry.timer"
RETRY = "live-appliance-retry.service"
#: The drop-ins that make the test quick: the same units, shorter delays (AccuracySec:
#: the unit's 10 s would let systemd fire the timer up to 10 s late).
QUICK_SERVICE = "[Service]\nRestartSec=1s\n"
QUICK_TIMER = "[Timer]\nOnActiveSec=5s\nAccuracySec=1s\n"


def failed() -> bool:
    return show("ActiveState") == "failed"


def failed_with() -> str:
    """The unit's Result if it is failed now, else "": one `systemctl show`, so both are
    of the same moment (the retry timer resets the failure a few seconds later)."""
    out = sh(["systemctl", "show", "-p", "ActiveState,Result", UNIT]).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return props.get("Result", "") if props.get("ActiveState") == "failed" else ""


def disarm_the_retry_timer() -> None:
    """Stop the retry timer: an earlier failure (test_30_systemd.py's missing key) leaves it
    armed for ten minutes, and an armed timer is not started again by the next failure
    (its countdown then runs from the drop-in's daemon-reload, not from the failure, and
    could end in the middle of a crash burst). Stopped, only this test's failure arms it."""
    sh(["systemctl", "stop", TIMER], check=False)


def test_five_crashes_then_failed_then_back_by_itself() -> None:
    """Each start crashes (SIGKILL as soon as the daemon's process is there, while it
    starts up: a crash at start is what a bad update or a broken card causes) until
    systemd gives up; then the retry timer brings it back by itself."""
    disarm_the_retry_timer()
    with dropin("hil-quick.conf", QUICK_SERVICE), dropin("hil-quick.conf", QUICK_TIMER, TIMER):
        sh(["systemctl", "reset-failed", UNIT], check=False)
        fired = show("LastTriggerUSecMonotonic", TIMER)
        mark = cursor()
        sh(["systemctl", "restart", "--no-block", UNIT])
        burst = int(show("StartLimitBurst"))
        for _ in range(burst + 1):
            wait_until(lambda: failed() or main_pid() != 0, 120,
                       "the daemon started again, or failed")
            if failed():
                break
            killed = main_pid()
            os.kill(killed, signal.SIGKILL)
            wait_until(lambda killed=killed: main_pid() != killed, 60, "the crash noticed")
        result = wait_until(failed_with, 120, "failed after the burst")
        # systemd 252 keeps the last crash's Result ("signal") when it refuses the restart
        # that follows it; its own line says the start limit was hit.
        assert result in ("start-limit-hit", "signal")
        assert any("repeated too quickly" in e.get("MESSAGE", "") for e in journal(mark)), \
            "systemd did not refuse a start for the start limit"
        # The failure started the timer (stopped before), and it fired: its trigger time,
        # systemd's own record (a `journalctl -u` of the timer missed its "Started" line
        # in one VM run although the journal held it).
        wait_until(lambda: show("LastTriggerUSecMonotonic", TIMER) != fired, 60,
                   "the retry timer fired")
        wait_until(active, 300, "the service back by itself after the timer")
        assert journal(mark, unit=RETRY), "back, but not through the retry timer's service"
        save("never-failed.txt", sh(["journalctl", "-u", UNIT, "-u", TIMER, "-u", RETRY,
                                     "-n", "60", "--no-pager"]).stdout)
    wait_active()


def test_a_configuration_error_is_not_retried() -> None:
    original = CONFIG.read_text()
    disarm_the_retry_timer()
    with dropin("hil-quick.conf", QUICK_TIMER, TIMER):
        try:
            CONFIG.write_text(original + "\n[audio]\nchunk_ms = 9999\n")  # [audio] twice
            mark = cursor()
            sh(["systemctl", "restart", UNIT], check=False)
            wait_until(lambda: show("ActiveState") == "failed", 120, "failed on the bad config")
            assert (show("Result"), show("ExecMainStatus")) == ("exit-code", "2")
            # The failure armed the timer (stopped before); its firing starts the retry.
            wait_until(lambda: journal(mark, unit=RETRY), 120, "the retry timer fired")
            wait_until(lambda: show("ActiveState", RETRY) == "inactive", 60, "the retry ran")
            assert show("ActiveState") == "failed", "a configuration error was retried"
            assert show("Result") == "exit-code"
        finally:
            CONFIG.write_text(original)
            sh(["systemctl", "reset-failed", UNIT], check=False)
            restart_service()
    assert Path(CONFIG).read_text() == original


def test_an_install_stopped_half_way_says_what_mends_it_among_the_errors() -> None:
    """The venv's command is missing (an install stopped half-way): the launcher says to
    run the installer again and stops with a configuration error's status, not retried.
    Its line was at priority info, so the README's `journalctl -p err` did not show it."""
    command = Path("/opt/live-appliance/venv/bin/live-appliance")
    aside = command.with_name("live-appliance.hil-aside")
    disarm_the_retry_timer()
    try:
        command.rename(aside)
        mark = cursor()
        sh(["systemctl", "restart", UNIT], check=False)
        wait_until(lambda: show("ActiveState") == "failed", 120, "failed on the broken install")
        assert (show("Result"), show("ExecMainStatus")) == ("exit-code", "2")

        def told() -> list[dict[str, Any]]:  # a stream's line may come after the failure
            return [e for e in journal(mark) if "is not complete" in str(e.get("MESSAGE"))]

        said = wait_until(told, 30, "the launcher's line")[0]
        assert said["PRIORITY"] == "3", said  # what `journalctl -p err` shows
        assert said["MESSAGE"].startswith("live-appliance: the install"), said
        assert "sudo scripts/install-pi.sh" in said["MESSAGE"], said
    finally:
        aside.rename(command)
        sh(["systemctl", "reset-failed", UNIT], check=False)
        sh(["systemctl", "stop", TIMER], check=False)
        restart_service()


def test_a_sighup_starts_the_service_again() -> None:
    """`systemctl kill -s HUP` (what tools send for "read your configuration again") left
    the box off: the daemon stopped with exit 0 and Restart=on-failure let it be. Now it
    stops with a status the unit counts a success and restarts."""
    with dropin("hil-quick.conf", QUICK_SERVICE):
        sh(["systemctl", "reset-failed", UNIT], check=False)
        before = restart_service()
        mark = cursor()
        sh(["systemctl", "kill", "-s", "HUP", UNIT])
        wait_until(lambda: active() and main_pid() not in (0, before), 120, "started again")
        assert show("Result") == "success"
        said = [e.get("MESSAGE", "") for e in daemon_entries(mark)]
        assert "SIGHUP: stopping, for systemd to start the service again" in said, said
        # The doctor tells the restart asked for from a crash, by systemd's own lines.
        doctor = sh(["live-appliance", "doctor", "--json", "service"], check=False)
        service = json.loads(doctor.stdout)["checks"][0]
        assert "each asked for by a SIGHUP" in service["measured"], service
    sh(["systemctl", "reset-failed", UNIT], check=False)  # the restart count back at 0
    wait_active()
