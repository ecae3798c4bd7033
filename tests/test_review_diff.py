"""A review of the day's diff: what it broke for a case it did not think of."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from test_live_session import first_outcome
from websockets.exceptions import InvalidProxy

from device.config import Config, LiveConfig
from device.logs import Redactor
from device.states import ConnectionLost


@pytest.mark.parametrize(
    "setting",
    [
        "http://alice:2024#pa55word@proxy.lan:3128",  # a year, a sign, a word: a password
        "http://alice:1234?pa55word@proxy.lan:3128",
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


async def test_a_client_that_cannot_be_built_is_said_whatever_the_base_urls_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Vertex AI's credentials missing, and GOOGLE_VERTEX_BASE_URL's port a typo: the look
    at HTTPS_PROXY after the failed build raised in turn, the build's thread died with a
    traceback, and its outcome never reached the loop: the press waited for a client for
    ever, and every press after it too, until the service restarted."""
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", "https://127.0.0.1:99999")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    live = LiveConfig(backend="vertex", project="p", location="l", connect_timeout_s=5)
    said = await first_outcome(Config(live=live))
    assert isinstance(said, ConnectionLost), said
    assert said.reason.startswith("Vertex AI credentials: "), said.reason
