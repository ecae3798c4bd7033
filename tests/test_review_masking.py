"""What may be a secret stays out of what the owner is shown: counterexamples a
property-based search found, pinned as examples."""

from __future__ import annotations

import pytest

from device.config import Config, LiveConfig, Secret
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status

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
