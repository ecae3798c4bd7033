"""What may be a secret stays out of what the owner is shown: counterexamples a
property-based search found, pinned as examples."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers import until
from wire import config_for

from device import errors, logs
from device.config import Config, LiveConfig, Secret
from device.doctor.daemon import summary_lines
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.live.session import LiveLink
from device.live.wire import CLOSE_INTERNAL, CLOSE_POLICY
from device.outbox import Outbox
from device.states import Event
from rig.server.server import LiveServer

#: HTTPS_PROXY settings whose password holds a character a URL gives a meaning to, as an
#: owner pastes a generated password: neither websockets nor the SDK's HTTP client can
#: use them, and each quoted the setting (or the password up to that character).
UNENCODED_PASSWORDS = [
    "http://alice:pr0xy/pa55word@proxy.lan:3128",
    "http://alice:pr0xy?pa55word@proxy.lan:3128",
    "http://alice:pr0xy#pa55word@proxy.lan:3128",
]


def only_proxy(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    """HTTPS_PROXY set to `setting` and no other proxy setting of this shell's."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                 "no_proxy", "ALL_PROXY", "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", setting)


def shows_no_password(text: str) -> None:
    assert "pr0xy" not in text and "pa55word" not in text, text


@pytest.mark.parametrize("setting", UNENCODED_PASSWORDS)
async def test_the_doctor_names_an_unusable_proxy_without_its_password(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """`doctor network` printed "HTTPS_PROXY's http://alice:pr0xy/pa55word@proxy.lan:3128
    cannot be used": the password's mask stopped at a '/'."""
    only_proxy(monkeypatch, setting)
    cfg = Config(live=LiveConfig(), api_key=Secret("AIza-not-a-real-key-0123456789abcdefghij"))
    result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    shows_no_password(result.measured)
    assert "HTTPS_PROXY's http://alice:***@proxy.lan:3128" in result.measured, result.measured


async def _first_event(cfg: Config) -> Event:
    """What a press's session says first."""
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(5), events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: bool(events), within=15)
    finally:
        await link.close()
    return events[0]


@pytest.mark.parametrize("setting", UNENCODED_PASSWORDS)
async def test_a_press_names_an_unusable_proxy_without_its_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, setting: str
) -> None:
    """The SDK's HTTP client refuses such a setting as the client is built: the journal said
    "InvalidURL: Invalid port: 'pr0xy'" (the password up to its '/', '?' or '#'), and
    `ctl status` "Invalid port: 'pr0xy'", naming no proxy (LIVE_FAILURE=proxy found nothing)."""
    only_proxy(monkeypatch, setting)
    cfg = Config(live=LiveConfig(connect_timeout_s=5), api_key=Secret("AIza-test"))
    with caplog.at_level(logging.INFO, logger="device"):
        event = await asyncio.wait_for(_first_event(cfg), 30)
    reason = getattr(event, "reason", "")
    shows_no_password(reason)
    assert "HTTPS_PROXY's http://alice:***@proxy.lan:3128" in reason, reason
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    for record in errors:
        shows_no_password(record.getMessage())
    assert [getattr(r, "LIVE_FAILURE", None) for r in errors] == ["proxy"], errors


@pytest.fixture
def daemon_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The daemon's own handler chain (logs.setup), on stderr, put back afterwards."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    monkeypatch.setattr(errors, "_remembered", ())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)


async def test_a_key_corrected_after_a_cut_short_paste_is_masked_whole(
    daemon_log: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The owner pasted the key cut short, then wrote it whole into the file the box reads
    at every session: both are masked, the one cut short first, so a line quoting the whole
    key showed "***" and the rest of it (the characters the first paste had missed)."""
    for name in ("CREDENTIALS_DIRECTORY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    cut_short, whole = "k3y-of-another-form-0123", "k3y-of-another-form-0123456789abcdef"
    key_file = tmp_path / "key"
    key_file.write_text(cut_short + "\n")
    cfg = Config(live=LiveConfig(api_key_file=str(key_file)), api_key=Secret(cut_short))
    logs.setup(secrets=[cut_short])
    link = LiveLink(cfg, Outbox(5), on_event=lambda e: None, on_sent=lambda i, t: None)
    key_file.write_text(whole + "\n")  # corrected
    assert await link._renew_key()
    logging.getLogger("device.live").error("handshake failed; sent Token %s", whole)
    err = capsys.readouterr().err
    assert "handshake failed" in err
    assert "456789abcdef" not in err, err


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with LiveServer(pace=0, reply_seconds=0.2) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


#: Control characters no printable line holds: C0 (line breaks, ESC, BEL), C1, and the
#: bidi overrides that reverse what follows on a terminal.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.mark.parametrize("code", [CLOSE_POLICY, CLOSE_INTERNAL])
async def test_a_close_reason_is_shown_as_one_printable_line(
    server: LiveServer, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    """The service's close reason went as it was into the error state's reason, which `ctl
    status` prints to the owner's terminal (an escape sequence in it acted on the terminal,
    a line break split the state's line) and into the journal's line and LIVE_ERROR (which
    journalctl shows as "[N B blob data]" for an escape: the why of the error unreadable)."""
    reason = "Deadline\nexpired \x1b[2J\x1b]0;owned\x07\u202eevo"
    server.config.refuse_setup = (code, reason)
    cfg = dataclasses.replace(config_for(server), live=dataclasses.replace(
        config_for(server).live, reconnect_for_s=1, connect_timeout_s=5))
    with caplog.at_level(logging.INFO, logger="device"):
        event = await asyncio.wait_for(_first_event(cfg), 30)
    said = getattr(event, "reason", "")
    assert "Deadline\\x0aexpired \\x1b[2J" in said, said
    lines = summary_lines({"status": f"error: {said}"})
    assert not any(UNPRINTABLE.search(line) for line in lines), lines
    errors_said = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors_said
    for record in errors_said:
        assert not UNPRINTABLE.search(record.getMessage()), record.getMessage()
        assert not UNPRINTABLE.search(str(getattr(record, "LIVE_ERROR", ""))), record.LIVE_ERROR
