"""A box like this VM, as the daemon must take it: no GPIO pin factory, pins without PWM,
and a start that says little. Each leaves the service as it was."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hilrig import (
    DROP_IN,
    IN_VM,
    UNIT,
    cursor,
    daemon_entries,
    daemon_reload,
    journal,
    restart_service,
    restarts_counted_from_now,
    save,
    sh,
    show,
    state,
    wait_active,
    wait_until,
    write_drop_in,
)

pytestmark = pytest.mark.usefixtures("installed")


#: Whether the running daemon was started with a drop-in of this module's.
started_otherwise = {"now": False}


@pytest.fixture(scope="module", autouse=True)
def the_usual_drop_in_afterwards() -> Iterator[None]:
    """Each test changes the drop-in only for the start it makes; the next start (the next
    test's, or this fixture's at the end) is with the usual one again."""
    yield
    if started_otherwise["now"]:
        sh(["systemctl", "reset-failed", UNIT], check=False)
        restart_service()


def start_with_drop_in(text: str) -> tuple[str, int]:
    """Restart the service with this drop-in text, then put the usual one back (for the
    next start); the journal's cursor before it and the restart count."""
    DROP_IN.write_text(text)
    daemon_reload()
    mark = cursor()
    restarts = restarts_counted_from_now()
    try:
        sh(["systemctl", "restart", UNIT], check=False, timeout=300)
        started_otherwise["now"] = True
    finally:
        write_drop_in()
        daemon_reload()
    return mark, restarts


@pytest.mark.skipif(not IN_VM, reason="a Pi has its pin factory")
def test_no_pin_factory_is_one_line_per_part_not_a_crash_loop() -> None:
    """No GPIO at all: the box runs (driven by `ctl press`), says once that the button and
    the LEDs cannot be opened, and is not restarted."""
    mark, restarts = start_with_drop_in("".join(
        line for line in DROP_IN.read_text().splitlines(True) if "GPIOZERO" not in line))
    wait_active()
    wait_until(lambda: state() == "idle", 120, "idle without pins")
    entries = daemon_entries(mark)
    save("no-pin-factory-journal.txt", "\n".join(e.get("MESSAGE", "") for e in entries))
    assert int(show("NRestarts")) == restarts
    errors = [e for e in entries if int(e.get("PRIORITY", 6)) <= 3]
    assert all("LIVE_ERROR" in e for e in errors), [e.get("MESSAGE") for e in errors]
    assert len(errors) <= 2, [e.get("MESSAGE") for e in errors]  # the button, the LEDs


@pytest.mark.skipif(not IN_VM, reason="a Pi has its pin factory")
def test_leds_without_pwm_fall_back_to_on_off() -> None:
    mark, restarts = start_with_drop_in(DROP_IN.read_text().replace(
        "Environment=GPIOZERO_MOCK_PIN_CLASS=mockpwmpin\n", ""))
    wait_active()
    wait_until(lambda: state() == "idle", 120, "idle on pins without PWM")
    save("leds-without-pwm-journal.txt",
         "\n".join(e.get("MESSAGE", "") for e in daemon_entries(mark)))
    assert show("StatusText") == "idle"
    assert int(show("NRestarts")) == restarts


def test_a_start_puts_only_a_few_lines_in_the_journal() -> None:
    mark = cursor()
    pid = restart_service()
    started_otherwise["now"] = False
    wait_until(lambda: state() == "idle", 120, "idle")
    # The start's last line, "ready" (with its state), in the journal: the daemon wrote
    # every other line of its start before it.
    wait_until(lambda: any("LIVE_STATE" in e and e.get("_PID") == str(pid)
                           for e in journal(mark)), 60, "the start's last line in the journal")
    lines = [e for e in journal(mark) if e.get("_PID") != "1"]
    save("start-journal.txt", "\n".join(e.get("MESSAGE", "") for e in lines))
    assert len(lines) <= 8, f"{len(lines)} lines from one start"
