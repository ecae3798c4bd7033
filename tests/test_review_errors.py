"""A failure's line, as the journal and `ctl status` say it."""

from __future__ import annotations

from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

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
