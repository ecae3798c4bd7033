"""The loop the daemon, `ask` and the doctor run on (`device.tasks.run`), at their end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

import pytest
from websockets.frames import Close

from device import tasks
from device.config import Config
from device.live.credentials import Token


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
