"""What an owner reads in the journal: every line of a session findable by its id,
floods and failing parts said once, nothing lost to a journal that is not there or
does not read."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import SPEAKERPHONE, FakeParts, ListedPortAudio, card, config, running
from helpers import Captured, all_loggers, journal_lines, until
from test_audio_capture import _LevelPcm
from websockets.exceptions import InvalidProxy
from wire import config_for

from device import errors, logs
from device.appliance import Appliance
from device.audio import capture as capture_module
from device.audio.playback import Playback
from device.config import CameraConfig, Config, LiveConfig, Secret
from device.hw.camera import CameraFeed
from device.live.session import LiveLink
from device.live.turn import WireTurn
from device.logs import JournalSender, Redactor
from device.outbox import Outbox
from device.parts import Parts
from device.states import Reconnected, SetupComplete
from rig.server.server import LiveServer

CHECKOUT = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def journal() -> Iterator[Captured]:
    with journal_lines("device.live", filters=[logs.SessionField()]) as captured:
        yield captured


async def test_a_dropped_connection_is_found_under_its_session(
    server: LiveServer, journal: Captured
) -> None:
    """README: `journalctl -u live-appliance LIVE_SESSION=<id>   # one session`."""
    events: list[Any] = []
    link = LiveLink(config_for(server), Outbox(hold_s=8), events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        first_id = link.session_id
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in events), within=10)
    finally:
        await link.close()
    lost = [r for r in journal.records if r["MESSAGE"].startswith("connection lost")]
    assert lost, [r["MESSAGE"] for r in journal.records]
    assert lost[0].get("LIVE_SESSION") == first_id


def test_lines_left_out_are_said_even_when_that_part_falls_silent() -> None:
    """A burst of tool calls, then none: the journal must still say lines were left out
    (`LIVE_LINES_LEFT_OUT`), not only if that same logger ever logs again."""
    now = [0.0]
    budget = logs.LineBudget(clock=lambda: now[0])
    tools, states = logging.getLogger("device.tools.burst"), logging.getLogger("device.x.states")
    with journal_lines(tools.name, states.name, filters=[budget], propagate=False) as captured:
        for n in range(1000):
            tools.warning("tool %d: error", n)
        for _ in range(60):  # an hour of other lines; the tools say no more
            now[0] += 60.0
            states.info("idle -> connecting (Pressed)")
    said = [r for r in captured.records if "LIVE_LINES_LEFT_OUT" in r or "left out" in r["MESSAGE"]]
    assert said, f"{len(captured.records)} lines, 800 left out, and nothing says so"


async def test_a_failing_led_driver_is_one_line_not_a_traceback_per_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An SPI write that fails (EIO: a HAT knocked loose) keeps failing; the GPIO
    transport says so once ("a pin that fails keeps failing: said once")."""
    from device.hw.leds import PATTERNS, LedAnimator

    class Broken:
        pixels = 3

        def show(self, frame: Any) -> None:
            raise OSError(5, "Input/output error")

        def close(self) -> None:
            pass

    animator = LedAnimator(Broken())
    states = ["idle", "connecting", "listening", "thinking", "speaking"]
    assert set(states) <= set(PATTERNS)
    with caplog.at_level(logging.INFO, logger="device.hw.leds"):
        for _ in range(20):  # twenty turns
            for state in states:
                await animator.show(state)
                await asyncio.sleep(0)
    tracebacks = [r for r in caplog.records if r.exc_info or r.exc_text]
    assert len(caplog.records) <= 2 and not tracebacks, (
        f"{len(caplog.records)} lines, {len(tracebacks)} tracebacks for one broken driver"
    )


def printable(text: str) -> bool:
    """What journalctl shows as words, not as "[N B blob data]": no C0 or C1 control but a
    tab (a line break it shows, but on a line of its own, without the unit's prefix)."""
    return not any((c < " " and c != "\t") or "\x7f" <= c <= "\x9f" for c in text)


def test_a_transcript_with_line_breaks_and_controls_is_one_readable_journal_line() -> None:
    """The service's words are the service's: a line break, a carriage return or an escape
    in them made `journalctl` show the line as blob data (or cleared a terminal); the
    words of any language, right-to-left and combined, stay as said."""
    turn = WireTurn()
    for part in ["Grüß Gott,", " wie spät?\n", "ist es\r\n", "\x1b[2J jetzt\x00", " مرحبا",
                 " e\u0301 🇩🇪", "\x85ok"]:  # fmt: skip
        turn.heard.add(part)
    turn.said.add("こんにちは。\n\nお元気ですか")
    with journal_lines("device.live") as journal:
        turn.log_words()
    heard, said = journal.records
    for record, field in ((heard, "LIVE_TRANSCRIPT_IN"), (said, "LIVE_TRANSCRIPT_OUT")):
        for text in (record["MESSAGE"], record[field]):
            assert printable(text), repr(text)
    assert heard["LIVE_TRANSCRIPT_IN"].startswith("Grüß Gott, wie spät? ist es ")
    assert "jetzt" in heard["MESSAGE"] and " مرحبا e\u0301 🇩🇪" in heard["MESSAGE"]
    assert said["MESSAGE"] == "model said: こんにちは。 お元気ですか"


def test_a_bidi_override_in_a_transcript_cannot_turn_the_rest_of_the_line_around() -> None:
    """U+202E (and the other embeddings and isolates) makes a terminal that lays out
    right-to-left text show what follows it reversed, to the line's end; Arabic and
    Hebrew themselves, and the marks that only nudge them (U+200F), stay as said."""
    turn = WireTurn()
    turn.heard.add("turn off the \u202eoven\u202c, \u2067please\u2069 שלום\u200f")
    with journal_lines("device.live") as journal:
        turn.log_words()
    (heard,) = journal.records
    assert heard["LIVE_TRANSCRIPT_IN"] == (
        "turn off the \\u202eoven\\u202c, \\u2067please\\u2069 שלום\u200f"
    )


def test_a_journal_stream_that_is_not_stderr_leaves_the_log_on_stderr(tmp_path: Any) -> None:
    """JOURNAL_STREAM inherited by a shell (a terminal a systemd user service started,
    `systemd-run`, a test harness) while stderr is a terminal or a file: systemd says to
    compare it with stderr's device and inode, as `cli._as_error` does. Else every line
    goes to a journal that is not there, and is silently lost."""
    probe = (
        "import logging; from device import logs; logs.setup(); "
        "logging.getLogger('device.appliance').error('cannot build the Live API client: x')"
    )
    err = tmp_path / "stderr"
    with err.open("w") as sink:
        env = {"PATH": "/usr/bin:/bin", "JOURNAL_STREAM": "8:12345", "PYTHONPATH": CHECKOUT}
        subprocess.run([sys.executable, "-c", probe], stderr=sink, env=env, timeout=30,
                       check=True)  # fmt: skip
    assert "cannot build the Live API client" in err.read_text()


def test_the_sdks_notice_that_tokens_are_experimental_stays_out_of_the_journal(
    tmp_path: Any,
) -> None:
    """An owner who set up ephemeral tokens (README) got a warning at every start that
    says nothing to act on; the SDK's other warnings still reach the journal."""
    probe = (
        "import warnings; from device import logs; from google.genai import errors; "
        "logs.setup(); "
        "[warnings.warn_explicit(text, errors.ExperimentalWarning, 'live.py', 1035, "
        "module='google.genai.live') for text in (\"The SDK's ephemeral token support is "
        "experimental, and may change in future versions.\", 'Some other feature is "
        "experimental.')]"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=30, env=env, check=True)  # fmt: skip
    assert "ephemeral token" not in result.stderr
    assert "Some other feature is experimental." in result.stderr


def test_google_auths_warnings_reach_the_journal_as_ours_do_with_the_key_masked() -> None:
    """google-auth cuts its `google` logger off from the root at its first request unless
    that logger was set up, and `google.auth` has a NullHandler: its warnings (a token
    refresh retried, a metadata server not found) were lost, never in the journal."""
    key = "AIzaSyA-owners-key-0123456789abcdef"
    probe = (
        "import logging; from device import logs; from google.auth import _helpers; "
        f"logs.setup(secrets=[{key!r}]); "
        "_helpers.is_logging_enabled(logging.getLogger('google.auth.transport.requests')); "
        f"logging.getLogger('google.auth._default').warning('refresh with {key} retried')"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, "LIVE_APPLIANCE_LOG_FORMAT": "json"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=30, env=env, check=True)  # fmt: skip
    (line,) = [json.loads(raw) for raw in result.stderr.splitlines()]
    assert line["MESSAGE"].startswith("refresh with ") and key not in result.stderr, line


def test_unknown_enum_values_from_the_service_stay_inside_the_log_bounds(
    tmp_path: Any,
) -> None:
    """The SDK warns (warnings.warn, to stderr: the journal, under systemd) for every
    enum value it does not know, quoting it whole; each distinct text also stays in its
    __warningregistry__ for good."""
    script = tmp_path / "flood.py"
    script.write_text(
        "import asyncio, json, sys\n"
        "from types import SimpleNamespace\n"
        "from google.genai.live import AsyncSession\n"
        "from device import logs\n"
        "from device.live.inbound import messages\n"
        "from websockets.exceptions import ConnectionClosed\n"
        "from websockets.frames import Close\n"
        "class Wire:\n"
        "    def __init__(self, raws): self.raws = raws\n"
        "    async def recv(self, decode=None):\n"
        "        if not self.raws: raise ConnectionClosed(Close(1000, ''), None)\n"
        "        return self.raws.pop(0)\n"
        "raws = [json.dumps({'serverContent': {'turnComplete': True, 'turnCompleteReason':\n"
        "        f'R{n}_' + 'x' * 20000}}).encode() for n in range(1000)]\n"
        "async def main():\n"
        "    wire = Wire(raws)\n"
        "    session = AsyncSession(api_client=SimpleNamespace(vertexai=False), websocket=wire)\n"
        "    try:\n"
        "        async for _ in messages(session, wire): pass\n"
        "    except Exception: pass\n"
        "logs.setup()\n"
        "asyncio.run(main())\n"
        "import google.genai._common as c\n"
        "print(len(getattr(c, '__warningregistry__', {})))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, env=env)  # fmt: skip
    lines = result.stderr.splitlines()
    longest = max(map(len, lines), default=0)
    assert len(lines) <= logs.LineBudget.BURST + 2 and longest <= logs.TEXT_LIMIT + 200, (
        f"{len(lines)} stderr lines, {len(result.stderr)} characters, longest {longest}"
    )
    assert int(result.stdout) < 50, f"{result.stdout.strip()} warning texts held for good"


async def test_a_driver_stuck_for_good_is_said_in_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """README: a driver that never returns from a call: "after a minute the daemon says
    so and exits with status 1". An expected hardware state, not a bug in the daemon."""
    from types import SimpleNamespace

    from device.appliance import Appliance
    from device.audio.keeper import DriverStuck

    async def keep() -> None:
        raise DriverStuck("the speaker's driver has not returned from a call for 60 s; "
                          "only a new process can open it again")  # fmt: skip

    task = asyncio.create_task(keep(), name="audio-keeper")
    await asyncio.wait({task})
    from device.service import Notifier

    box = SimpleNamespace(failed=False, stopping=asyncio.Event(), notifier=Notifier(environ={}))
    with caplog.at_level(logging.INFO):
        Appliance._on_task_done(box, task)  # type: ignore[arg-type]
    (record,) = caplog.records
    assert box.failed and "speaker's driver has not returned" in record.getMessage()
    assert not record.exc_info, "a traceback for a documented hardware failure"


def test_a_journal_that_does_not_read_neither_blocks_nor_freezes_the_daemon(
    tmp_path: Path,
) -> None:
    """systemd-python's send blocks in sendmsg while journald's queue is full, holding
    the GIL: every thread stopped. The sender waits WAIT_S at most, then leaves lines
    out and says so."""
    import struct
    import threading
    import time

    path = str(tmp_path / "journal.socket")
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind(path)  # never reads: hung, or far behind
    sender = logs.JournalSender(path)
    ticks: list[float] = []
    stop = threading.Event()

    def other_thread() -> None:  # the speaker's, the microphone's
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.005)

    ticking = threading.Thread(target=other_thread, daemon=True)
    ticking.start()
    started = time.monotonic()
    for n in range(2000):
        sender(f"line {n}", PRIORITY="6", LIVE_STATE="idle", msg="dropped: not a field name")
    took = time.monotonic() - started
    stop.set()
    ticking.join()
    assert took < 10, f"2000 lines took {took:.1f} s (blocking: 50 ms each would be 100 s)"
    assert sender.lost > 0
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps, default=0) < 0.5
    journald.setblocking(False)
    received = []
    with contextlib.suppress(BlockingIOError):
        while True:
            received.append(journald.recv(1 << 20))
    lost = sender.lost
    sender("back again\nsecond line", PRIORITY="6")
    last = journald.recv(1 << 20)
    text = f"back again\nsecond line ({lost} lines before it lost: the journal was busy)"
    assert last.startswith(b"MESSAGE\n" + struct.pack("<Q", len(text.encode())) + text.encode())
    assert f"LIVE_LINES_LOST={lost}\n".encode() in last
    assert b"msg=" not in received[0] and b"LIVE_STATE=idle\n" in received[0]
    journald.close()


@pytest.fixture
def daemon_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The daemon's own handler chain (logs.setup), on stderr, put back afterwards: the
    hooks for what nothing caught and the chatty libraries' levels too."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    monkeypatch.setattr(errors, "_remembered", ())  # keys an earlier test read
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    handlers = logging.getLogger().handlers[:]
    levels = {name: logger.level for name, logger in all_loggers().items()}
    try:
        yield
    finally:
        logging.getLogger().handlers[:] = handlers
        logging.captureWarnings(False)
        for name, logger in all_loggers().items():
            logger.setLevel(levels.get(name, logging.NOTSET))


@pytest.mark.parametrize(
    "later",
    [
        "ya29.a0AfB_vertex-like-access-token-0123456789",  # an access token in the file
        "k3y-of-another-form-0123456789abcdef",  # a key of no known shape
    ],
)
async def test_a_key_read_after_the_start_is_masked_whatever_its_shape(
    daemon_log: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    later: str,
) -> None:
    """The key file is read again at every new session: a key written there since the
    start, of neither a Gemini key's nor a token's shape, was not among the secrets the
    log was given at the start, and an error quoting it went out in clear."""
    from device.config import Config, LiveConfig, Secret

    for name in ("CREDENTIALS_DIRECTORY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    key_file = tmp_path / "token"
    key_file.write_text("AIza-the-start-key\n")
    cfg = Config(live=LiveConfig(api_key_file=str(key_file)), api_key=Secret("AIza-the-start-key"))
    logs.setup(secrets=[cfg.api_key.reveal()])  # type: ignore[union-attr]
    link = LiveLink(cfg, Outbox(5), on_event=lambda e: None, on_sent=lambda i, t: None)
    key_file.write_text(later + "\n")  # a job rotated it
    assert await link._renew_key()
    log = logging.getLogger("device.live")
    log.error("refused: %s", {"x-goog-api-key": later})  # an SDK's repr of its headers
    try:
        raise RuntimeError(f"handshake failed; sent Token {later}")
    except RuntimeError:
        log.exception("the session failed")
    log.warning("connection lost", extra={"LIVE_ERROR": f"headers: {later!r}"})
    err = capsys.readouterr().err
    assert "refused" in err and "the session failed" in err
    assert later not in err, err


def test_a_urls_port_stays_in_the_journal_when_its_query_holds_an_at(
    daemon_log: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mask of a URL's password ran from the port to an '@' in the query: a line
    quoting https://example.com:8080?to=a@b.c said ":***@b.c", its port hidden as if it
    were a secret. A password is the userinfo's, before the host's first '/', '?' or '#'."""
    logs.setup()
    log = logging.getLogger("device.tools")
    log.warning("cannot reach %s", "https://example.com:8080?to=a@b.c")
    log.warning("cannot reach %s", "https://example.com:8443#to=a@b.c")  # a fragment's
    log.warning("cannot reach %s", "https://alice:pa55word@example.com:8080#to=a@b.c")
    err = capsys.readouterr().err
    assert "cannot reach https://example.com:8080?to=a@b.c" in err, err
    assert "cannot reach https://example.com:8443#to=a@b.c" in err, err
    assert "cannot reach https://alice:***@example.com:8080#to=a@b.c" in err, err


def test_the_keys_remembered_for_masking_stay_bounded_over_rotations() -> None:
    """A token rotated every minute for months: the newest few are masked, no more held."""
    from device import errors

    rotated = [f"rotated-token-{n:06d}-of-a-job" for n in range(5000)]
    for token in rotated:
        errors.remember_secret(token)
    assert len(errors._remembered) == errors.REMEMBERED
    assert errors.without_credentials(rotated[-1]) == "***"
    errors.remember_secret("short")  # no key: masking it would garble other lines
    assert errors.without_credentials("a short line") == "a short line"


def test_what_nothing_caught_is_an_error_line_without_the_key(tmp_path: Any) -> None:
    """An exception no code caught, on the main thread or another, went raw to stderr:
    unmasked, unbounded, and at the journal's info priority (`journalctl -p err` missed
    it). It goes through the log, an error line with the key masked."""
    key = "AIzaSyThisIsNotARealKeyButShapedLikeOne12"
    script = tmp_path / "uncaught.py"
    script.write_text(
        "import threading\n"
        "from device import logs\n"
        "logs.setup()\n"
        "def fail():\n"
        f"    raise OSError('device said {key}')\n"
        "thread = threading.Thread(target=fail, name='camera')\n"
        "thread.start()\n"
        "thread.join()\n"
        f"raise RuntimeError('handshake with {key}')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, "LIVE_APPLIANCE_LOG_FORMAT": "json"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=env, timeout=30)  # fmt: skip
    assert result.returncode == 1
    assert key not in result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [(line["PRIORITY"], line["MESSAGE"].splitlines()[0]) for line in lines] == [
        (3, "camera failed: uncaught OSError"),
        (2, "uncaught RuntimeError"),
    ]


def test_lines_left_out_are_counted_safely_from_threads_logging_at_once() -> None:
    """logging runs a handler's filters outside its lock: two threads whose lines pass
    just as a flood has ebbed both took its count, and the second's `pop` raised
    KeyError out of its `log.info()` (the microphone's reader, a task: dead)."""
    import threading

    clock = [0.0]
    budget = logs.LineBudget(clock=lambda: clock[0])
    flood = logging.LogRecord("flood", logging.INFO, __file__, 1, "x", None, None)
    for _ in range(logs.LineBudget.BURST + 3):
        budget.filter(flood)
    clock[0] = 10.0  # the flood is over: its count goes with the next line of anyone's
    raised: list[BaseException] = []

    def other_thread() -> None:
        record = logging.LogRecord("other", logging.INFO, __file__, 1, "y", None, None)
        try:
            budget.filter(record)
        except BaseException as exc:
            raised.append(exc)

    class SwitchesThreads(dict):  # type: ignore[type-arg]
        """The GIL handed to another thread in the middle of `_ebbed`."""

        switched = False

        def __getitem__(self, key: Any) -> Any:
            if not SwitchesThreads.switched:
                SwitchesThreads.switched = True
                other = threading.Thread(target=other_thread)
                other.start()
                other.join(0.2)  # with a lock it waits for this thread's filter to end
                self.other = other
            return super().__getitem__(key)

    tokens = SwitchesThreads(budget._tokens)
    budget._tokens = tokens
    record = logging.LogRecord("mine", logging.INFO, __file__, 1, "z", None, None)
    try:
        budget.filter(record)
    except KeyError as exc:
        raised.append(exc)
    tokens.other.join()
    assert not raised, raised
    said = [getattr(record, "LIVE_LINES_LEFT_OUT", 0)]
    assert sum(said) <= 3


def test_a_full_journal_is_waited_for_asleep_not_spinning(tmp_path: Path) -> None:
    """The socket was not connected: it always polled writable, and the 50 ms wait for a
    journal that does not read was sendto() after failing sendto(), a core busy the
    whole time (on a single-core Pi: the audio threads starved for it)."""
    import time

    path = str(tmp_path / "journal.socket")
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind(path)  # never reads
    sender = logs.JournalSender(path)
    while not sender.lost:
        sender("filling the queue")
    sender.lost = 0  # as after a line that got through
    started, cpu = time.monotonic(), time.thread_time()
    sender("one more")
    waited, spent = time.monotonic() - started, time.thread_time() - cpu
    assert sender.lost == 1 and waited >= logs.JournalSender.WAIT_S * 0.9
    assert spent < waited / 4, f"{spent * 1000:.0f} ms of CPU in a {waited * 1000:.0f} ms wait"
    journald.close()


def test_an_hour_of_a_chattering_button_writes_a_bounded_number_of_journal_lines() -> None:
    """A button that chatters (or a network that flaps) for months: at 50 lines a second
    from one part, the journal gets the burst and then PER_S, not all of them."""
    clock = [0.0]
    budget = logs.LineBudget(clock=lambda: clock[0])
    passed = 0
    for tick in range(3600 * 50):
        clock[0] = tick / 50
        record = logging.LogRecord("device.appliance", logging.INFO, "", 0, "x", None, None)
        passed += budget.filter(record)
    assert passed <= logs.LineBudget.BURST + 3600 * logs.LineBudget.PER_S + 1


@dataclasses.dataclass
class RealCameraParts(FakeParts):
    """Fake parts but the camera: the real CameraFeed on the synthetic source."""

    def camera(self, on_frame):  # type: ignore[no-untyped-def]
        cfg = CameraConfig(source="synthetic", size=64, linger_s=0)
        return self._keep("camera", CameraFeed(cfg, on_frame))


async def lines_of_a_press(
    tmp_path: Path, logger: str, parts_class: type[FakeParts], said: str, then: str = ""
) -> tuple[str | None, list[dict[str, Any]]]:
    """The journal's lines of `logger` (with their session) and the session of a press
    held until a line says `said`, then released (and, given `then`, until one says it)."""
    with journal_lines(logger, filters=[logs.SessionField()]) as journal:
        async with running(tmp_path, parts_class=parts_class) as box:
            await box.ctl("press")
            box.link.deliver(SetupComplete)
            session = box.link.session_id
            await until(lambda: any(said in r["MESSAGE"] for r in journal.records))
            await box.ctl("release")
            if then:
                await until(lambda: any(then in r["MESSAGE"] for r in journal.records))
    return session, journal.records


async def test_the_camera_on_and_off_lines_are_found_under_their_session(tmp_path: Path) -> None:
    """README: "Every line logged during a session carries its LIVE_SESSION", and
    `journalctl -u live-appliance LIVE_SESSION=<id>` shows one session: the camera's
    lines (on, off: what the model saw, and when) come from the appliance's tasks, not
    the link's, and carry it too."""
    session, records = await lines_of_a_press(
        tmp_path, "device.hw.camera", RealCameraParts, "camera on", "camera off"
    )
    camera = [r for r in records if r.get("LIVE_CAMERA")]
    assert camera and all(r.get("LIVE_SESSION") == session for r in camera), camera


class RealSpeakerParts(FakeParts):
    """Fake parts, but the speaker the daemon makes (never opened here)."""

    speaker = Parts.speaker


async def test_a_speaker_running_out_mid_reply_is_said_in_the_journal_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A throttled Pi, or apt beside the box, makes the speaker's writer late: the reply
    clicks or breaks up. The owner reading the journal must find that, as they find the
    microphone's overflows, not only a count in `ctl status`."""
    appliance = Appliance(config(), RealSpeakerParts(config(), tmp_path))
    speaker = appliance.speaker
    assert isinstance(speaker, Playback)
    speaker._loop = asyncio.get_running_loop()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # three clicks in one reply: one line
            speaker._ran_out(waited=True)
        await asyncio.sleep(0.01)
    said = [r for r in caplog.records if "speaker" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert said[0].__dict__["LIVE_SPEAKER_UNDERFLOWS"] == 1
    assert appliance.status()["speaker_underflows"] == 3


def _journald(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(5)
    return listener


def test_lines_reach_the_journal_again_after_journald_restarts(tmp_path: Path) -> None:
    """systemd-journald restarted (an upgrade, a crash): its socket is a new one. The
    daemon's lines must reach the new journal, the first saying how many were lost."""
    path = tmp_path / "journal.socket"
    journald = _journald(path)
    send = JournalSender(str(path))
    send("before", LIVE_STATE="idle")
    assert b"MESSAGE=before\n" in journald.recv(65536)
    journald.close()
    path.unlink()
    send("while it restarts")
    journald = _journald(path)
    send("after")
    with journald:
        datagram = journald.recv(65536)
    assert b"MESSAGE=after (1 lines before it lost" in datagram, datagram
    assert b"LIVE_LINES_LOST=1\n" in datagram, datagram


async def test_a_key_corrected_after_a_cut_short_paste_is_masked_whole(
    daemon_log: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The owner pasted the key cut short, then wrote it whole into the file the box reads
    at every session: both are masked, the one cut short first, so a line quoting the whole
    key showed "***" and the rest of it (the characters the first paste had missed)."""
    for name in ("CREDENTIALS_DIRECTORY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    cut_short, whole = "k3y-of-another-form-0123", "k3y-of-another-form-0123456789abcdef"
    key_file = tmp_path / "key"
    key_file.write_text(cut_short + "\n")
    cfg = Config(live=LiveConfig(api_key_file=str(key_file)), api_key=Secret(cut_short))
    logs.setup(secrets=[cut_short])
    link = LiveLink(cfg, Outbox(5), on_event=lambda e: None, on_sent=lambda i, t: None)
    key_file.write_text(whole + "\n")  # corrected
    assert await link._renew_key()
    logging.getLogger("device.live").error("handshake failed; sent Token %s", whole)
    err = capsys.readouterr().err
    assert "handshake failed" in err
    assert "456789abcdef" not in err, err


def test_a_url_in_a_traceback_keeps_its_port_and_loses_its_password() -> None:
    """What nothing caught reaches the journal as a traceback: a proxy's password in a URL
    it quotes is masked there, and a port, which no line needs hidden, is not."""
    try:
        raise InvalidProxy("http://alice:pr0xy-pa55word@proxy.lan:3128/login",
                           "not http://proxy.lan:3128/path")
    except InvalidProxy:
        record = logging.LogRecord("device", logging.ERROR, __file__, 1, "uncaught", None,
                                   sys.exc_info())
    Redactor().filter(record)
    traceback = record.exc_text or ""
    assert "http://alice:***@proxy.lan:3128/login" in traceback, traceback
    assert "not http://proxy.lan:3128/path" in traceback, traceback


@pytest.mark.parametrize(
    "setting",
    [
        "http://alice:2024#pa55word@proxy.lan:3128",  # a year, a sign, a word: a password
        "http://alice:1234?pa55word@proxy.lan:3128",
        # an '@' unencoded (the README asks only '/', '?' and '#' to be): websockets and
        # urllib take the login to the last '@', and the mask left "@t-pa55word" in clear
        "http://alice:s3cr@t-pa55word@proxy.lan:3128",
    ],
)
def test_a_proxy_password_of_digits_then_a_sign_is_masked_in_a_traceback(setting: str) -> None:
    """A password pasted unencoded that starts with digits and a '#' or '?' ("2024#...")
    was taken for a port and its query, and reached the journal whole in the traceback of
    what nothing caught (before the port's exception it was masked)."""
    try:
        raise InvalidProxy(setting, "fragment is meaningless")
    except InvalidProxy:
        record = logging.LogRecord("device", logging.ERROR, __file__, 1, "uncaught", None,
                                   sys.exc_info())
    Redactor().filter(record)
    traceback = record.exc_text or ""
    assert "pa55word" not in traceback, traceback
    assert "http://alice:***@proxy.lan:3128" in traceback, traceback


@pytest.mark.parametrize(
    "said",
    [
        "http://user:s3cr3t-word@ isn't a valid proxy: hostname isn't provided",  # websockets
        "HTTPS_PROXY=\"http://user:s3cr3t-word@\"",
        "http://user:s3cr3t-word@/x",
        "http://alice:s3cr@t-word@proxy.lan:3128/login",
    ],
)
def test_a_proxy_login_is_masked_with_its_host_forgotten_or_an_at_in_it(said: str) -> None:
    """HTTPS_PROXY with its host left out is what websockets quotes as not valid: the
    mask must not need a host after the '@' to hide the password before it."""
    from device.errors import without_credentials

    masked = without_credentials(said)
    assert "s3cr" not in masked and "word" not in masked, masked
    assert "user:***@" in masked or "alice:***@proxy.lan:3128/login" in masked, masked


class RealMicParts(FakeParts):
    """Fake parts, but the microphone the daemon makes, its reader a thread of its own."""

    microphone = Parts.microphone


async def test_the_microphones_silence_in_a_session_is_found_under_that_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: "Every line logged during a session carries its LIVE_SESSION". A box that
    answered a press with nothing because its microphone gave only zeros (muted) says so
    from the microphone's reader thread, outside the appliance's tasks: the owner looking
    at that session (`journalctl LIVE_SESSION=<id>`) must find the line that says why."""
    listing = ListedPortAudio(card(SPEAKERPHONE, 2))
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(capture_module, "CapturePcm", _LevelPcm)
    monkeypatch.setattr(_LevelPcm, "levels", (0,))
    monkeypatch.setattr(capture_module, "DIGITAL_SILENCE_S", 0.3)
    session, records = await lines_of_a_press(
        tmp_path, "device.audio.capture", RealMicParts, "digital silence"
    )
    said = [r for r in records if "digital silence" in r["MESSAGE"]]
    assert session and said[0].get("LIVE_SESSION") == session, said


@pytest.mark.parametrize(
    "setting",
    [
        "http://alice:#pa55=word@proxy.lan:3128",  # a sign first, then name=value
        "http://alice:?pa55=word@proxy.lan:3128",
    ],
)
def test_a_proxy_password_of_a_sign_then_a_pair_is_masked(setting: str) -> None:
    """Only a port (digits) before '?' or '#' and a `name=value` is taken for a URL's
    port and query: a password pasted unencoded that starts with the sign and holds an
    '=' is a password, and masked wherever a line quotes it."""
    said = errors.without_credentials(f"cannot use {setting}")
    assert "pa55" not in said, said
    assert "http://alice:***@proxy.lan:3128" in said, said
