"""The loop the daemon, `ask` and the doctor run on (`device.tasks.run`), at their end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import pytest

from device import tasks
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
