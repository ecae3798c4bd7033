"""Under systemd: the notify protocol (READY, STATUS, WATCHDOG, STOPPING) and journal fields."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from fakes import FakeParts, running
from helpers import Captured, journal_lines
from wire import set_up_link

from device import logs
from device.appliance import RESTART_STATUS
from device.service import Notifier
from device.states import Heartbeat
from device.turns import TurnLog
from rig.daemon import start_daemon
from rig.loopback import PulseLoopback
from rig.notify import NotifySocket
from rig.server.server import LiveServer, ServerThread

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def fill(address: bytes) -> socket.socket:
    """A socket whose datagrams fill the queue of the one at `address` (PID 1 not reading)."""
    other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.connect(address)
    other.setblocking(False)
    try:
        while True:
            other.send(b"STATUS=another service")
    except BlockingIOError:
        return other


def drain(sock: socket.socket) -> None:
    """Read all that waits on `sock`: PID 1 reads again."""
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(4096)


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled
    assert notifier.watchdog_s is None
    notifier.ready("idle")  # no socket, no error


def test_watchdog_interval_is_read_for_this_process_only() -> None:
    assert Notifier(environ={"WATCHDOG_USEC": "20000000"}).watchdog_s == 20.0
    assert Notifier(environ={"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier(environ={"WATCHDOG_USEC": "0"}).watchdog_s is None


def test_abstract_socket_addresses_are_understood() -> None:
    name = f"live-appliance-test-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.settimeout(2)
    try:
        notifier = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        notifier.ready("idle")
        assert server.recv(100).decode().splitlines() == ["READY=1", "STATUS=idle"]
        notifier.close()
    finally:
        server.close()


def test_a_notify_socket_nobody_reads_does_not_hold_the_box(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PID 1 busy (a daemon-reload on an SD card): its socket fills, and a state change
    must not wait for it. What it cannot take is left out, said in one line, and the
    first message through carries the latest status."""
    caplog.set_level(logging.INFO, logger="device.service")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "notify")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        notifier = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        done = threading.Event()

        def change_states() -> None:
            for n in range(2000):
                notifier.status(f"state {n}")
            done.set()

        worker = threading.Thread(target=change_states, daemon=True)
        worker.start()
        try:
            assert done.wait(30), "a full notify socket held the caller"
            assert "cannot notify systemd" in caplog.text
            drain(server)  # systemd reads again: the next message reaches it
            notifier.watchdog()
            server.settimeout(2)
            assert server.recv(4096).decode().splitlines() == ["WATCHDOG=1", "STATUS=state 1999"]
            assert "left out" in caplog.text
            assert caplog.text.count("cannot notify systemd") == 1
        finally:
            notifier.close()
            server.close()


def test_status_is_sent_only_when_it_changes(notify_socket: NotifySocket) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(notify_socket.path)})
    for text in ("idle", "listening", "listening", "thinking"):
        notifier.status(text)
    notifier.close()
    deadline = time.monotonic() + 5
    while len(notify_socket.statuses()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert notify_socket.statuses() == ["idle", "listening", "thinking"]


def test_a_status_carrying_a_services_words_stays_one_short_line(
    notify_socket: NotifySocket,
) -> None:
    """A close reason in the status could otherwise add notify fields of its own."""
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(notify_socket.path)})
    notifier.status("error: setup refused (close code 1008: no\nWATCHDOG=trigger\nSTOPPING=1)")
    notifier.status("error: " + "x" * 100_000)
    notifier.close()
    deadline = time.monotonic() + 5
    while len(notify_socket.statuses()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    first, second = notify_socket.statuses()
    assert first == "error: setup refused (close code 1008: no WATCHDOG=trigger STOPPING=1)"
    assert len(second) <= 200 and second.endswith("...")
    assert all("STOPPING" not in f and "WATCHDOG" not in f for _, f in notify_socket.messages)

def test_the_watchdog_is_pinged_only_when_systemd_asked_for_one(
    notify_socket: NotifySocket,
) -> None:
    """WATCHDOG=1 goes out only under a watchdog (the appliance sends it each time its
    state machine has handled a heartbeat: tests/test_appliance.py)."""
    plain = Notifier(environ={"NOTIFY_SOCKET": str(notify_socket.path)})
    watched = Notifier(
        environ={"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "100000"}
    )
    plain.watchdog()
    watched.watchdog()
    watched.watchdog()
    for notifier in (plain, watched):
        notifier.close()
    deadline = time.monotonic() + 5
    while len(notify_socket.times("WATCHDOG")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(notify_socket.times("WATCHDOG")) == 2
    assert watched.watchdog_s == 0.1 and plain.watchdog_s is None


def test_daemon_notifies_ready_status_watchdog_and_stopping(
    loopback: PulseLoopback, notify_socket: NotifySocket
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="svc-"))
    with ServerThread(reply_seconds=0.4) as server:
        assert server.server is not None
        daemon = start_daemon(
            workdir,
            loopback,
            server.server,
            env={"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"},
        )
        try:
            ready = notify_socket.wait_for("READY")
            assert daemon.status()["state"] == "idle", "the control socket answers once READY"
            daemon.ctl("press")
            daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
            loopback.play(b"\x00\x10" * 8000, 16000).wait()
            daemon.ctl("release")
            daemon.wait_until(lambda s: s["state"] == "idle" and s["turns"], 20, "the turn")
            time.sleep(1.0)  # a few watchdog periods while idle
        finally:
            took = daemon.terminate()
    stopping = notify_socket.wait_for("STOPPING")
    read_by = time.monotonic() + 5  # the last datagrams, sent before it exited
    while notify_socket.statuses()[-1:] != ["stopped"] and time.monotonic() < read_by:
        time.sleep(0.01)

    statuses = notify_socket.statuses()
    assert statuses[:1] == ["idle"]
    assert _in_order(statuses, ["connecting", "listening", "thinking", "speaking", "idle"])
    assert statuses[-2:] == ["stopping", "stopped"]
    pings = [t for t in notify_socket.times("WATCHDOG") if ready < t < stopping]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) >= 5
    assert max(gaps) < 0.4, f"a watchdog gap of {max(gaps):.2f} s reaches WatchdogSec"
    assert daemon.proc.returncode == 0
    assert took < 2.0, f"took {took:.2f} s to stop"


def test_a_sighup_under_systemd_stops_the_daemon_for_a_new_start(
    loopback: PulseLoopback, notify_socket: NotifySocket
) -> None:
    """Under systemd a SIGHUP means "read your configuration again": a clean stop with
    the status the unit restarts (exit 0 would leave the box off, Restart=on-failure);
    from a terminal it stays a hang-up (tests/test_cli.py)."""
    workdir = Path(tempfile.mkdtemp(prefix="svc-"))
    with ServerThread() as server:
        assert server.server is not None
        daemon = start_daemon(
            workdir, loopback, server.server, env={"NOTIFY_SOCKET": str(notify_socket.path)}
        )
        try:
            notify_socket.wait_for("READY")
            daemon.proc.send_signal(signal.SIGHUP)
            status = daemon.proc.wait(10)
        finally:
            daemon.terminate()
    notify_socket.wait_for("STOPPING")
    assert status == RESTART_STATUS, daemon.log()
    assert "SIGHUP: stopping, for systemd to start the service again" in daemon.log()
    assert "stopped" in daemon.log() and not daemon.socket.exists()


def _in_order(seen: list[str], wanted: list[str]) -> bool:
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


@pytest.fixture
def journal() -> Iterator[Captured]:
    captured = Captured()
    handler = logs.journal_handler(sender=captured)
    handler.addFilter(logs.Redactor(["AIza-secret-key"]))
    handler.addFilter(logs.Bounded())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    yield captured
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


@pytest.mark.parametrize("handler_before", [False, True], ids=["none before", "one before"])
def test_the_watchdogs_abort_leaves_where_the_daemon_was_stuck_in_the_journal(
    tmp_path: Path, handler_before: bool
) -> None:
    """systemd aborts a daemon whose loop stopped feeding the watchdog (SIGABRT): the journal
    then said only "Watchdog timeout", and a hang that comes once a month was never found.
    A fault handler set before (pytest's on a copy of the real stderr, PYTHONFAULTHANDLER's)
    is left in place: the daemon pointed it at sys.stderr, maybe a capture nobody reads."""
    config = tmp_path / "config.toml"
    config.write_text(f'[control]\nsocket = "{tmp_path / "control.sock"}"\n')
    dumps = tmp_path / "dumps"
    before = (
        f'faulthandler.enable(file=open({str(dumps)!r}, "w"))\n'
        'sys.stderr = open(os.devnull, "w")  # as pytest\'s capture does\n'
    )
    script = "import faulthandler, os, signal, sys\n" + (before if handler_before else "")
    script += textwrap.dedent(
        f"""
        from device import appliance, config

        class StuckInADriver:
            def __init__(self, cfg): pass
            async def run(self):
                os.kill(os.getpid(), signal.SIGABRT)  # what systemd sends

        appliance.Appliance = StuckInADriver
        appliance.run_daemon(config.load({str(config)!r}, key=False))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIVE_APPLIANCE_LOG_FORMAT": "text"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=60, check=False)  # fmt: skip
    assert result.returncode == -6, result.stderr
    dumped = dumps.read_text() if handler_before else result.stderr
    assert "Fatal Python error: Aborted" in dumped, result.stderr
    assert "in run\n" in dumped  # the stack: where it was


def test_a_turn_summary_reaches_the_journal_with_its_fields(journal: Captured) -> None:
    """The microphone's chunks go out every 40 ms from the first to the release: the
    press's latency is to the first of them, not to whichever went last."""
    turns = TurnLog()
    turns.start(10.0, None)
    for n in range(49):
        turns.sent("audio", 10.05 + n * 0.04)
    turns.released(12.0)
    turns.sent("activity_end", 12.002)
    turns.reply_received(12.4)
    turns.finish(13.0, "session-1")

    (record,) = journal.records
    assert record["MESSAGE"].startswith("turn 1:")
    assert record["PRIORITY"] == "6"
    assert record["SYSLOG_IDENTIFIER"] == "live-appliance"
    assert record["LIVE_TURN"] == 1
    assert record["LIVE_SESSION"] == "session-1"
    assert record["LIVE_PRESS_TO_FIRST_AUDIO_MS"] == 50.0
    assert record["LIVE_RELEASE_TO_ACTIVITY_END_MS"] == 2.0


def test_the_wait_for_the_reply_is_timed_to_its_first_audio_not_its_last() -> None:
    """`ctl status` and the journal's turn line say how long the answer took to start:
    every later part of the reply moved it, and a 30 s reply read as a 30 s wait."""
    turns = TurnLog()
    turns.start(10.0, "s")
    turns.released(11.0)
    for t in (11.5, 12.0, 40.0):  # the reply's parts as they come
        turns.reply_received(t)
    turns.finish(41.0, "s")
    (turn,) = turns.recent()
    assert turn["release_to_first_reply_ms"] == 500.0


def test_a_text_turn_is_a_turn_and_the_empty_one_it_follows_is_none(
    journal: Captured,
) -> None:
    """A hands-free conversation a hook's words opened: the capture starts a turn, the
    words start theirs at once; one line, for the words, timed from them."""
    turns = TurnLog()
    turns.start(10.0, None)  # the conversation's capture
    turns.start(10.001, None)  # the text, handed over
    turns.released(10.001)
    turns.reply_received(10.6)
    turns.finish(12.0, "session-1")
    (record,) = journal.records
    assert (record["LIVE_TURN"], record["LIVE_RELEASE_TO_FIRST_REPLY_MS"]) == (1, 599.0)


def test_hands_free_each_exchange_is_a_turn_timed_from_the_last_word_heard(
    journal: Captured,
) -> None:
    """A conversation was one line at its end, with no reply latency in it. Each
    exchange is a turn now; the silence before the hang-up is none."""
    turns = TurnLog()
    turns.start(10.0, None)  # the conversation opens
    turns.sent("audio", 10.04)
    turns.reply_received(12.3, last_word=11.9)  # the person's last word before it
    turns.next_exchange(15.0, "session-1")  # the reply played; listening again
    turns.reply_received(17.5, last_word=14.0)  # a word from the last exchange: none here
    turns.next_exchange(19.0, "session-1")
    turns.sent("audio", 19.04)
    turns.finish(29.0, "session-1")  # nothing said, the conversation ends
    first, second = journal.records
    assert (first["LIVE_TURN"], first["LIVE_RELEASE_TO_FIRST_REPLY_MS"]) == (1, 400.0)
    assert (second["LIVE_TURN"], second["LIVE_TURN_MS"]) == (2, 4000.0)
    assert "LIVE_RELEASE_TO_FIRST_REPLY_MS" not in second


def test_a_failed_turn_says_so_in_its_summary(journal: Captured) -> None:
    turns = TurnLog()
    turns.start(10.0, None)
    turns.finish(15.0, None, failed=True)
    (record,) = journal.records
    assert record["MESSAGE"] == "turn 1 failed: turn 5000 ms"
    assert record["LIVE_TURN_RESULT"] == "error"


def test_priorities_follow_levels_and_the_key_is_masked(journal: Captured) -> None:
    log = logging.getLogger("device.live")
    log.warning("connection lost: %s", "close code 1011", extra={"LIVE_ERROR": "1011"})
    log.error("refused key AIza-secret-key")
    try:
        raise ValueError("bad header x-goog-api-key: AIza-secret-key")
    except ValueError:
        log.exception("failed")

    warning, error, failure = journal.records
    assert (warning["PRIORITY"], warning["LIVE_ERROR"]) == ("4", "1011")
    assert warning["MESSAGE"] == "connection lost: close code 1011"
    assert error["PRIORITY"] == "3"
    assert "AIza-secret-key" not in repr(journal.records)
    assert "***" in error["MESSAGE"] and "***" in failure["MESSAGE"]


def test_a_key_read_after_the_start_is_masked_too(journal: Captured) -> None:
    """A token a job wrote since the start is not among the secrets the log was given."""
    logging.getLogger("device.live").error("refused: auth_tokens/written-later and AIzaLater1")
    (record,) = journal.records
    assert "written-later" not in record["MESSAGE"] and "AIzaLater1" not in record["MESSAGE"]


def test_a_tracebacks_code_is_not_taken_for_a_key(journal: Captured) -> None:
    """Every record is masked by pattern now: `key=` in a quoted source line stays."""
    logging.getLogger("device.live").error("at: idle = min(waiting, key=waiting.get)")
    (record,) = journal.records
    assert record["MESSAGE"] == "at: idle = min(waiting, key=waiting.get)"


def test_the_key_is_masked_in_structured_fields_too(journal: Captured) -> None:
    reason = "HTTP 403 for https://h/v1?key=secret-key-0123"
    logging.getLogger("device.live").error("cannot connect", extra={"LIVE_ERROR": reason})

    (record,) = journal.records
    assert record["LIVE_ERROR"] == "HTTP 403 for https://h/v1?key=***"
    assert "secret-key-0123" not in repr(journal.records)


def test_a_long_traceback_keeps_the_exception_raised_last(journal: Captured) -> None:
    """The end of a traceback says what failed and where: a chain begun by an SDK error
    quoting the service's 32 KB reply was cut to its first 16 KB, the service's words
    alone, and the bug raised while handling it was lost."""
    log = logging.getLogger("device.live")
    try:
        try:
            raise ValueError(f"Failed to parse response: {'internal error; ' * 2000!r}")
        except ValueError:
            {}["the_bug_handling_it"]
    except KeyError:
        log.exception("the reply could not be handled")
    (failed,) = journal.records
    assert len(failed["MESSAGE"]) < logs.TRACEBACK_LIMIT + logs.TEXT_LIMIT
    assert failed["MESSAGE"].startswith("the reply could not be handled\nTraceback")
    assert "KeyError: 'the_bug_handling_it'" in failed["MESSAGE"]
    assert "characters left out" in failed["MESSAGE"]


def test_whatever_a_service_makes_the_box_log_is_cut_and_still_masked(
    journal: Captured,
) -> None:
    """A page-long close reason, an exception quoting a whole frame: one bounded record,
    with the key masked even where the cut falls inside it."""
    log = logging.getLogger("device.live")
    reason = "z" * (logs.TEXT_LIMIT - 20) + "AIza-secret-key" + "y" * 500_000
    log.warning("connection lost: %s", reason, extra={"LIVE_ERROR": reason})
    try:
        raise ValueError(f"Failed to parse response: {'q' * 900_000!r}")
    except ValueError:
        log.exception("cannot read the service")

    lost, failed = journal.records
    assert len(lost["MESSAGE"]) < logs.TEXT_LIMIT + 100
    assert lost["MESSAGE"].endswith("characters more)")
    assert len(lost["LIVE_ERROR"]) < logs.TEXT_LIMIT + 100
    assert len(failed["MESSAGE"]) < logs.TRACEBACK_LIMIT + logs.TEXT_LIMIT
    assert failed["MESSAGE"].startswith("cannot read the service\nTraceback")
    assert "AIza-secret-key" not in repr(journal.records) and "***" in lost["MESSAGE"]


def test_a_press_over_a_reply_ends_its_turn_with_a_line_of_its_own(journal: Captured) -> None:
    turns = TurnLog()
    turns.start(10.0, "session-1")
    turns.released(11.0)
    turns.reply_received(11.5)
    turns.start(12.0, "session-1")  # pressed again while the reply plays
    turns.released(13.0)
    turns.finish(14.5, "session-1")
    first, second = journal.records
    assert (first["LIVE_TURN"], first["LIVE_TURN_MS"]) == (1, 2000.0)
    assert (second["LIVE_TURN"], second["LIVE_TURN_MS"]) == (2, 2500.0)


def test_a_flood_of_lines_from_one_part_is_cut_and_the_rest_of_the_box_still_logs() -> None:
    """A service calling tools every 5 ms wrote 3000 warnings in 18 s, a client hammering
    ctl 739 lines a second: journald's own limit would then drop lines blindly."""
    now = [0.0]
    budget = logs.LineBudget(clock=lambda: now[0])
    tools, states = logging.getLogger("device.tools.flood"), logging.getLogger("device.states.x")
    with journal_lines(tools.name, states.name, filters=[budget], propagate=False) as captured:
        for n in range(1000):
            tools.warning("tool %d: error", n)
        tools.error("a failure is not left out: errors have a budget of their own")
        states.info("idle -> connecting (Pressed)")
        now[0] += 2.0  # ten lines' worth of budget back
        tools.warning("tool 1000: error")
    messages = [r["MESSAGE"] for r in captured.records]
    assert messages[: logs.LineBudget.BURST] == [f"tool {n}: error" for n in range(200)]
    assert messages[logs.LineBudget.BURST :] == [
        "a failure is not left out: errors have a budget of their own",
        "idle -> connecting (Pressed)",
        "tool 1000: error (800 lines before it left out: too many)",
    ]
    assert captured.records[-1]["LIVE_LINES_LEFT_OUT"] == 800


def test_a_ready_left_out_while_pid1_was_busy_is_sent_again() -> None:
    """READY=1 dropped after WAIT_S (PID 1 busy at boot) is never sent again: with
    Type=notify systemd then kills the service at TimeoutStartSec. The old blocking
    sendto() delivered it once PID 1 read."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "notify")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        notifier = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        filler = fill(path.encode())  # other services' messages fill PID 1's queue
        notifier.ready("idle")
        assert notifier.lost == 1
        drain(server)
        notifier.watchdog()
        server.settimeout(2)
        got = server.recv(4096).decode().splitlines()
        notifier.close()
        server.close()
        filler.close()
        assert "READY=1" in got, got


#: WatchdogSec in these tests: its heartbeat every 30 s, so any ping sooner is a retry.
WATCHDOG_S = 60.0


class SocketNotifier(Notifier):
    """The real notifier on a real socket, keeping what systemd received."""

    def __init__(self, address: str) -> None:
        super().__init__({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))})
        self.messages: list[str] = []
        self.sent = asyncio.Event()

    def send(self, *fields: str) -> None:
        lost = self.lost
        super().send(*fields)
        if self.lost <= lost:  # got through
            self.messages.extend(fields)
            self.sent.set()

    def count(self, message: str) -> int:
        return self.messages.count(message)


@dataclass
class SystemdParts(FakeParts):
    """Fake parts, but a notifier that talks to a socket standing in for PID 1's."""

    address: ClassVar[str] = ""

    def notifier(self):  # type: ignore[no-untyped-def]
        return self._keep("notifier", SocketNotifier(self.address))


async def test_a_watchdog_ping_systemd_could_not_take_is_sent_again_well_before_the_next(
    tmp_path: Path,
) -> None:
    """PID 1 busy for a moment (a daemon-reload on a slow SD card, apt upgrading systemd):
    the one WATCHDOG=1 it cannot take must not leave the box without a ping for a whole
    WatchdogSec, or systemd kills a box that works (the conversation cut, the LEDs dark)."""
    name = f"watchdog-retry-{uuid.uuid4().hex}"
    pid1 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid1.bind(b"\0" + name.encode())
    SystemdParts.address = "@" + name
    async with running(tmp_path, parts_class=SystemdParts, watchdog_s=WATCHDOG_S) as box:
        notifier: SocketNotifier = box.parts.made["notifier"]
        assert notifier.count("WATCHDOG=1") >= 1  # the start-up's heartbeat
        other = fill(b"\0" + name.encode())
        box.appliance.post(Heartbeat())  # the 15 s tick, while PID 1 reads nothing
        await asyncio.sleep(0.2)
        assert notifier.lost, "the ping was left out"
        fed = notifier.count("WATCHDOG=1")
        drain(pid1)  # PID 1 reads again
        started = time.monotonic()
        async with asyncio.timeout(5):
            while notifier.count("WATCHDOG=1") == fed:
                notifier.sent.clear()
                await notifier.sent.wait()
        assert time.monotonic() - started < WATCHDOG_S / 4
        other.close()
    pid1.close()


def readme_latency_fields() -> list[str]:
    """The fields the README's `journalctl -o json --output-fields=...` command reads."""
    (fields,) = re.findall(r"--output-fields=([A-Z_,]+)", README.read_text())
    return fields.split(",")


async def test_every_field_of_the_readmes_latency_command_reaches_the_journal(
    server: LiveServer,
) -> None:
    with journal_lines("device") as journal:
        async with set_up_link(server):
            pass  # a session set up: its setup time
        turns = TurnLog()  # a push-to-talk turn: press, speech, release, reply, idle
        turns.start(10.0, "s")
        turns.sent("activity_start", 10.01)
        turns.sent("audio", 10.05)
        turns.released(12.0)
        turns.sent("activity_end", 12.002)
        turns.reply_received(12.4)
        turns.finish(13.0, "s")
    fields = readme_latency_fields()
    assert "LIVE_TURN" in fields and "LIVE_SETUP_MS" in fields, fields
    (turn,) = [r for r in journal.records if "LIVE_TURN" in r]
    (setup,) = [r for r in journal.records if "LIVE_SETUP_MS" in r]
    missing = [f for f in fields if f not in turn and f not in setup]
    assert not missing, f"the README reads {missing}, which no journal record carries"


