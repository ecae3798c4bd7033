"""A failure's line, as the journal and `ctl status` say it."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from device.errors import without_credentials
from device.live.errors import describe_failure, failure_fields
from device.live.wire import CLOSE_INTERNAL


def test_a_close_without_a_reason_is_said_without_a_dangling_colon() -> None:
    """The service closes with its code alone (no reason given): the line `ctl status`
    and LIVE_ERROR say ends at the code, not at "close code 1011: " as if a reason had
    been cut off."""
    closed = ConnectionClosedError(Close(CLOSE_INTERNAL, ""), None)
    line = describe_failure(closed)
    assert line.endswith(f"(close code {CLOSE_INTERNAL})"), line
    assert failure_fields(closed)["LIVE_ERROR"] == line


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
    said = without_credentials(f"cannot use {setting}")
    assert "pa55" not in said, said
    assert "http://alice:***@proxy.lan:3128" in said, said
