"""A base URL's password stays out of the journal whatever it holds: one pasted unencoded
('@' or '/' in it) is the kind of URL the box cannot use, and so the kind it quotes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_live_session import first_outcome

from device import config
from device.config import Config, LiveConfig, Secret
from device.states import ConnectFailed

#: Gateway URLs with a login whose password was pasted as written, each unusable (a port
#: the '/' or '@' leaves as letters, or out of range), and the password in them.
UNENCODED = {
    "https://gw:s3cret/Pw@gateway.lan:8443": "s3cret/Pw",
    "https://gw:s3c@ret@gateway.lan:443443": "s3c@ret",
}


def _leaks(text: str, password: str) -> list[str]:
    """The pieces of `password` (split at '@' and '/') that `text` holds in clear."""
    return [piece for piece in password.replace("/", "@").split("@") if piece in text]


@pytest.mark.parametrize("url", UNENCODED)
def test_a_configured_base_url_the_box_cannot_use_keeps_its_password_out_of_the_error(
    tmp_path: Path, url: str
) -> None:
    """`[live] base_url` refused at load quoted the URL whole: the password reached stderr,
    the journal and the doctor's output in clear (the mask took only a password without
    '@' or '/', or the part after its last '@')."""
    path = tmp_path / "config.toml"
    path.write_text(f"[live]\nbase_url = '{url}'\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    said = str(caught.value)
    assert "base_url: must be an http:// or https:// URL" in said, said
    assert "gw:***@gateway.lan" in said, said
    assert not _leaks(said, UNENCODED[url]), said


@pytest.mark.parametrize("url", UNENCODED)
async def test_a_base_url_variable_the_box_cannot_use_keeps_its_password_out_of_the_journal(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """GOOGLE_GEMINI_BASE_URL the box cannot use is said as the setting, at every press, in
    the journal and `ctl status`: quoted whole, the password with it."""
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
    cfg = Config(live=LiveConfig(base_url=None), api_key=Secret("k" * 39))
    said = await first_outcome(dataclasses.replace(cfg))
    assert isinstance(said, ConnectFailed), said
    assert said.reason.startswith("setting: GOOGLE_GEMINI_BASE_URL's https://gw:***@gateway.lan"), (
        said.reason
    )
    assert not _leaks(said.reason, UNENCODED[url]), said.reason
