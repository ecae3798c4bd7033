"""The soak: its plan, its counting and its verdict, and a short run that keeps it working.

The short run is a test of the daemon as much as of the soak: a stuck state, a
leak, a crash or a fault not survived fails it. The full run (an hour of the
service's time) is `scripts/soak`, not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import pytest

from device.states import Mode
from rig.bench.harness import Harness
from rig.server.log import Entry, ServerLog
from rig.soak.person import Limits, Person, Stuck
from rig.soak.plan import WIRE_FAULTS, Ask, Fault, Moment, Planner, Turn
from rig.soak.report import failures
from rig.soak.run import SETTINGS, Life, Options, Result
from rig.soak.tally import Asked, Tally
from rig.soak.vitals import Vitals
from rig.soak.wire import REPLY_S, Wire

PTT, TOGGLE = Mode.PUSH_TO_TALK, Mode.TOGGLE
#: A seed whose first twenty turns in each mode strike every kind of fault between them.
SHORT_SEED = 2


def turns_of(seed: int, mode: Mode, episodes: int) -> list[tuple[int, bool, Turn]]:
    """(episode, first of it?, turn) for the first `episodes` episodes of a plan."""
    return [
        (n, i == 0, turn)
        for n, episode in enumerate(islice(Planner(seed, mode), episodes))
        for i, turn in enumerate(episode.turns)
    ]


# ---- the plan ------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    assert list(islice(Planner(7, PTT), 50)) == list(islice(Planner(7, PTT), 50))
    assert list(islice(Planner(7, PTT), 50)) != list(islice(Planner(8, PTT), 50))
    assert list(islice(Planner(7, PTT), 50)) != list(islice(Planner(7, TOGGLE), 50))


@pytest.mark.parametrize("mode", [PTT, TOGGLE])
def test_every_fault_is_planned_and_each_is_followed_by_a_turn_without_one(mode: Mode) -> None:
    turns = turns_of(3, mode, 300)
    assert {t.fault for _, _, t in turns} == {*Fault, None}
    assert {t.ask for _, _, t in turns} == set(Ask)
    for (_, _, turn), (_, _, after) in pairwise(turns):
        if turn.fault is not None:
            assert after.fault is None, "a fault's probe carries no fault of its own"


def test_a_wire_fault_strikes_only_where_a_connection_is_open() -> None:
    for _, first, turn in turns_of(5, PTT, 300):
        if turn.fault in WIRE_FAULTS:
            assert turn.moment is not None
            if turn.moment is Moment.BEFORE:
                assert not first, "before the first turn of an episode nothing is open"
                assert turn.gap_s < SETTINGS["conversation"]["idle_timeout_s"]
        else:
            assert turn.moment is None


def test_only_the_faults_asked_for_are_planned() -> None:
    planner = Planner(1, TOGGLE, frozenset({Fault.DROP}))
    assert {t.fault for e in islice(planner, 100) for t in e.turns} == {Fault.DROP, None}


# ---- counting ------------------------------------------------------------------------------


def asked(fault: Fault | None = None, answered: bool = True, **more: Any) -> Asked:
    return Asked(PTT, 1, "speech", fault, silence_expected=False, answered=answered, **more)


def test_a_fault_is_survived_when_its_probe_is_answered() -> None:
    tally = Tally()
    tally.fault(PTT, 1, Fault.DROP, struck=True)
    tally.add(asked(Fault.DROP, answered=False))
    assert tally.pending
    tally.add(asked())
    assert tally.faults()["drop"] == {"struck": 1, "survived": 1, "not_survived": 0, "missed": 0}
    assert not tally.pending and not tally.lost()


def test_a_fault_whose_probe_goes_unanswered_was_not_survived_and_the_probe_is_lost() -> None:
    tally = Tally()
    tally.fault(TOGGLE, 2, Fault.STALL, struck=True)
    tally.add(asked(answered=False))
    assert tally.faults()["stall"]["not_survived"] == 1
    assert len(tally.lost()) == 1


def test_a_probe_the_service_cut_short_leaves_the_fault_waiting_for_the_next() -> None:
    tally = Tally()
    tally.fault(PTT, 1, Fault.CLOSE_1011, struck=True)
    tally.add(asked(answered=False, events=["go_away"]))
    assert tally.pending and not tally.lost()
    assert tally.turns()["cut_by_the_service"] == 1
    tally.got_stuck({"what": "thinking for ever"})
    assert tally.faults()["close_1011"]["not_survived"] == 1
    assert tally.not_survived[0]["why"] == "stuck: thinking for ever"


def test_a_turn_let_pass_on_purpose_is_not_lost_and_a_missed_fault_not_pending() -> None:
    tally = Tally()
    tally.fault(PTT, 1, Fault.GO_AWAY, struck=False)
    tally.add(Asked(PTT, 1, "speech", Fault.SILENCE, silence_expected=True))
    assert not tally.pending and not tally.lost()
    tally.add(asked(Fault.DROP, answered=False, events=["close 1006"]))
    assert tally.turns() == {
        "asked": 2, "answered": 0, "let_pass": 1, "cut_by_a_fault": 1, "cut_by_the_service": 0,
        "lost": 0,
    }
    assert tally.faults()["go_away"]["missed"] == 1


# ---- the verdict -----------------------------------------------------------------------------


def result(*lives: Life, tally: Tally | None = None) -> Result:
    return Result(Options(seed=1, minutes=1, turns=None, time_scale=1), tally or Tally(),
                  list(lives), 60.0, 3, 0)


def life(**changes: Any) -> Life:
    held = Vitals(tasks=20, threads=9, fds=30, rss_mb=100.0)
    fields: dict[str, Any] = {
        "baseline": held, "final": held, "ended": "stopped", "exit_status": 0, **changes,
    }
    return Life(PTT, 1234, **fields)


def test_a_clean_run_passes() -> None:
    tally = Tally()
    tally.add(asked())
    assert failures(result(life(), tally=tally)) == []


@pytest.mark.parametrize(("change", "words"), [
    ({"final": Vitals(tasks=21, threads=9, fds=30, rss_mb=90.0)}, "leaked 1 tasks"),
    ({"final": Vitals(tasks=20, threads=10, fds=30, rss_mb=100.0)}, "leaked 1 threads"),
    ({"final": Vitals(tasks=20, threads=9, fds=33, rss_mb=100.0)}, "leaked 3 fds"),
    ({"ended": "exited", "exit_status": 1}, "exited by itself with status 1"),
    ({"exit_status": -9}, "ended with status -9 at SIGTERM"),
    ({"watchdog_gap_s": 31.0}, "without feeding the watchdog"),
])
def test_each_must_be_zero_figure_fails_the_run(change: dict[str, Any], words: str) -> None:
    found = failures(result(life(**change)))
    assert len(found) == 1 and words in found[0], found


def test_a_leaked_descriptor_is_named() -> None:
    held = Vitals(tasks=20, threads=9, fds=2, rss_mb=100.0, fd_kinds=("/dev/null", "socket"))
    more = Vitals(tasks=20, threads=9, fds=3, rss_mb=100.0,
                  fd_kinds=("/dev/null", "socket", "socket"))
    assert failures(result(life(baseline=held, final=more))) == [
        "daemon 1234 (push_to_talk) leaked 1 fds (socket)"
    ]


def test_stuck_states_lost_turns_and_faults_not_survived_fail_the_run() -> None:
    tally = Tally()
    tally.fault(PTT, 1, Fault.FLOOD, struck=True)
    tally.add(asked(answered=False))
    tally.got_stuck({"what": "listening for ever"})
    assert failures(result(life(), tally=tally)) == [
        "1 stuck state(s)", "1 fault(s) not survived", "1 turn(s) lost with no fault to explain it",
    ]


def test_what_was_held_after_the_first_turns_and_let_go_is_no_leak() -> None:
    first = Vitals(tasks=20, threads=9, fds=30, rss_mb=100.0)
    assert first.leaks(Vitals(tasks=18, threads=8, fds=29, rss_mb=120.0)) == {
        "tasks": 0, "threads": 0, "fds": 0,
    }


def test_the_worker_pool_growing_to_more_threads_is_no_leak_but_a_thread_beside_it_is() -> None:
    first = Vitals(tasks=20, threads=9, fds=30, rss_mb=100.0, workers=2)
    grown = Vitals(tasks=20, threads=11, fds=30, rss_mb=100.0, workers=4)
    assert first.leaks(grown)["threads"] == 0
    assert first.leaks(Vitals(tasks=20, threads=12, fds=30, rss_mb=100.0, workers=4))[
        "threads"
    ] == 1


def test_the_time_to_rest_covers_the_daemons_longest_chain_of_timers() -> None:
    live, talk = SETTINGS["live"], SETTINGS["conversation"]
    chain = live["dead_after_s"] + live["reconnect_for_s"] + talk["reply_timeout_s"]
    assert Limits.of(SETTINGS).rest_s > chain + talk["end_after_silence_s"]


def test_the_server_log_is_read_from_where_the_last_read_ended() -> None:
    log = ServerLog()
    first = [Entry("in", float(n), 1, "audio") for n in range(3)]
    for entry in first:
        log.add(entry)
    got, mark = log.since(0)
    assert (got, mark) == (first, 3)
    log.add(later := Entry("out", 9.0, 1, "turn_complete"))
    assert log.since(mark) == ([later], 4)
    assert log.since(4) == ([], 4)


# ---- the command -----------------------------------------------------------------------------


def test_help_answers_without_loading_the_rig_and_bad_arguments_are_refused() -> None:
    probe = "import sys, rig.soak.__main__; print('numpy' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False"
    usage = subprocess.run(
        [sys.executable, "-m", "rig.soak", "--help"], capture_output=True, text=True
    )
    assert usage.returncode == 0
    for option in ("--minutes", "--turns", "--seed", "--time-scale", "--mode", "--out"):
        assert option in usage.stdout
    for bad in (["--turns", "0"], ["--minutes", "0"], ["--time-scale", "0.5"]):
        refused = subprocess.run(
            [sys.executable, "-m", "rig.soak", *bad], capture_output=True, text=True
        )
        assert refused.returncode == 2, bad


# ---- on the rig ----------------------------------------------------------------------------


def test_a_box_that_keeps_its_session_open_is_found_stuck(loopback: Any, make_rig: Any) -> None:
    """The stuck check can fail: a session nobody uses that never closes is caught, and an
    answered turn is heard at the speaker."""
    settings = {"conversation": {"idle_timeout_s": 3600}, "audio": {"earcons": False}}
    server, daemon = make_rig(settings, reply_seconds=REPLY_S)
    tally = Tally()
    wire = Wire(Harness(loopback, server))
    person = Person(loopback, wire, daemon, PTT, Limits(rest_s=5, answer_s=5), tally)
    person.turn(Turn(Ask.SPEECH, speech_s=0.5, gap_s=0.1))
    assert tally.turns()["answered"] == 1
    with pytest.raises(Stuck) as stuck:
        person.rest()
    assert stuck.value.status is not None and stuck.value.status["session_open"]


@pytest.mark.rig
@pytest.mark.timeout(600)
def test_a_short_soak_in_both_modes_finds_nothing_wrong(tmp_path: Path) -> None:
    """A few minutes of the full soak, with a seed whose first episodes strike every kind
    of fault at least once in one of the two modes."""
    out = tmp_path / "soak.json"
    started = time.time()
    run = subprocess.run(
        [sys.executable, "-m", "rig.soak", "--turns", "40", "--seed", str(SHORT_SEED),
         "--out", str(out)],
        capture_output=True, text=True, timeout=580,
    )
    doc = json.loads(out.read_text())
    assert run.returncode == 0, f"{doc['failures']}\n{run.stdout}\n{run.stderr[-3000:]}"
    assert doc["seed"] == SHORT_SEED and f"--seed {SHORT_SEED}" in run.stderr
    assert doc["turns"]["push_to_talk"]["asked"] >= 15 and doc["turns"]["toggle"]["asked"] >= 15
    assert doc["turns"]["all"]["answered"] >= 20
    struck = {kind for kind, f in doc["faults"].items() if f["struck"]}
    assert len(struck) >= 5, doc["faults"]
    assert all(f["survived"] == f["struck"] for f in doc["faults"].values()), doc["faults"]
    for life in doc["daemons"]:
        assert life["baseline"] and life["final"], "tasks, threads and fds were compared"
        assert life["ended"] == "stopped" and life["exit_status"] == 0
    assert doc["failures"] == [] and "passed" in run.stdout
    assert time.mktime(time.strptime(doc["date"][:19], "%Y-%m-%dT%H:%M:%S")) >= started - 1

