"""A month of journal: what the service sends reaches a journal line as one printable line,
and a line a failure comes back to every day or so is still found by its fields."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import socket
import types
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import FakeActions, FakeMicrophone, FakeParts, config, running
from google.genai.live import AsyncSession
from helpers import journal_lines, trusted_server, until
from test_read_ahead import Speaker as SwitchedSpeaker
from test_server_fuzz import ScriptedWire, audio_part, sdk_client, server_content
from test_service import drain, fill
from wire import set_up_link

from device import appliance, logs
from device.config import AudioConfig, Config, LiveConfig, Secret, ToolsConfig
from device.hw.led_patterns import dark
from device.hw.leds import LedAnimator
from device.live import setup as live_setup
from device.live.connection import Connection
from device.live.hooks import Hooks
from device.live.turn import WireTurn
from device.mic_feed import OVERFLOW_LOG_EVERY_S, MicFeed
from device.outbox import Outbox
from device.parts import Parts
from device.service import Notifier
from device.tools import ToolBox
from rig.server import connection as rig_connection

#: What a service (or whatever answers in its name: a proxy, a captive portal) may put in a
#: text the box quotes: a line break, a terminal's escape sequence, a bidi override.
ODD = "odd\n\x1b[2J\u202etext"


def journal_of(frames: list[bytes], tools: ToolBox | None = None) -> list[dict[str, object]]:
    """The journal's records of one connection over which the service sent `frames`."""
    hooks = Hooks(1, lambda event: None, lambda item, t: None, lambda h: None, SwitchedSpeaker())
    with journal_lines("device") as journal:
        session = AsyncSession(api_client=sdk_client(), websocket=ScriptedWire(list(frames)))
        stack = contextlib.AsyncExitStack()
        turn = WireTurn()
        asyncio.run(Connection(session, stack, LiveConfig(), Outbox(5), hooks, turn, tools).run())
    return journal.records


def printable(records: list[dict[str, object]]) -> list[str]:
    """Each record's message and LIVE_* fields that would split a line or act on a terminal."""
    return [
        f"{key}={value!r}"
        for record in records
        for key, value in record.items()
        if (key == "MESSAGE" or key.startswith("LIVE_"))
        and isinstance(value, str)
        and any(c in value for c in ("\n", "\x1b", "\u202e"))
    ]


def test_a_reply_part_of_an_odd_type_is_said_on_one_printable_line() -> None:
    """The service sends a reply part that is not audio: the journal says so, quoting its
    type. A type with a line break split the line (journalctl showing the rest without its
    priority, or the whole as "[N B blob data]"), and an escape sequence cleared the
    owner's terminal as `journalctl -f` printed it; a long one filled the line."""
    part = audio_part(b"\x01\x00" * 10, ODD + "w" * 20_000)
    records = journal_of([server_content(modelTurn={"parts": [part]})])
    said = [r for r in records if "not played" in str(r["MESSAGE"])]
    assert said, [r["MESSAGE"] for r in records]
    assert not printable(said)
    assert len(str(said[0]["MESSAGE"])) < 1000, "a type is a word or two, not 20 000 characters"



def test_a_tool_call_of_an_odd_name_is_said_on_one_printable_line() -> None:
    """The service calls a tool by a name (and id) holding controls, 20 000 characters
    long: the line that says it was not run (no tools here), and with tools the call's own
    line and its LIVE_TOOL and LIVE_TOOL_CALL fields, quote them as escapes, cut short. The
    line split in the journal, an escape sequence cleared the owner's terminal."""
    odd = ODD + "n" * 20_000
    call = json.dumps({"toolCall": {"functionCalls": [{"id": odd, "name": odd}]}}).encode()
    records = journal_of([call])
    said = [r for r in records if "no tools are enabled" in str(r["MESSAGE"])]
    assert said, [r["MESSAGE"] for r in records]
    records = journal_of([call], tools=ToolBox(ToolsConfig(), FakeActions()))
    said += [r for r in records if r.get("LIVE_TOOL")]
    assert len(said) == 2, [r["MESSAGE"] for r in records]
    assert not printable(said)
    assert all(len(str(value)) < 1000 for r in said for key, value in r.items()
               if key == "MESSAGE" or key.startswith("LIVE_TOOL")), "a name is a word or two"


class FlakyLeds:
    """An LED driver whose writes fail now and then (a loose HAT's SPI, EIO): `fails` says
    whether the next one does."""

    pixels = 3

    def __init__(self) -> None:
        self.fails = False

    def show(self, frame: Any) -> None:
        if self.fails:
            raise OSError(5, "Input/output error")

    def close(self) -> None:
        pass


def test_leds_failing_now_and_then_for_an_hour_are_a_few_lines_with_a_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loose HAT fails one LED write in a few, for days: each failure was "LEDs failed"
    and each next frame shown "LEDs work again", two lines a second or so (the animator
    tries again every RETRY_S), 7 200 an hour from a part that is not the box's job,
    burying the lines that are. Said at most every OVERFLOW_LOG_EVERY_S, with how many
    times it failed, as the microphone's overflows are; a driver that fails for good is
    still said at once."""
    clock = [0.0]
    monkeypatch.setattr(logs, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    driver = FlakyLeds()
    animator = LedAnimator(driver)
    with journal_lines("device.hw.leds") as journal:
        for second in range(3600):  # a failed frame, then the next one (RETRY_S later) shown
            clock[0] = float(second)
            driver.fails = second % 2 == 0
            animator._show(dark(3))
    failed = [r for r in journal.records if r["PRIORITY"] == "3"]
    assert 1 <= len(failed) <= 3600 / OVERFLOW_LOG_EVERY_S + 1, len(journal.records)
    assert len(journal.records) <= 2 * len(failed), [r["MESSAGE"] for r in journal.records]
    said = [re.search(r"(\d+) times", str(r["MESSAGE"])) for r in failed]
    counts = [int(m.group(1)) for m in said if m]
    assert len(counts) == len(failed) and counts[-1] >= 1700, [r["MESSAGE"] for r in failed]


async def test_leds_plugged_in_late_that_fail_are_said_even_within_the_minute_of_the_old_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The LEDs that opened late (`use`) are another part: their first failure is news,
    also seconds after a line about the driver shown on until then (it was not said
    while that line's minute ran, so a HAT that came up broken stayed unsaid)."""
    clock = [0.0]
    monkeypatch.setattr(logs, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    old, new = FlakyLeds(), FlakyLeds()
    animator = LedAnimator(old)
    with journal_lines("device.hw.leds") as journal:
        old.fails = True
        animator._show(dark(3))
        clock[0] = 5.0
        new.fails = True
        await animator.use(new)
        animator._show(dark(3))
        await animator.aclose()
    failed = [str(r["MESSAGE"]) for r in journal.records if r["PRIORITY"] == "3"]
    assert len(failed) >= 2 and "1 times so far" in failed[1], failed


class RealLinkParts(FakeParts):
    """Fake parts but the Live link: the daemon's own."""

    link = Parts.link


async def error_lines_of_a_press(tmp_path: Path, cfg: Config) -> list[dict[str, Any]]:
    """The journal's error lines of a box with its own Live link, pressed once, from its
    start to the error state."""
    with journal_lines("device", filters=[logs.SessionField()]) as journal:
        async with running(tmp_path, cfg, parts_class=RealLinkParts) as box:
            await box.ctl("press")
            await until(lambda: box.state == "error")
            await box.ctl("release")
    return [r for r in journal.records if r["PRIORITY"] == "3"]


async def test_a_press_without_a_key_is_an_error_line_with_its_reason_in_the_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A box installed without its key, pressed now and then for a month: each press is
    an error line, "no session: no API key: ...". README: LIVE_ERROR is "the reason in
    words on a failure's line"; this one had none, so an owner who filters the journal
    on it (or a script that collects LIVE_ERROR) never saw why the box did not answer."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    cfg = config(live={"api_key_file": str(tmp_path / "no-key")})
    errors = await error_lines_of_a_press(tmp_path, cfg)
    assert errors
    assert all(r.get("LIVE_ERROR") for r in errors), [r["MESSAGE"] for r in errors]
    assert "no API key" in str(errors[0]["LIVE_ERROR"]), errors[0]


class MuteMicrophone(FakeMicrophone):
    """A microphone that opens and never delivers (a USB card whose clock never starts)."""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.opened, self._loop = True, loop


class MuteMicrophoneParts(FakeParts):
    def microphone(self, on_chunk, on_overflow, preroll, on_pause):  # type: ignore[no-untyped-def]
        return self._keep("mic", MuteMicrophone(on_chunk, preroll))


async def test_a_microphone_that_delivers_nothing_at_the_start_is_found_by_its_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The microphone opens and delivers nothing: the box starts, and every press sends
    silence. README: LIVE_DEVICE names "a part that fails or is back"; this warning, the
    only line saying why, had no LIVE_DEVICE (nor LIVE_ERROR), so `journalctl -u
    live-appliance LIVE_DEVICE=microphone` showed the card's history without it."""
    monkeypatch.setattr(appliance, "MIC_START_TIMEOUT_S", 0.05)
    with journal_lines("device") as journal:
        async with running(tmp_path, parts_class=MuteMicrophoneParts):
            pass
    said = [r for r in journal.records if "delivered nothing" in str(r["MESSAGE"])]
    assert said, [r["MESSAGE"] for r in journal.records]
    assert said[0].get("LIVE_DEVICE") == "microphone" and said[0].get("LIVE_ERROR"), said[0]


def test_a_link_draining_held_speech_slower_than_it_comes_is_a_few_lines_with_a_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hands-free over a link a little slower than the microphone (a weak Wi-Fi): the
    held speech sits at its bound, a chunk goes out, the next fits, the one after drops
    the oldest. Each time it was "microphone audio held too long" again, a line per
    other chunk: 7 500 in ten minutes, the journal's whole budget, burying the lines
    that say why. A bound passed again and again is said at most every minute, with how
    many times it was hit (as the microphone's overflows are)."""
    clock = [0.0]
    monkeypatch.setattr(logs, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    chunk_s = 0.04
    box = Outbox(hold_s=1)
    feed = MicFeed(AudioConfig(chunk_ms=round(chunk_s * 1000), hold_s=1), box)
    feed.start([])
    chunk = b"\x10\x00" * round(16_000 * chunk_s)
    with journal_lines("device.mic_feed") as journal:
        for n in range(round(600 / chunk_s)):  # ten minutes
            clock[0] = n * chunk_s
            feed.chunk(chunk, clock[0])
            if n % 2:
                box.get_nowait()  # the link takes every other chunk
    said = [r for r in journal.records if r.get("LIVE_BOUND") == "outbox_audio"]
    assert 1 <= len(said) <= 600 / 60 + 1, len(said)
    counts = [re.search(r"(\d+) times", str(r["MESSAGE"])) for r in said]
    assert all(counts) and int(counts[-1].group(1)) > 6000, said[-1]["MESSAGE"]  # type: ignore[union-attr]


async def test_a_session_id_from_the_service_is_one_printable_word_on_every_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every line of a session carries the id the service gave it (LIVE_SESSION), and
    `ctl status` shows it. An id holding a line break or an escape sequence went on every
    one of those lines as it came (`journalctl LIVE_SESSION=<id>` could not be typed,
    the terminal's `session=` field acted on the owner's terminal): it is quoted as the
    service's other words are, and still names one session."""
    monkeypatch.setattr(rig_connection, "uuid4", lambda: types.SimpleNamespace(hex=ODD))
    async with trusted_server(monkeypatch, pace=0) as server:
        with journal_lines("device", filters=[logs.SessionField()]) as journal:
            async with set_up_link(server) as (link, _outbox, _events):
                session = link.session_id
    sessions = [r for r in journal.records if r.get("LIVE_SESSION")]
    assert sessions and session, [r["MESSAGE"] for r in journal.records]
    assert not printable(sessions), sessions[0]
    assert all(r["LIVE_SESSION"] == session for r in sessions)


async def test_a_client_that_cannot_be_built_is_an_error_line_with_its_reason_in_the_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Live API client cannot be built (a library the SDK loads broken by an upgrade):
    at the start and at every press after it, an error line. The reason was in its words
    only, without LIVE_ERROR (README: "the reason in words on a failure's line")."""

    def broken(cfg: object) -> object:
        raise ImportError("libssl.so.3: cannot open shared object file")

    monkeypatch.setattr(live_setup, "build_client", broken)
    cfg = dataclasses.replace(config(), api_key=Secret("AIza-test"))
    errors = await error_lines_of_a_press(tmp_path, cfg)
    assert len(errors) >= 2, [r["MESSAGE"] for r in errors]
    assert all("libssl" in str(r.get("LIVE_ERROR")) for r in errors), errors


def test_pid1_busy_now_and_then_for_an_hour_is_a_few_lines_with_a_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PID 1 too busy to read at one heartbeat in two (an overloaded Pi, a unit that
    floods systemd): each was "cannot notify systemd", and each heartbeat through after
    it "systemd takes notifications again", two lines a watchdog period, for as long as
    it lasts. Said at most every minute, with how many messages were left out so far."""
    clock = [0.0]
    monkeypatch.setattr(logs, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(Notifier, "WAIT_S", 0.0)
    path = tmp_path / "notify"
    pid1 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid1.bind(str(path))
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
    with journal_lines("device.service") as journal:
        for beat in range(240):  # an hour of heartbeats, WatchdogSec=30 s
            clock[0] = beat * 15.0
            if beat % 2 == 0:
                filler = fill(str(path).encode())
                notifier.watchdog()
                filler.close()
            else:
                drain(pid1)
                notifier.watchdog()
    notifier.close()
    pid1.close()
    said = [r for r in journal.records if r["PRIORITY"] == "4"]
    assert 1 <= len(said) <= 60 + 1, len(said)
    assert len(journal.records) <= 2 * len(said), [r["MESSAGE"] for r in journal.records]
    counts = [re.search(r"(\d+) left out", str(r["MESSAGE"])) for r in said]
    assert all(counts) and int(counts[-1].group(1)) > 100, said[-1]["MESSAGE"]  # type: ignore[union-attr]


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


@contextlib.contextmanager
def notifier_of_a_pid1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[list[float], Path, socket.socket, Notifier]]:
    """A notifier (WatchdogSec=30 s) sending to a socket standing in for PID 1, on a
    clock the test sets: the clock, the socket's path, the socket, the notifier."""
    clock = [0.0]
    monkeypatch.setattr(logs, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(Notifier, "WAIT_S", 0.0)
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as pid1:
        pid1.bind(str(path))
        notifier = Notifier(environ={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        try:
            yield clock, path, pid1, notifier
        finally:
            notifier.close()


def test_pid1_deaf_for_an_hour_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PID 1 not reading for an hour (systemd wedged): "cannot notify systemd" once, not
    once a minute."""
    with (
        notifier_of_a_pid1(monkeypatch, tmp_path) as (clock, path, _, notifier),
        fill(str(path).encode()),
        journal_lines("device.service") as journal,
    ):
        for beat in range(240):
            clock[0] = beat * 15.0
            notifier.watchdog()
    assert len(journal.records) == 1, [r["MESSAGE"] for r in journal.records]


def test_systemd_back_says_how_many_of_that_run_were_left_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The line "systemd takes notifications again (N left out)": N is that run's, not one
    that ended unsaid (within the minute of the last line) added to it."""
    with (
        notifier_of_a_pid1(monkeypatch, tmp_path) as (clock, path, pid1, notifier),
        journal_lines("device.service") as journal,
    ):
        for at, deaf in ((0, True), (5, False), (10, True), (15, False), (100, True),
                         (105, False)):  # fmt: skip
            clock[0] = float(at)
            if deaf:
                with fill(str(path).encode()):
                    notifier.watchdog()
            else:
                drain(pid1)
                notifier.watchdog()
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
