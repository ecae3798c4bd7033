"""Reconnect pacing over a session's whole life: a service that fails every connection
right after setup is not hammered, and a streak of failures ends the session."""

from __future__ import annotations

import time
from typing import Any

import pytest

from device.live.pacing import MOVED_AFTER_S, STABLE_S, Pacing
from rig.daemon import Daemon
from rig.loopback import PulseLoopback


def storm(pacing: Pacing, until_s: float) -> list[float]:
    """Connection times when every connection dies at once after setup, until give-up."""
    now, opened = 0.0, [0.0]
    while True:
        pacing.ended(lasted_s=0.05, completed_turn=False)
        wait = pacing.wait(now)
        if wait is None or now + wait > until_s:
            return opened
        now += wait + 0.05
        opened.append(now)


def test_a_service_dying_after_each_setup_sees_at_most_six_connections_in_ten_s() -> None:
    quickest = Pacing(give_up_after_s=600, jitter=lambda: 0.5)  # the shortest waits jitter allows
    opened = storm(quickest, until_s=10)
    assert len(opened) <= 6, opened


@pytest.mark.parametrize("give_up_s", [15, 30, 60])
@pytest.mark.parametrize("jitter", [0.5, 1.0])
def test_a_streak_of_failures_is_tried_to_the_end_of_reconnect_for_s_then_given_up(
    give_up_s: float, jitter: float
) -> None:
    """The last try goes at the end of the time the setting promises, whatever the
    backoff and its jitter (it went up to 7.5 s before it: a service back by then was
    never tried again), and then the box gives up."""
    pacing = Pacing(give_up_after_s=give_up_s, jitter=lambda: jitter)
    opened = storm(pacing, until_s=600)
    assert give_up_s <= opened[-1] <= give_up_s + 0.05, opened
    assert pacing.wait(opened[-1] + 0.05) is None


def test_a_connection_that_proved_itself_is_followed_by_a_prompt_try() -> None:
    pacing = Pacing(give_up_after_s=30, jitter=lambda: 1.0)
    storm(pacing, until_s=5)  # the backoff has grown
    pacing.ended(lasted_s=1.0, completed_turn=True)
    assert pacing.wait(100.0) == 0.0
    pacing.ended(lasted_s=STABLE_S, completed_turn=False)
    assert pacing.wait(200.0) == 0.0, "a long-lived connection proved itself too"


def test_the_first_try_of_a_new_session_is_paced_too() -> None:
    pacing = Pacing(give_up_after_s=30, jitter=lambda: 1.0)
    pacing.ended(lasted_s=0.1, completed_turn=False)
    assert pacing.wait(0.0) == 0.5


def test_a_fresh_session_after_a_refused_resume_is_tried_at_once_within_the_streak() -> None:
    """A service that completes each setup, hands out a handle, closes the connection
    and refuses the resume: each round a fresh session goes at once, but the streak
    goes on, and the box gives up after reconnect_for_s instead of cycling for ever."""
    pacing = Pacing(give_up_after_s=30, jitter=lambda: 1.0)
    now = 0.0
    while (wait := pacing.wait(now)) is not None:  # the resume, after the backoff
        now += wait + 0.05  # refused
        pacing.at_once()
        wait = pacing.wait(now)
        if wait is None:
            break
        assert wait == 0.0, "the fresh session goes at once"
        now += 0.05
        pacing.ended(lasted_s=0.5, completed_turn=False)  # it dies young again
        now += 0.5
        assert now < 60, "never gave up"
    assert pacing.streak_s(now) <= 31


def test_a_service_moving_every_connection_on_is_no_failure_unless_at_once() -> None:
    """goAway a second or more after each setup: every move goes at once and the box
    never gives up. goAway at every setup: paced, and given up, as a failure is."""
    pacing = Pacing(give_up_after_s=15, jitter=lambda: 1.0)
    now = 0.0
    for _ in range(100):
        pacing.ended(lasted_s=MOVED_AFTER_S + 0.5, completed_turn=False, moved=True)
        assert pacing.wait(now) == 0.0
        now += MOVED_AFTER_S + 0.5
    at_once = Pacing(give_up_after_s=15, jitter=lambda: 1.0)
    now, waits = 0.0, []
    while True:
        at_once.ended(lasted_s=0.1, completed_turn=False, moved=True)
        if (wait := at_once.wait(now)) is None:
            break
        waits.append(wait)
        now += wait + 0.1
    assert waits[:4] == [0.5, 1.0, 2.0, 4.0] and now <= 16


def test_the_time_a_connection_worked_is_not_time_spent_failing() -> None:
    """Wi-Fi dropping every 20 s while a person holds the button (no turn completes): each
    drop gets its tries; a streak of connections dying young still ends as before."""
    pacing = Pacing(give_up_after_s=30, jitter=lambda: 1.0)
    now = 0.0
    for drop in range(1, 6):
        now += 20.0  # a connection that worked for 20 s, no turn completed on it
        pacing.ended(lasted_s=20.0, completed_turn=False)
        wait = pacing.wait(now)
        assert wait is not None, f"drop {drop}: given up without a try"
        now += wait
    assert pacing.attempts == 5  # one streak all along: the backoff kept growing
    while (wait := pacing.wait(now)) is not None:  # then every try dies at once
        pacing.ended(lasted_s=0.1, completed_turn=False)
        now += wait + 0.1
    assert pacing.streak_s(now) >= 30


def given_up_unhammered(server: Any, daemon: Daemon) -> dict[str, Any]:
    """Press, against a service that fails every connection: the box gives up in the
    error state, having opened at most six connections in the first 10 s, and opens no
    more until the next press. Its status when it gave up."""
    pressed = time.monotonic()
    daemon.ctl("press")
    status: dict[str, Any] = daemon.wait_until(lambda s: s["state"] == "error", 40, "giving up")
    opened = [c.opened - pressed for c in server.log.connections()]
    assert len([t for t in opened if t < 10]) <= 6, opened
    count = len(server.log.connections())
    time.sleep(3)
    assert len(server.log.connections()) == count, "no retries until the next press"
    return status


def test_a_service_dying_after_each_setup_is_given_up_on_in_one_journal_line(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 14, 2: "after `reconnect_for_s` the box gives up: error state, one journal line
    naming what happened, no retries until the next press" (hands-free here)."""
    server, daemon = make_rig(
        {
            "button": {"mode": "toggle"},
            "live": {"reconnect_for_s": 8, "connect_timeout_s": 2},
            "conversation": {"error_display_s": 1},
        },
        close_after_setup=(1011, "Internal error"),
    )
    status = given_up_unhammered(server, daemon)
    gave_up = [r for r in daemon.records() if "gave up" in str(r.get("MESSAGE", ""))]
    assert len(gave_up) == 1, gave_up
    assert "1011" in gave_up[0]["MESSAGE"], "names what happened"
    assert "gave up" in status["status"]
