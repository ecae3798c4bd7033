"""A review of the day's diff: what it broke for a case it did not think of."""

from __future__ import annotations

import logging
import sys

import pytest
from websockets.exceptions import InvalidProxy

from device.logs import Redactor


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
