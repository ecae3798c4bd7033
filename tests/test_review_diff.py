"""Review of the day's diff: what a home meets that its tests did not try."""

from __future__ import annotations

import pytest

from tests.test_live_session import _connect_failure


@pytest.mark.parametrize(
    "proxy",
    [
        "alice:pr0xy-pa55word@proxy.lan:3128",  # curl's way: no http://
        "http://alice:pr0xy@pa55word@proxy.lan:3128/login",  # an '@' in the password
    ],
)
async def test_a_proxy_password_written_as_curl_takes_it_stays_out_of_the_journal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, proxy: str
) -> None:
    """The setting websockets cannot use is quoted whole in the proxy failure's line: its
    password (or what follows an '@' in it) reached the journal and `ctl status`."""
    reason, said = await _connect_failure(monkeypatch, caplog, proxy)
    texts = (reason, said[-1].LIVE_ERROR, *(r.getMessage() for r in said),
             *(r.exc_text or "" for r in said))
    for text in texts:
        assert "pa55word" not in text, text
    assert "alice:" in reason and "@proxy.lan:3128" in reason, reason  # which proxy, still
    assert said[-1].LIVE_FAILURE == "proxy"
