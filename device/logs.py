"""Logging: structured fields to the journal under systemd, readable lines on a terminal.

Code logs with `extra={"LIVE_STATE": ..., "LIVE_SESSION": ...}`. Under systemd
(JOURNAL_STREAM set) those become journal fields an owner can filter on
(`journalctl -u live-appliance LIVE_STATE=error`), with the journal priority of
the record's level; on a terminal they are appended to the line as key=value.
Whatever the destination, the API key is masked should any message or
traceback ever carry it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import os
import re
import socket
import struct
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from device.errors import TEXT_LIMIT, cut, without_credentials
from device.service import connected_datagram

FIELD_PREFIX = "LIVE_"
FORMAT_ENV = "LIVE_APPLIANCE_LOG_FORMAT"
SYSLOG_IDENTIFIER = "live-appliance"
TRACEBACK_LIMIT = 16384


class Redactor(logging.Filter):
    """Masks secrets in a record's message and arguments before any handler sees it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        """The secrets given, every key read since (`Secret` remembers it, whatever its
        shape), and whatever looks like a key or a token."""
        return without_credentials(text, self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in list(record.__dict__.items()):  # the journal's LIVE_* fields
            if name.startswith(FIELD_PREFIX):
                setattr(record, name, _each_text(value, self.redact))
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info:
            # The traceback as masked text; the exception object itself could leak.
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = self.redact(text), None
        return True


class Bounded(logging.Filter):
    """Cuts a record's message, its LIVE_* fields and its traceback to their limits.
    Added after the Redactor: a secret cut in two would no longer be recognised (and the
    traceback is the Redactor's text by then)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if len(message) > TEXT_LIMIT:
            record.msg, record.args = cut(message), None
        for name, value in list(record.__dict__.items()):
            if name.startswith(FIELD_PREFIX):
                setattr(record, name, _each_text(value, cut))
        if record.exc_text and len(record.exc_text) > TRACEBACK_LIMIT:
            record.exc_text = cut_in_the_middle(record.exc_text, TRACEBACK_LIMIT)
        return True


def cut_in_the_middle(traceback: str, limit: int) -> str:
    """A traceback's first quarter and its end, `limit` characters in all: its end is the
    exception raised last and where (cut from the end, a chain begun by the service's
    long words, an SDK's "Failed to parse response: ...", kept only those words)."""
    head, tail = traceback[: limit // 4], traceback[len(traceback) - (limit - limit // 4) :]
    return f"{head}\n... ({len(traceback) - limit} characters left out) ...\n{tail}"


def _each_text(value: object, change: Callable[[str], str]) -> object:
    """A field's text changed, or each text of a field given several values (a tuple)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, tuple):
        return tuple(change(v) if isinstance(v, str) else v for v in value)
    return value


class LineBudget(logging.Filter):
    """At most BURST lines at once from one logger, then PER_S a second: a flood (a
    service calling tools every 5 ms, a client hammering the control socket, a button
    that chatters) cannot bury what matters, nor run into journald's own rate limit,
    which drops lines blindly. Errors have a budget of their own, which a flood of
    warnings cannot spend. The next line that passes says how many were left out
    (LIVE_LINES_LEFT_OUT)."""

    BURST = 200
    PER_S = 5.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._tokens: dict[tuple[str, bool], tuple[float, float]] = {}  # (tokens, when)
        self._left_out: dict[tuple[str, bool], int] = {}
        #: logging runs a handler's filters outside its lock, on whichever thread logs
        #: (the loop, the microphone's, gpiozero's, the workers'): the counts are shared.
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            return self._filter(record)

    def _filter(self, record: logging.LogRecord) -> bool:
        now, name = self._clock(), (record.name, record.levelno >= logging.ERROR)
        tokens, then = self._tokens.get(name, (self.BURST, now))
        tokens = min(self.BURST, tokens + (now - then) * self.PER_S)
        if tokens < 1:
            self._tokens[name] = (tokens, now)
            self._left_out[name] = self._left_out.get(name, 0) + 1
            return False
        self._tokens[name] = (tokens - 1, now)
        if left := self._left_out.pop(name, 0):
            said = record.getMessage()
            record.msg, record.args = f"{said} ({left} lines before it left out: too many)", None
            setattr(record, f"{FIELD_PREFIX}LINES_LEFT_OUT", left)
        elif ebbed := self._ebbed(now):
            # A part that flooded, then fell silent, would otherwise never say so.
            said = record.getMessage()
            lost = ", ".join(f"{count} of {logger}" for logger, count in ebbed.items())
            record.msg, record.args = f"{said} (lines left out earlier: too many: {lost})", None
            setattr(record, f"{FIELD_PREFIX}LINES_LEFT_OUT", sum(ebbed.values()))
        return True

    def _ebbed(self, now: float) -> dict[str, int]:
        """The counts left out by loggers whose flood is over (a line of theirs would pass
        now), taken: each is said once, by whichever line passes first."""
        ebbed: dict[str, int] = {}
        for name in list(self._left_out):
            tokens, then = self._tokens[name]
            if tokens + (now - then) * self.PER_S >= 1:
                ebbed[name[0]] = ebbed.get(name[0], 0) + self._left_out.pop(name)
        return ebbed


#: What the session a line is logged in calls itself (LiveLink sets it in its task; the
#: tasks and lines it starts inherit it), for the lines that do not name it themselves.
SESSION: contextvars.ContextVar[Callable[[], str | None] | None] = contextvars.ContextVar(
    "session"
)
#: The same for the lines of threads no task runs in (`name_sessions`).
_sessions_on_threads: Callable[[], str | None] | None = None


def name_sessions(current: Callable[[], str | None] | None) -> None:
    """`current()` names the session of the lines logged from now on in this task and
    those it starts, and on the threads that run outside every task: the microphone's
    reader, the speaker's writer, the workers, a tool's (a thread starts without the
    loop's context, and the microphone's "only digital silence", the one line that says
    why a press got no answer, was missing under its session). None: no longer."""
    global _sessions_on_threads
    SESSION.set(current)
    _sessions_on_threads = current


class SessionField(logging.Filter):
    """LIVE_SESSION on every line logged inside a session (a drop, a reconnect, a tool
    call, the words): `journalctl -u live-appliance LIVE_SESSION=<id>` shows all of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = f"{FIELD_PREFIX}SESSION"
        session = SESSION.get(_sessions_on_threads)
        if not getattr(record, name, None) and session is not None and (current := session()):
            setattr(record, name, current)
        return True


class PowerNote(logging.Filter):
    """LIVE_POWER=under-voltage on a line of a lost sound card or camera, or of an overrun
    or underrun, when the firmware's flags say the supply sagged: the commonest cause of
    those on a Pi, and one the owner is otherwise never told of. The first such line of
    the boot also says it in words, with the fix: a mark in the service's
    $RUNTIME_DIRECTORY (emptied at boot, kept across restarts) remembers it was said;
    run by hand, once a process. Only those lines read the flags (a few small sysfs files);
    `sys_root` stands in for /sys in tests."""

    def __init__(self, sys_root: Path = Path("/sys")) -> None:
        super().__init__()
        self._sys_root = sys_root
        self._said = threading.Event()
        runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        self._mark = Path(runtime, "power-said") if runtime else None

    def _first_this_boot(self) -> bool:
        if self._said.is_set() or (self._mark is not None and self._mark.exists()):
            return False
        self._said.set()
        if self._mark is not None:
            with contextlib.suppress(OSError):
                self._mark.touch()
        return True

    def filter(self, record: logging.LogRecord) -> bool:
        if not _a_part_in_trouble(record):
            return True
        from device.hw import power  # here: importing the logs opens and reads nothing

        read = power.read(self._sys_root, heat=False)  # under-voltage alone
        if read is None or not read.under_voltage:
            return True
        setattr(record, f"{FIELD_PREFIX}POWER", "under-voltage")
        if self._first_this_boot():
            when = "now" if read.under_voltage_now else "since boot"
            record.msg = (
                f"{record.msg} (the Pi's supply sagged: under-voltage {when}. "
                f"{power.FIX_POWER})"
            )
        return True


#: Fields whose lines say a part of the box dropped out or fell behind.
_TROUBLE_FIELDS = ("LIVE_MIC_OVERFLOWS", "LIVE_SPEAKER_UNDERFLOWS")


def _a_part_in_trouble(record: logging.LogRecord) -> bool:
    """A warning or worse of the sound card or the camera going, or an overrun/underrun."""
    if record.levelno < logging.WARNING:
        return False
    fields = record.__dict__
    device = fields.get(f"{FIELD_PREFIX}DEVICE")
    names = (device,) if isinstance(device, str) else tuple(device or ())
    return (
        any(name in ("microphone", "speaker") for name in names)
        or fields.get(f"{FIELD_PREFIX}CAMERA") in ("failed", "stuck")
        or any(name in fields for name in _TROUBLE_FIELDS)
    )


class FieldsFormatter(logging.Formatter):
    """`time level logger: message [key=value ...]` with the LIVE_* fields of the record."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{name[len(FIELD_PREFIX) :].lower()}="
            f"{','.join(map(str, value)) if isinstance(value, tuple) else value}"
            for name, value in record.__dict__.items()
            if name.startswith(FIELD_PREFIX) and not name.startswith("LIVE_TRANSCRIPT")
        ]
        return f"{line}  [{' '.join(fields)}]" if fields else line


class SaidOnce:
    """A trouble that repeats, in the journal: one line when it starts, none while it
    lasts, and a new run of it said at most every EVERY_S, with how many times it
    happened so far. A part that fails for good is one line; one at the edge (a loose
    HAT, PID 1 too busy at one heartbeat in two, a bound passed every other chunk) is a
    line a minute, not one each time it comes and goes."""

    EVERY_S = 60.0

    def __init__(
        self,
        logger: logging.Logger,
        *,
        level: int = logging.WARNING,
        counted: str = "times",
        fields: dict[str, str] | None = None,
    ) -> None:
        self._log = logger
        self._level = level
        self._counted = counted  # what the count counts: "(5 times so far)"
        self._fields = fields or {}
        self.told = False  # said since it last ended
        self.count = 0  # times it happened, ever
        self._due = AtMostEvery(self.EVERY_S)

    def hit(
        self,
        message: str,
        *args: object,
        exc_info: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        """It happened: say so with the count, unless it has been said since it last
        ended, or less than EVERY_S ago."""
        self.count += 1
        if not self.told and self._due.due():
            self.told = True
            self._log.log(
                self._level,
                f"{message} (%d {self._counted} so far)",
                *args,
                self.count,
                exc_info=exc_info,
                extra={**self._fields, **(extra or {})},
            )

    def ended(self) -> bool:
        """It stopped happening: the next hit is news again (once EVERY_S has passed).
        True if it had been said, so that its end is news too."""
        told, self.told = self.told, False
        return told


class Overflow(SaidOnce):
    """A bound's journal line, said as `SaidOnce` says: a loop against it is one line,
    and so is a bound at the edge of its limit (a link that sends every other chunk of
    held speech, a button that chatters faster than the machine takes its presses).

    The warning carries LIVE_BOUND=`name`: `journalctl -u live-appliance LIVE_BOUND=...`.
    """

    def __init__(self, logger: logging.Logger, name: str) -> None:
        super().__init__(logger, fields={f"{FIELD_PREFIX}BOUND": name})
        self.name = name


class AtMostEvery:
    """Whether a line about a count that keeps growing (a card's overflows) is due: at
    once the first time, then at most every `seconds`, so a struggling box is one line a
    minute in the journal, not one a click."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._last = -math.inf

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self._seconds:
            return False
        self._last = now
        return True


JOURNAL_SOCKET = "/run/systemd/journal/socket"
#: A name journald keeps (it drops the others: the record's own lowercase attributes).
_JOURNAL_FIELD = re.compile(r"[A-Z0-9][A-Z0-9_]{0,63}")


class JournalSender:
    """What `systemd.journal.send` does, without ever blocking the process.

    systemd-python's sendv blocks in sendmsg() while journald's queue is full (journald
    hung, slow on an SD card, restarting under load) and holds the GIL meanwhile: every
    thread of the daemon stops with it, the speaker's and the microphone's too. Here the
    datagram goes out in journald's native protocol through Python's socket, which lets
    the other threads run while it waits, and waits at most WAIT_S (none while lines
    are being lost): a line the journal cannot take is left out, and the next line
    that gets through says how many were (LIVE_LINES_LOST). No journal: nothing is sent.
    """

    WAIT_S = 0.05

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self._path = path
        self._sock: socket.socket | None = None
        self.lost = 0

    def __call__(self, message: str, /, **fields: Any) -> None:
        if self.lost:
            message = f"{message} ({self.lost} lines before it lost: the journal was busy)"
            fields[f"{FIELD_PREFIX}LINES_LOST"] = self.lost
        data = journal_datagram({"MESSAGE": message, **fields})
        try:
            if self._sock is None:
                self._sock = connected_datagram(self._path)
            self._sock.settimeout(0.0 if self.lost else self.WAIT_S)
            self._sock.send(data)
        except (TimeoutError, BlockingIOError):  # journald is behind
            self.lost += 1
            return
        except OSError:  # ENOENT, ECONNREFUSED: not there (a restart): connect again next
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            self.lost += 1
            return
        self.lost = 0


def journal_datagram(fields: dict[str, Any]) -> bytes:
    """journald's native protocol: KEY=value lines, a value with a line break as KEY, its
    length (64-bit little-endian) and the value. A tuple is the field once per value (a
    card that took the microphone and the speaker: `LIVE_DEVICE=speaker` finds it too).
    None and invalid names are left out."""
    out = bytearray()
    for key, given in fields.items():
        if not _JOURNAL_FIELD.fullmatch(key):
            continue
        name = key.encode()
        for value in given if isinstance(given, tuple) else (given,):
            if value is None:
                continue
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
            if b"\n" in raw:
                out += name + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
            else:
                out += name + b"=" + raw + b"\n"
    return bytes(out)


def journal_handler(sender: Callable[..., None] | None = None) -> logging.Handler:
    """systemd-python's handler: MESSAGE, PRIORITY from the level, and every LIVE_* field.

    `sender` replaces the JournalSender (tests capture what would be sent).
    """
    from systemd.journal import JournalHandler

    return JournalHandler(
        sender_function=sender or JournalSender(), SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER
    )


class JournalLinesFormatter(logging.Formatter):
    """One JSON object per record with what the journal would keep: MESSAGE (with the
    traceback), PRIORITY, the logger and every LIVE_* field. For the test rig, which
    reads the daemon's journal fields without a journal (LIVE_APPLIANCE_LOG_FORMAT=json)."""

    def format(self, record: logging.LogRecord) -> str:
        from systemd.journal import JournalHandler

        fields = record.__dict__.items()
        entry: dict[str, object] = {
            "MESSAGE": super().format(record),
            "PRIORITY": JournalHandler.map_priority(record.levelno),
            "LOGGER": record.name,
            **{name: value for name, value in fields if name.startswith(FIELD_PREFIX)},
        }
        return json.dumps(entry, default=str)


def terminal_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        FieldsFormatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%T")
    )
    return handler


def stderr_is_journal() -> bool:
    """Whether stderr is the journal's stream: JOURNAL_STREAM names it by device and
    inode. It is inherited by what a service starts (a terminal a user service runs, a
    test harness), where stderr is something else and the journal may not be there."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        stderr = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return bool(stream) and stream == f"{stderr.st_dev}:{stderr.st_ino}"


#: The SDK's warning for an enum value it does not know, quoting the value whole: the
#: service decides what and how much, and each new text would stay in the SDK's
#: __warningregistry__ for good. The value is kept in the message all the same.
_UNKNOWN_VALUE = r"(?s).* is not a valid "
#: The SDK's notice at each connection with an ephemeral token: the owner chose tokens
#: (README), and a warning in the journal at every start says nothing to act on.
_TOKENS_EXPERIMENTAL = r"The SDK's ephemeral token support is experimental"


def _log_uncaught(
    kind: type[BaseException], exc: BaseException, tb: types.TracebackType | None
) -> None:
    """What nothing caught goes to the log, within its bounds and masked, as an error
    (`journalctl -p err` shows it), not raw to stderr at the journal's info."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("device").critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger("device").error(
        "%s failed: uncaught %s",
        name,
        args.exc_type.__name__,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def setup(level: int = logging.INFO, secrets: Iterable[str] = ()) -> None:
    """Send the package's log to the journal when systemd runs us, else to stderr (as the
    journal's fields in JSON lines when LIVE_APPLIANCE_LOG_FORMAT=json). Python's
    warnings go the same way, within the same bounds."""
    if stderr_is_journal():
        handler = journal_handler()
    elif os.environ.get(FORMAT_ENV) == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalLinesFormatter())
    else:
        handler = terminal_handler()
    handler.addFilter(LineBudget())
    handler.addFilter(SessionField())  # before the bounds: the service chose the id
    handler.addFilter(PowerNote())  # before the bounds: it may add words
    handler.addFilter(Redactor(secrets))
    handler.addFilter(Bounded())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for sdk_noise in (_UNKNOWN_VALUE, _TOKENS_EXPERIMENTAL):
        warnings.filterwarnings("ignore", message=sdk_noise, module=r"google\.genai\.")
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    # The SDK and websockets are chatty at INFO and could echo request details. `google`
    # (google.genai, google.auth) set, google-auth leaves it joined to ours: a `google`
    # logger nobody set up is cut off at its first request, its warnings lost.
    for noisy in ("google_genai", "google", "websockets", "httpx", "picamera2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
