"""What today's changes promise an owner, held by tests a careless edit of them would fail
(each named for the hand mutant it kills, in the mutation review's report)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import FakeActions, RealCaptureParts, config, running
from google.genai.live import AsyncSession
from helpers import daemon_saying, journal_lines, until
from system_view import require
from test_appliance import ask_and_hear_the_reply_begin, busy_closing, kinds
from test_appliance import numbered as numbered_40_ms
from test_journal_over_a_month import ODD, FlakyLeds, RealLinkParts, journal_of, printable
from test_read_ahead import Speaker as SwitchedSpeaker
from test_sd_card import INSTALL, CardView
from test_server_fuzz import ScriptedWire, sdk_client
from test_service import drain, fill

from device import appliance as appliance_module
from device import config as config_module
from device import logs
from device.audio.earcons import earcon
from device.audio.pcm import write_wav
from device.config import LiveConfig, Secret, ToolsConfig
from device.doctor import card
from device.doctor.card import check_card
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.hw.led_patterns import dark
from device.hw.leds import LedAnimator
from device.live import setup as live_setup
from device.live.connection import Connection
from device.live.hooks import Hooks
from device.live.turn import UNSAVED_MOST_S, WireTurn, unsaved_limit
from device.live.wire import MIC_RATE
from device.outbox import Outbox
from device.service import Notifier
from device.states import Earcon, SetupComplete, ToolsAtWork
from device.tools import ToolBox

SPEECH = b"\x00\x10" * 640  # 40 ms loud enough to be speech
SECOND = b"\x01\x00" * MIC_RATE


# --- push-to-talk: a press taken late ---------------------------------------------------


async def test_a_question_released_just_before_its_press_is_taken_still_goes_out(
    tmp_path: Path,
) -> None:
    """A short question asked while the last session's close held the loop for a moment:
    its release came before the press was taken, but well within what the ring keeps.
    Every word is there: it goes to the service, not the error earcon for a lost one."""
    async with running(tmp_path, config(audio={"earcons": True}),
                       parts_class=RealCaptureParts) as box:  # fmt: skip
        mic = await busy_closing(box)
        opened = list(box.link.opened)
        now = time.monotonic()
        box.button.on_edge("pressed", now - 1.0)
        box.button.on_edge("released", now - 0.4)
        for n in range(25):  # the last second, read between turns
            mic.record(numbered_40_ms(n), now - 1.0 + 0.04 * (n + 1))
        box.speaker.clear()  # the last session's earcons
        box.camera.hang.set()  # the close is over: the press and release are taken now
        await box.settle()
        assert len(box.link.opened) == len(opened) + 1, "no session for the question"
        box.link.deliver(SetupComplete)
        await box.settle()
        sent = kinds(box)
        assert sent[0] == "activity_start" and "audio" in sent, sent
        assert sent[-1] == "activity_end", sent
        assert earcon(Earcon.ERROR) not in bytes(box.speaker.buffered), "told it failed"


async def test_a_press_over_the_reply_taken_late_still_silences_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Push-to-talk over the reply, the press and its release both taken late (longer ago
    than the ring keeps: the loop held up as the reply played): over the reply a press
    counts from when it silences the box, so it is not a question lost. It stops the reply
    and sends a turn; the error earcon and the reply playing on were a box that would not
    be interrupted."""
    async with running(tmp_path, config(audio={"earcons": True})) as box:
        await ask_and_hear_the_reply_begin(box)
        await box.settle()
        assert box.state == "speaking"
        box.speaker.clear()
        kinds(box)  # what went out so far: the question
        now = time.monotonic()
        box.button.on_edge("pressed", now + 0.01)
        box.button.on_edge("released", now + 0.6)
        late = SimpleNamespace(monotonic=lambda: time.monotonic() + 5.0)
        monkeypatch.setattr(appliance_module, "time", late)  # taken 5 s after the edges
        await box.settle()
        assert "activity_start" in kinds(box)
        assert box.state != "speaking", box.states()
        assert earcon(Earcon.ERROR) not in bytes(box.speaker.buffered), "told it failed"


async def test_a_stop_waits_for_the_link_to_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """systemd stops the box mid-conversation, the service slow to take the close: the
    stop waits for it (the camera switching off meanwhile), so the session is not left
    open at the service, and no task is left behind to say so in the journal."""
    caplog.set_level(logging.WARNING, "device.appliance")
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.settle()
        close = box.link.close

        async def slow_close() -> None:
            await asyncio.sleep(0.3)
            await close()

        box.link.close = slow_close  # type: ignore[method-assign]
    assert box.link.closed == 1, "the session left open at the stop"
    left = [r.getMessage() for r in caplog.records if "left behind" in r.getMessage()]
    assert not any("live-close" in line for line in left), left


async def test_a_question_lost_whole_is_said_lost_in_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The error earcon is all the person hears; the owner reading the journal later is
    told why the box did not answer: the whole question was lost, and how long it was."""
    caplog.set_level(logging.WARNING, "device.appliance")
    async with running(tmp_path, parts_class=RealCaptureParts) as box:
        mic = await busy_closing(box)
        now = time.monotonic()
        box.button.on_edge("pressed", now - 6.0)
        box.button.on_edge("released", now - 5.4)
        for n in range(150):
            mic.record(numbered_40_ms(n), now - 6.0 + 0.04 * (n + 1))
        box.camera.hang.set()
        await box.settle()
        assert box.state == "idle"
    said = [r.getMessage() for r in caplog.records if r.name == "device.appliance"]
    assert any("the whole question (0.6 s) is lost" in line for line in said), said


async def test_a_press_held_past_longest_turn_s_ends_the_turn_whoever_speaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Push-to-talk, the button held down with someone talking on (a TV, a stuck button
    in a busy room): the turn ends at `longest_turn_s`, not at the far longer
    `longest_conversation_s` of hands-free, and the journal names the setting."""
    caplog.set_level(logging.INFO, "device.appliance")
    cfg = config(conversation={"longest_turn_s": 0.4, "longest_conversation_s": 600.0})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")  # and never released
        box.link.deliver(SetupComplete)
        await box.settle()
        assert box.state == "listening"
        deadline = time.monotonic() + 3.0
        while box.state == "listening" and time.monotonic() < deadline:
            box.mic.record(SPEECH)
            await box.settle()
            await asyncio.sleep(0.04)
        assert box.state == "thinking", "the held press went on past longest_turn_s"
        await box.settle()
        assert "activity_end" in kinds(box)
    said = [r.getMessage() for r in caplog.records if r.name == "device.appliance"]
    assert any("[conversation] longest_turn_s 0.4 s" in line for line in said), said


async def test_a_tool_at_its_own_timeout_still_has_the_reply_time_to_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hands-free, a tool slow to the end of its `[tools] timeout_s`: its answer (a
    timeout's error) goes out then, and the model has `reply_timeout_s` more to speak.
    The box gives up only after both, and the journal names the two settings."""
    caplog.set_level(logging.INFO, "device.appliance")
    cfg = config(
        button={"mode": "toggle"},
        tools={"timeout_s": 0.3},
        conversation={"reply_timeout_s": 1.0},
    )
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(ToolsAtWork, calls=1)
        await box.settle()
        assert box.state == "thinking"
        await asyncio.sleep(0.6)  # past the tool's own timeout, within the reply's time
        assert box.state == "thinking", "given up as the tool's answer went out"
        await asyncio.sleep(1.2)
        assert box.state != "thinking"
    said = [r.getMessage() for r in caplog.records if r.name == "device.appliance"]
    setting = "[tools] timeout_s + [conversation] reply_timeout_s 1.3 s"
    assert any(f"Timeout tool: {setting}" in line for line in said), said


# --- what a new connection sends again -------------------------------------------------


def test_a_short_press_after_a_long_one_is_not_said_cut_at_a_switch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A press held past what is kept, answered; then a short question, the connection
    switched under it (a goAway): all of it goes again, and the journal does not say its
    first seconds were lost, which were the long press's."""
    turn = WireTurn(unsaved_limit=unsaved_limit(3600))
    turn.sent("activity_start")
    for _ in range(int(UNSAVED_MOST_S) + 2):
        turn.spoke(SECOND)
    turn.sent("activity_end")
    turn.sent("activity_start")
    for _ in range(3):
        turn.spoke(SECOND)
    with caplog.at_level(logging.WARNING):
        again = turn.words_to_repeat()
    assert len(b"".join(again)) == 3 * len(SECOND)
    assert "are lost" not in caplog.text, caplog.text


def test_hands_free_keeps_its_minute_to_send_again_with_a_short_longest_turn_s() -> None:
    """An owner's `longest_turn_s` of 10 s bounds a push-to-talk press, not what a
    hands-free conversation keeps to send again after a drop: a 20 s question, cut by a
    drop, reaches the next connection whole (the newest minute is kept)."""
    turn = WireTurn(unsaved_limit=unsaved_limit(10), answer_within_s=120)
    for _ in range(20):
        turn.sent("audio")
        turn.spoke(SECOND)
    assert len(b"".join(turn.words_to_repeat())) == 20 * len(SECOND)


# --- the journal over an hour ---------------------------------------------------------


def test_leds_gone_for_an_hour_are_one_line_and_one_when_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A HAT unplugged for an hour, then plugged back: "LEDs failed" once, not once a
    minute for as long as it stays away, and "LEDs work again" once it shows a frame."""
    clock = [0.0]
    monkeypatch.setattr(logs, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    driver = FlakyLeds()
    animator = LedAnimator(driver)
    with journal_lines("device.hw.leds") as journal:
        driver.fails = True
        for second in range(3600):  # tried again every RETRY_S
            clock[0] = float(second)
            animator._show(dark(3))
        driver.fails = False
        clock[0] = 3600.0
        animator._show(dark(3))
    said = [str(r["MESSAGE"]) for r in journal.records]
    assert len(said) == 2 and "LEDs failed" in said[0], said
    assert said[1] == "LEDs work again", said


def test_a_bound_passed_for_an_hour_without_a_break_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bound hit again and again and never back within (a loop against it): one line,
    not one a minute for as long as it lasts."""
    clock = [0.0]
    monkeypatch.setattr(logs, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    bound = logs.Overflow(logging.getLogger("device.mic_feed"), "outbox_audio")
    with journal_lines("device.mic_feed") as journal:
        for second in range(3600):
            clock[0] = float(second)
            bound.hit("microphone audio held too long")
    assert len(journal.records) == 1, [r["MESSAGE"] for r in journal.records]


def test_pid1_deaf_for_an_hour_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PID 1 not reading for an hour (systemd wedged): "cannot notify systemd" once, not
    once a minute."""
    clock = [0.0]
    monkeypatch.setattr(logs, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(Notifier, "WAIT_S", 0.0)
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as pid1:
        pid1.bind(str(path))
        notifier = Notifier(environ={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        with fill(str(path).encode()), journal_lines("device.service") as journal:
            for beat in range(240):
                clock[0] = beat * 15.0
                notifier.watchdog()
        notifier.close()
    assert len(journal.records) == 1, [r["MESSAGE"] for r in journal.records]


def test_systemd_back_says_how_many_of_that_run_were_left_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The line "systemd takes notifications again (N left out)": N is that run's, not one
    that ended unsaid (within the minute of the last line) added to it."""
    clock = [0.0]
    monkeypatch.setattr(logs, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(Notifier, "WAIT_S", 0.0)
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as pid1:
        pid1.bind(str(path))
        notifier = Notifier(environ={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        with journal_lines("device.service") as journal:
            for at, deaf in ((0, True), (5, False), (10, True), (15, False), (100, True),
                             (105, False)):  # fmt: skip
                clock[0] = float(at)
                if deaf:
                    with fill(str(path).encode()):
                        notifier.watchdog()
                else:
                    drain(pid1)
                    notifier.watchdog()
        notifier.close()
    again = [str(r["MESSAGE"]) for r in journal.records if "again" in str(r["MESSAGE"])]
    assert again == ["systemd takes notifications again (1 left out)"] * 2, again


def test_a_tool_call_without_an_id_of_an_odd_name_is_said_on_one_printable_line() -> None:
    """The service calls a tool by an odd name (a line break, an escape sequence, 20 000
    characters) and no id: the line saying it is not run quotes the name as escapes, cut
    short, as every other line about a call does."""
    odd = ODD + "n" * 20_000
    call = json.dumps({"toolCall": {"functionCalls": [{"name": odd}]}}).encode()
    records = journal_of([call])
    said = [r for r in records if "without an id" in str(r["MESSAGE"])]
    assert said, [r["MESSAGE"] for r in records]
    assert not printable(said)
    assert len(str(said[0]["MESSAGE"])) < 1000


async def test_a_client_that_cannot_be_built_gives_its_reason_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library's error of several lines (a Python traceback's text, a linker's list):
    LIVE_ERROR, the one field an owner's script collects, holds it on one printable line,
    as every other LIVE_ERROR does."""

    def broken(cfg: object) -> object:
        raise ImportError("libssl.so.3: cannot open shared object file\n\x1b[2Jsee above")

    monkeypatch.setattr(live_setup, "build_client", broken)
    cfg = dataclasses.replace(config(), api_key=Secret("AIza-test"))
    with journal_lines("device", filters=[logs.SessionField()]) as journal:
        async with running(tmp_path, cfg, parts_class=RealLinkParts) as box:
            await box.ctl("press")
            await until(lambda: box.state == "error")
            await box.ctl("release")
    errors = [r for r in journal.records if "libssl" in str(r.get("LIVE_ERROR"))]
    assert errors, [r["MESSAGE"] for r in journal.records]
    assert all("\n" not in str(r["LIVE_ERROR"]) for r in errors), errors
    assert all("\x1b" not in str(r["LIVE_ERROR"]) for r in errors), errors


def test_a_nameless_tool_call_has_no_made_up_name_in_its_field() -> None:
    """The service calls a tool by no name: `journalctl LIVE_TOOL=?` is no tool of the
    box's, and an owner's script counting calls by LIVE_TOOL took "?" for one; the field
    is empty, as its id's is when it has none (the line itself says "?")."""
    call = json.dumps({"toolCall": {"functionCalls": [{"id": "1"}]}}).encode()
    records = journal_of([call], tools=ToolBox(ToolsConfig(), FakeActions()))
    said = [r for r in records if "LIVE_TOOL_RESULT" in r]
    assert said, [r["MESSAGE"] for r in records]
    assert all(r.get("LIVE_TOOL", "") == "" for r in said), said


def test_a_tool_call_pressed_over_of_an_odd_name_is_said_on_one_printable_line() -> None:
    """The service calls a tool by an odd name for a turn the person has pressed over:
    the line saying it is not run quotes the name as escapes, cut short."""
    odd = ODD + "n" * 20_000
    call = json.dumps({"toolCall": {"functionCalls": [{"id": "1", "name": odd}]}}).encode()
    hooks = Hooks(1, lambda event: None, lambda item, t: None, lambda h: None, SwitchedSpeaker())
    turn = WireTurn(activity_open=True)  # pressed: the person talks over the reply
    with journal_lines("device") as journal:
        session = AsyncSession(api_client=sdk_client(), websocket=ScriptedWire([call]))
        stack = contextlib.AsyncExitStack()
        connection = Connection(session, stack, LiveConfig(), Outbox(5), hooks, turn, None)
        asyncio.run(connection.run())
    said = [r for r in journal.records if "pressed over" in str(r["MESSAGE"])]
    assert said, [r["MESSAGE"] for r in journal.records]
    assert not printable(said)
    assert len(str(said[0]["MESSAGE"])) < 1000


# --- `ask --audio`: the WAV written ---------------------------------------------------


def test_a_reply_wav_is_readable_by_others_as_before(tmp_path: Path) -> None:
    """Written beside its place and renamed, the WAV keeps the mode a file written in
    place had (0666 less the umask): another user's player, or a web server, reads it."""
    out = tmp_path / "reply.wav"
    old = os.umask(0o022)
    try:
        write_wav(out, b"\0\0" * 160, 16_000)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_a_reply_wav_to_a_pipe_is_written_into_it(tmp_path: Path) -> None:
    """`ask --audio` to a named pipe a player reads (`mkfifo`, `aplay < pipe`): the WAV
    goes into the pipe, which stays a pipe; a file renamed over it took the reply away
    from the player, and left the player waiting for ever."""
    pipe = tmp_path / "reply.pipe"
    os.mkfifo(pipe)
    heard: list[bytes] = []
    reader = threading.Thread(target=lambda: heard.append(pipe.read_bytes()), daemon=True)
    reader.start()
    write_wav(pipe, b"\1\0" * 160, 16_000)
    reader.join(5)
    assert stat.S_ISFIFO(pipe.stat().st_mode), "the pipe was replaced by a file"
    assert heard and heard[0].startswith(b"RIFF"), heard


def test_a_reply_wav_to_a_link_writes_where_it_points(tmp_path: Path) -> None:
    """`--audio latest.wav`, a link the owner keeps to a file elsewhere: the reply is
    written to that file, and the link stays a link (a file renamed over it cut the two
    apart: the next look at the linked file found the old reply)."""
    target = tmp_path / "kept" / "reply.wav"
    target.parent.mkdir()
    target.write_bytes(b"an old reply")
    link = tmp_path / "latest.wav"
    link.symlink_to(target)
    write_wav(link, b"\1\0" * 160, 16_000)
    assert link.is_symlink()
    with wave.open(str(target), "rb") as reply:
        assert reply.getnframes() == 160


# --- `doctor card` ------------------------------------------------------------------------


def card_context(tmp_path: Path, text: str) -> Context:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return Context(config_module.load(path), Options(), Progress(spinner=False))


async def test_the_doctor_looks_at_the_card_before_the_first_start(tmp_path: Path) -> None:
    """A new box, the doctor run before the service ever started: the state directory is
    not made yet, and the card under it is what the service will write to. The line was
    SKIP "cannot look", the one time an owner runs the doctor to see all is well."""
    state = tmp_path / "not" / "made" / "yet"
    ctx = card_context(
        tmp_path, f'[service]\nstate_dir = "{state}"\n[control]\nsocket = "{tmp_path}/n.sock"\n'
    )
    result = await check_card(ctx)
    assert result.status is Status.PASS, result
    assert str(state) in result.measured and "free" in result.measured, result


async def test_a_state_file_over_its_quota_is_said_full(tmp_path: Path) -> None:
    """A disk quota met (EDQUOT) is a full disk for the service's user: the fix is room
    made, not the permissions the doctor sent the owner after."""
    unkept = {"path": "/var/lib/live-appliance/state.json", "error": os.strerror(errno.EDQUOT),
              "errno": "EDQUOT"}  # fmt: skip
    async with daemon_saying({"settings_not_kept": unkept}) as sock:
        ctx = card_context(tmp_path, f'[control]\nsocket = "{sock}"\n')
        result = await check_card(ctx)
    assert result.status is Status.WARN, result
    assert "full" in (result.fix or "") and "sudo ls -ld" not in (result.fix or ""), result.fix


async def test_an_overlay_mounted_over_the_card_is_the_one_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlay file system mounted over the card's own mount at the same point: what
    the service writes lands in the overlay (the last mounted), in memory, and the doctor
    says so; the card's ext4 below it, first in the mount table, is not what is written."""
    state = tmp_path / "state"
    state.mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "1 0 8:2 / / rw - ext4 /dev/root rw\n"
        f"2 1 8:2 / {state} rw - ext4 /dev/root rw\n"
        f"3 1 0:9 / {state} rw - overlay overlay rw,lowerdir=/lower,upperdir=/ram/upper\n"
        "4 1 0:10 / /ram rw - tmpfs tmpfs rw\n"
    )
    monkeypatch.setattr(card, "MOUNTINFO", mountinfo)
    ctx = card_context(
        tmp_path, f'[service]\nstate_dir = "{state}"\n[control]\nsocket = "{tmp_path}/n.sock"\n'
    )
    result = await check_card(ctx)
    assert result.status is Status.WARN and "lost at each boot" in result.measured, result


def test_the_doctors_picture_on_a_read_only_tmp_is_said_read_only(tmp_path: Path) -> None:
    """/tmp read-only (the card remounted after an error): the doctor took the picture and
    said to give a path "you may write to", sending the owner after permissions."""
    out = tmp_path / "out"
    out.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[camera]\nenabled = true\nsource = "synthetic"\n'
        f'[control]\nsocket = "{tmp_path}/none.sock"\n'
    )
    script = f'mount -t tmpfs -o ro tmpfs {out} && exec "$@"'
    command = [sys.executable, "-m", "device", "doctor", "camera", "--json", "--config",
               str(cfg), "--camera-out", str(out / "camera.jpg")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [require("unshare", "util-linux"), "--mount", "sh", "-c", script, "sh", *command],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.stdout.startswith("{"), (done.stdout, done.stderr)
    line: dict[str, Any] = json.loads(done.stdout)["checks"][0]
    assert line["status"] == "WARN" and "Read-only" in line["measured"], line
    assert "read-only" in line["fix"] and "you may write to" not in line["fix"], line


# --- the installer ------------------------------------------------------------------------


class DiskOverlayView(CardView):
    """/opt on an overlay whose writes land on the disk (a container's root, a build
    image's layers): kept across boots."""

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        lower = " && ".join(
            f"mount -t overlay overlay -o lowerdir={d},upperdir={upper},workdir={work} {d}"
            for d, (upper, work) in self.layers.items()
            if d != "/opt"
        )
        opt = (
            f"mkdir {self.rw}/u {self.rw}/w && mount -t overlay overlay -o lowerdir=/opt,"
            f"upperdir={self.rw}/u,workdir={self.rw}/w /opt"
        )
        return subprocess.run(
            [require("unshare", "util-linux"), "--mount", "sh", "-c",
             f'{lower} && {opt} && exec "$@"', "view", *argv],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
            env=kwargs.get("env"), check=False,
        )  # fmt: skip


def test_the_installer_takes_an_overlay_written_to_the_disk(tmp_path: Path) -> None:
    """Only an overlay whose writes stay in memory undoes the install at the next boot:
    one written to the disk (a container, an image being built) keeps it, and is not
    refused as raspi-config's overlay file system."""
    view = DiskOverlayView(tmp_path / "view", "overlay")
    env = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    result = view.run(["bash", str(INSTALL), "--dry-run"], env=env)
    assert "undone at the next boot" not in result.stderr, result.stderr
    assert "==> Debian packages" in result.stdout, result.stdout + result.stderr
