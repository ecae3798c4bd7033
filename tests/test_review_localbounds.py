"""What a local user can send the daemon, each bounded: the control socket (the line, the
connections, the pace), `ctl`, the key file and the state file as read at start."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import CHUNK, running

from device import config
from device.appliance import PRESSES_WAITING, _saved_volume
from device.cli import main
from device.control import CLIENTS_LIMIT, LINE_LIMIT, ControlError, ControlServer, request
from device.persist import StateFile
from device.states import SetupComplete


async def status(req: dict[str, Any]) -> dict[str, Any]:
    return {"state": "idle", "seen": req["cmd"]}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ctl.sock"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def send_unframed(path: Path, size: int) -> bytes:
    """A client that writes `size` bytes with no newline (as fast as the daemon takes
    them), then reads what it was answered."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        chunk = b"x" * 65536
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused: the daemon stopped reading and let go
        answer = b""
        try:
            while data := sock.recv(4096):
                answer += data
        except ConnectionResetError:
            pass
        return answer


async def test_ten_megabytes_without_a_newline_are_refused_at_the_line_bound(
    path: Path,
) -> None:
    """The daemon stops at LINE_LIMIT, says why, and serves the next client; it neither
    buffers the 10 MB nor waits for a newline that never comes."""
    async with ControlServer(path, status):
        started = time.monotonic()
        answer = await asyncio.to_thread(send_unframed, path, 10 * 1024 * 1024)
        assert time.monotonic() - started < 3
        assert json.loads(answer) == {"ok": False, "error": "request line too long"}
        assert (await asyncio.to_thread(request, path, "status"))["state"] == "idle"


async def test_a_client_that_trickles_a_byte_at_a_time_is_let_go_within_the_idle_bound(
    path: Path,
) -> None:
    """Slowloris: each byte arrives before the idle time, but the line never completes."""
    async with ControlServer(path, status, idle_s=0.5):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"cmd": "status"}\n')
        assert json.loads(await reader.readline())["ok"] is True
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            for byte in b'{"cmd": "status", "pad": "' + b"x" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
                if reader.at_eof():
                    raise ConnectionResetError
        assert time.monotonic() - started < 2, "let go at idle_s, not at the line's end"
        writer.close()
        assert (await asyncio.to_thread(request, path, "status"))["ok"] is True


async def test_three_hundred_connections_held_at_once_leave_the_owners_ctl_served(
    path: Path,
) -> None:
    """Hundreds of clients that connect and hold on: the daemon keeps at most its bound of
    them (descriptors too: the unit allows 256), and `ctl status` still gets through."""
    async with ControlServer(path, status):
        before = open_fds()
        held: list[socket.socket] = []
        try:
            for _ in range(300):
                sock = socket.socket(socket.AF_UNIX)
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, str(path))
                held.append(sock)
            await asyncio.sleep(0.5)
            daemons_own = open_fds() - before - len(held)
            assert daemons_own <= CLIENTS_LIMIT + 1
            for _ in range(3):
                assert (await asyncio.to_thread(request, path, "status"))["state"] == "idle"
        finally:
            for sock in held:
                sock.close()


async def test_a_ctl_text_too_long_for_the_daemon_says_so_not_broken_pipe(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ctl text $(cat notes.txt)` with a long file: past the socket's buffer the daemon has
    refused the line and closed before the client finished writing, and the owner read
    "dropped the connection: [Errno 32] Broken pipe"."""
    async with ControlServer(path, status):
        words = ["word"] * 100_000  # 500 KB: argv takes it (2 MB), a line does not (64 KiB)
        code = await asyncio.to_thread(main, ["ctl", "text", *words, "--socket", str(path)])
        assert code == 1
        err = capsys.readouterr().err
        assert "Broken pipe" not in err
        assert f"over the {LINE_LIMIT // 1024} KiB" in err
        with pytest.raises(ControlError, match="request is 5120 KiB"):
            await asyncio.to_thread(request, path, "text", text="x" * (5 * 1024 * 1024))


def test_a_key_file_of_ten_megabytes_is_refused_without_reading_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    keyfile = tmp_path / "key.txt"
    keyfile.write_bytes(b"A" * (10 * 1024 * 1024))
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[live]\napi_key_file = '{keyfile}'\n")
    with pytest.raises(config.ConfigError, match="is over 16 KiB; write the key again"):
        config.load(cfg)


def test_a_binary_key_file_that_is_valid_utf8_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    keyfile = tmp_path / "key.bin"
    keyfile.write_bytes(b"AIza\x00\x01\x02secret")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[live]\napi_key_file = '{keyfile}'\n")
    with pytest.raises(config.ConfigError, match="control character at position 5") as caught:
        config.load(cfg)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "saved",
    ['NaN', 'Infinity', '-Infinity', '1e400', "1" + "0" * 100, "-0.5", "1.5", '"loud"',
     "true", "null", "[0.5]"],
)  # fmt: skip
def test_a_saved_volume_that_is_no_volume_falls_back_to_the_configured_one(
    tmp_path: Path, saved: str
) -> None:
    """The state file is edited by hand, or damaged: the box starts at its configured
    volume, not silent, not clipping, not crashing."""
    state = tmp_path / "state.json"
    state.write_text(f'{{"volume": {saved}}}')
    assert _saved_volume(StateFile(state), 0.7) == 0.7


HUGE_DECIMAL = "1" * 5000  # past Python's 4300 digits for an int read from text
HUGE_HEX = "0x" + "f" * 5000  # TOML's hex has no such limit, but writing it in decimal has


@pytest.mark.parametrize(
    ("content", "wanted"),
    [
        (f"[audio]\nchunk_ms = {HUGE_DECIMAL}\n", "not valid TOML: a number of over 4300 digits"),
        (f"[audio]\nchunk_ms = {HUGE_HEX}\n", "[audio] chunk_ms: must be between"),
        (f"[audio]\nvolume = {HUGE_HEX}\n", "[audio] volume: must be between 0 and 1"),
        (f"[control]\nmode = {HUGE_HEX}\n", "[control] mode: must be between 0o600 and 0o666"),
        (f"[audio]\nchunk_ms = '{'4' * 500_000}'\n", "[audio] chunk_ms: must be an integer"),
    ],
    ids=["decimal", "hex for an integer", "hex for a number", "hex for a mode", "long text"],
)
def test_an_outsized_value_in_the_configuration_is_a_one_line_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, wanted: str
) -> None:
    """A ValueError or OverflowError with a traceback: the daemon restarted in a loop, and
    `ctl` and the doctor, which explain a configuration that does not load, crashed too.
    A long text where a number goes was written out whole: a line of 500 KB."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test")
    path = tmp_path / "config.toml"
    path.write_text(content)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert wanted in str(caught.value)
    assert len(str(caught.value)) < 300, "the owner reads a line, not the number"


def test_a_variable_of_thousands_of_digits_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test")
    monkeypatch.setenv("LIVE_APPLIANCE_AUDIO_CHUNK_MS", HUGE_DECIMAL)
    path = tmp_path / "config.toml"
    path.write_text("")
    with pytest.raises(config.ConfigError, match="LIVE_APPLIANCE_AUDIO_CHUNK_MS"):
        config.load(path)


async def test_a_flood_of_ctl_presses_leaves_the_box_consistent_its_journal_and_memory_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of press/release requests as fast as a script sends them, twice: the
    journal gets a line per transition the box took (not per request), the LEDs show the
    state `ctl status` reports, and the second flood keeps no more objects than the first."""
    caplog.set_level(logging.INFO, logger="device.appliance")
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)  # a session open: each press and release counts

        async def flood() -> None:
            for i in range(1000):
                await box.control.ask("press")
                await box.control.ask("release")
                if i % 50 == 0:
                    box.mic.record(CHUNK)  # releases end as the microphone's chunks come
            for _ in range(PRESSES_WAITING + 2):  # each release's last chunk
                box.mic.record(CHUNK)
                await box.settle()

        await flood()
        gc.collect()
        before = len(gc.get_objects())
        await flood()
        gc.collect()
        kept = len(gc.get_objects()) - before
        assert kept < 1000, f"{kept} objects kept by a flood of 2000 requests"
        transitions = [r for r in caplog.records if " -> " in r.getMessage()]
        assert len(transitions) < 2 * 4 * (PRESSES_WAITING + 2), "a line per request"
        reply = await box.control.ask("status")
        assert box.appliance.leds is not None
        assert box.appliance.leds.state == reply["state"] == box.state
