"""Small helpers the test files share: mock GPIO pins, waiting, the CLI, a journal stand-in,
the doctor's output by check, a daemon's control socket, the names of this process's
threads, its open descriptors and its loggers, the LED table sped up, words that are not
UTF-8."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

from device import logs
from device.control import ControlServer
from device.hw.led_patterns import PATTERNS, Pattern
from device.hw.leds import LedAnimator, LedDriver
from rig.daemon import scratch_dir
from rig.server.server import LiveServer

#: Animator tests play the LED table this many times faster, fades at as many times the
#: frame rate: the same frames in the same order, in a fraction of the time.
LED_SPEEDUP = 10
FAST_PATTERNS: dict[str, Pattern] = {
    state: replace(p, steps=tuple(replace(s, seconds=s.seconds / LED_SPEEDUP) for s in p.steps))
    for state, p in PATTERNS.items()
}


def fast_animator(driver: LedDriver) -> LedAnimator:
    """An animator playing FAST_PATTERNS at LED_SPEEDUP times the default frame rate."""
    return LedAnimator(driver, FAST_PATTERNS, frame_rate=25 * LED_SPEEDUP)


@contextmanager
def mock_pins(pin_class: Any = None) -> Iterator[Any]:
    """gpiozero on MockFactory pins for the duration; yields the factory (`.pin(n)`)."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    previous = Device.pin_factory
    factory = MockFactory(pin_class=pin_class) if pin_class else MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous


async def until(condition: Callable[[], object], within: float = 5.0) -> None:
    """Wait until `condition()` holds: a guard against hangs with a deadline, not a timing."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m device ARGS` as an owner would type it; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "device", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


async def with_reader_gone(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`python -m device ARGS | head -1` once head has exited: the reader of stdout is gone
    before the command writes. The exit code and stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "device", *args,
            stdout=write_end, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
    finally:
        os.close(write_end)
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


class Captured:
    """Stands in for systemd.journal.send: keeps MESSAGE and fields per record."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, message: str, /, **fields: Any) -> None:
        self.records.append({"MESSAGE": message, **fields})


@contextmanager
def journal_lines(
    *names: str, filters: Iterable[logging.Filter] = (), propagate: bool = True
) -> Iterator[Captured]:
    """What the loggers `names` would send to the journal at INFO, through the journal
    handler and `filters`; `propagate=False` keeps their lines from the root's handlers."""
    captured = Captured()
    handler = logs.journal_handler(sender=captured)
    for each in filters:
        handler.addFilter(each)
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = propagate
    try:
        yield captured
    finally:
        for logger, (level, propagated) in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagated


def all_loggers() -> dict[str, logging.Logger]:
    """Every logger made so far in this process, the root's among them, by name."""
    made = logging.Logger.manager.loggerDict.items()
    return {"root": logging.getLogger(), **{n: g for n, g in made if isinstance(g, logging.Logger)}}


def closed_port() -> int:
    """A local TCP port nothing listens on (bound once, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lines_of(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each check's line by its name, with its fix line (if any) joined on."""
    found: dict[str, str] = {}
    name = None
    for line in result.stdout.splitlines():
        status, _, rest = line.partition("  ")
        if status in ("PASS", "WARN", "FAIL", "SKIP"):
            name = rest.split()[0]
            found[name] = line
        elif line.startswith("      fix: ") and name:
            found[name] += "\n" + line
    assert found, f"no check lines in:\n{result.stdout}\n{result.stderr}"
    return found


@asynccontextmanager
async def trusted_server(monkeypatch: Any, **options: Any) -> AsyncIterator[LiveServer]:
    """The local Live server (`options` as LiveServer takes them), its test CA trusted as
    the box's own CA bundle would be: `SSL_CERT_FILE`, the SDK's production trust path,
    names it until the test ends."""
    async with LiveServer(**options) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


@asynccontextmanager
async def daemon_saying(
    status: dict[str, Any], asked: list[dict[str, Any]] | None = None
) -> AsyncIterator[Path]:
    """A control socket that answers `status` as a daemon in that state would; each
    request is noted in `asked`."""
    sock = scratch_dir("daemon-sock-") / "control.sock"  # short: a socket path's limit

    async def answer(request: dict[str, Any]) -> dict[str, Any]:
        if asked is not None:
            asked.append(request)
        return dict(status)

    try:
        async with ControlServer(sock, answer):
            yield sock
    finally:
        shutil.rmtree(sock.parent, ignore_errors=True)


def thread_names() -> set[str]:
    """The names the kernel shows (`top -H`) for this process's threads."""
    return {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}


def open_descriptors() -> int:
    """This process's descriptors, once earlier tests' garbage is gone: a socket left in a
    reference cycle closes whenever the collector next runs, mid-count otherwise."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def no_new_threads() -> Iterator[None]:
    """Thread.start() fails as it does out of threads (the unit's TasksMax)."""
    with mock.patch.object(
        threading.Thread, "start", side_effect=RuntimeError("can't start new thread")
    ):
        yield


def open_refused(monkeypatch: Any, refused: Callable[[Path], bool]) -> None:
    """`os.open` refuses (EACCES) the files `refused` picks: a file of root's, or of the
    service's, as another user finds it (the tests run as root, who may open any)."""
    opened = os.open

    def as_another_user(path: Any, *args: Any, **kwargs: Any) -> int:
        if refused(Path(path)):
            raise PermissionError(errno.EACCES, "Permission denied")
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", as_another_user)


#: "Grüße" as a Latin-1 file holds it (`ctl text "$(cat note.txt)"` on a UTF-8 system):
#: Python hands those bytes on as unpaired surrogates, which JSON carries as "\udcfc".
LATIN1_WORDS = "Gr\xfc\xdfe".encode("latin-1")


def unknown_name(
    monkeypatch: Any,
    host: str,
    error: int = socket.EAI_NONAME,
    words: str = "Name or service not known",
) -> None:
    """The resolver answers at once that it does not know `host` (other names resolve)."""
    resolve = socket.getaddrinfo

    def refusing(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name == host:
            raise socket.gaierror(error, words)
        return resolve(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", refusing)


def only_proxy(monkeypatch: Any, setting: str) -> None:
    """HTTPS_PROXY set to `setting` and no other proxy setting of this shell's."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                 "no_proxy", "ALL_PROXY", "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", setting)


@asynccontextmanager
async def proxy(
    answer: bytes | None = None, to_port: int | None = None
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP proxy on 127.0.0.1: its port and the CONNECT requests it took. It tunnels
    each to the host and port asked for (to 127.0.0.1:`to_port` when given: a proxy that
    resolves outside names itself), or answers `answer` (a status line) instead."""
    asked: list[bytes] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # connected and went (the doctor's TCP step)
            writer.close()
            return
        asked.append(request.split(b"\r\n", 1)[0])
        if answer is not None:
            writer.write(answer + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        host, _, port = request.split()[1].decode().rpartition(":")
        if to_port is not None:
            host, port = "127.0.0.1", str(to_port)
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1], asked
    finally:
        listening.close()
