"""Logging: structured fields to the journal under systemd, readable lines on a terminal.

Code logs with `extra={"LIVE_STATE": ..., "LIVE_SESSION": ...}`. Under systemd
(JOURNAL_STREAM set) those become journal fields an owner can filter on
(`journalctl -u live-appliance LIVE_STATE=error`); on a terminal they are
appended to the line as key=value.
"""

from __future__ import annotations

import logging
import os
import sys

FIELD_PREFIX = "LIVE_"


class FieldsFormatter(logging.Formatter):
    """`time level logger: message key=value ...` with the LIVE_* fields of the record."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{name[len(FIELD_PREFIX) :].lower()}={value}"
            for name, value in record.__dict__.items()
            if name.startswith(FIELD_PREFIX) and not name.startswith("LIVE_TRANSCRIPT")
        ]
        return f"{line}  [{' '.join(fields)}]" if fields else line


def setup(level: int = logging.INFO) -> None:
    """Send the package's log to the journal when systemd runs us, else to stderr."""
    handler: logging.Handler
    if os.environ.get("JOURNAL_STREAM"):
        from systemd.journal import JournalHandler

        handler = JournalHandler(SYSLOG_IDENTIFIER="live-appliance")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            FieldsFormatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%T")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDK and websockets are chatty at INFO and could echo request details.
    for noisy in ("google_genai", "google.genai", "websockets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
