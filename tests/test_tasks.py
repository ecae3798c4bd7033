"""The loop the daemon, `ask` and the doctor run on (`device.tasks.run`), at their end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import proxy
from websockets.frames import Close

from device import tasks
from device.config import Config
from device.live.credentials import Token
from rig.daemon import rig_settings, to_toml
from rig.server.server import ServerThread


def test_a_stop_while_the_token_server_is_slow_puts_no_bug_in_the_journal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`systemctl stop` (or `ask`'s end) while a Vertex AI token refresh still waits for
    the token server: the loop's end cancels the refresh, and its watcher, asking a
    cancelled call for its failure, put "Exception in callback" and a traceback in the
    journal at ERROR, a bug's words for an ordinary stop."""
    answer = threading.Event()

    class SlowTokenServer:  # the credentials, whose refresh waits for the token server
        valid = False

        def refresh(self, request: object) -> None:
            answer.wait(5)

    async def connect_that_gives_up() -> None:
        token = Token(SlowTokenServer(), timeout_s=5)  # type: ignore[arg-type]
        with contextlib.suppress(TimeoutError):  # said as the token server's silence
            async with asyncio.timeout(0.1):
                await token.fresh()

    caplog.set_level(logging.INFO)
    try:
        tasks.run(connect_that_gives_up())
    finally:
        answer.set()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors


@pytest.mark.parametrize(
    "fault",
    [
        lambda: Close(1000, "bye").transport,  # type: ignore[attr-defined]  # websockets' other
        lambda: Config().recv_messages,  # type: ignore[attr-defined]  # the box's, same name
    ],
)
def test_an_unowned_error_other_than_websockets_known_fault_is_still_an_error(
    caplog: pytest.LogCaptureFixture, fault: Callable[[], object]
) -> None:
    """Only websockets' fault of a connect through the proxy (#1629) is quieted: another
    error no task owns, a bug of the box's or of a library's, keeps its traceback at ERROR
    (`journalctl -p err`), where the owner and a bug report find it."""

    async def fault_in_a_callback() -> None:
        asyncio.get_running_loop().call_soon(fault)
        await asyncio.sleep(0)

    tasks.run(fault_in_a_callback())
    said = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert said, caplog.records


async def test_the_doctor_through_a_proxy_whose_certificate_is_not_trusted_shows_no_traceback(
    tmp_path: Path,
) -> None:
    """A school's proxy that shows its own certificate: `doctor network` names the TLS
    failure, as `ask` does, and not beside it websockets' own traceback (#1629, "no
    attribute 'recv_messages'") on the owner's terminal, which reads as the doctor's bug."""
    with ServerThread(pace=0, reply_seconds=0.2) as server:
        port = urlsplit(server.base_url).port
        async with proxy(to_port=port) as (proxy_port, asked):
            cfg = tmp_path / "config.toml"
            cfg.write_text(to_toml(rig_settings(server.base_url, tmp_path)))
            env = {**os.environ, "GEMINI_API_KEY": server.api_key,
                   "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}"}  # fmt: skip
            for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "https_proxy", "ALL_PROXY",
                         "all_proxy", "NO_PROXY", "no_proxy"):  # fmt: skip
                env.pop(name, None)  # the proxy's certificate is not trusted
            command = [sys.executable, "-m", "device", "doctor", "network", "--config", str(cfg)]
            result = await asyncio.to_thread(
                subprocess.run, command, env=env, capture_output=True, text=True, timeout=90
            )
    assert asked, "went through the proxy"
    assert "CERTIFICATE_VERIFY_FAILED" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
