"""Commands as an owner types them over SSH: piped into `head`, mistyped, against a daemon
that is gone or wedged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from device.control import ControlServer
from device.control_client import ControlError, request

#: What a shell reports for a command whose reader went away (128 + SIGPIPE), as `yes | head`.
EXIT_PIPE = 141


async def _with_reader_gone(*args: str) -> tuple[int, str]:
    """`python -m device ARGS | head -1` once head has exited: the reader of stdout is gone
    before the command writes. The exit code and stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "device", *args,
            stdout=write_end, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(write_end)
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_ctl_status_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`ctl status | head -1` printed a BrokenPipeError traceback under the line it showed."""
    sock = tmp_path / "control.sock"

    async def daemon(request: dict[str, Any]) -> dict[str, Any]:
        return {"state": "idle", "status": "idle", "turns": []}

    async with ControlServer(sock, daemon):
        code, err = await _with_reader_gone("ctl", "status", "--socket", str(sock))
        json_code, json_err = await _with_reader_gone(
            "ctl", "status", "--json", "--socket", str(sock)
        )
    assert (code, err) == (EXIT_PIPE, "")
    assert (json_code, json_err) == (EXIT_PIPE, "")


async def test_doctor_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`doctor | head -3` (the first lines of a long report): the next line it printed
    raised BrokenPipeError, a traceback in the middle of the owner's terminal."""
    settings = tmp_path / "config.toml"
    settings.write_text(f'[control]\nsocket = "{tmp_path / "control.sock"}"\n')
    code, err = await _with_reader_gone("doctor", "config", "--config", str(settings))
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == EXIT_PIPE


def test_ctl_on_a_wedged_daemon_whose_queue_is_full_says_it_does_not_answer(
    tmp_path: Path,
) -> None:
    """A daemon whose loop hangs still has its socket: each `ctl status` (a hook polling
    every minute) waits in its queue, unanswered. Once that queue is full the owner read
    "cannot reach the daemon: Resource temporarily unavailable", an errno, not a hang."""
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wedged:
        wedged.bind(str(path))
        wedged.listen(0)  # never accepts; the queue is full after a connection or two
        waiting = []
        for _ in range(4):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(str(path))
            waiting.append(client)
        try:
            with pytest.raises(ControlError) as refused:
                request(path, "status", timeout=0.5)
        finally:
            for client in waiting:
                client.close()
    message = str(refused.value)
    assert "not answering" in message and "temporarily unavailable" not in message
    assert "systemctl restart live-appliance" in message
