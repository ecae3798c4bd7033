"""Today's diff read as the owner of a box in a home: behaviours it changed for a case
its author did not look at."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from wire import config_for

from device import config
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from rig.server.server import LiveServer

#: A typo any owner makes (a dot twice), all ASCII: Python's socket module encodes every
#: host with the IDNA codec before it resolves it, and that codec refuses it.
TYPO = "https://live..example.com"


def test_an_ascii_base_url_with_an_empty_label_is_refused_at_load(tmp_path: Path) -> None:
    """It loaded, and every press said "the service sent a message that cannot be decoded
    (encoding with 'idna' codec failed ...)": the service was never asked."""
    path = tmp_path / "config.toml"
    path.write_text(f"[live]\nbase_url = '{TYPO}'\n")
    with pytest.raises(config.ConfigError, match="too long label"):
        config.load(path)


async def test_the_doctor_says_an_ascii_base_url_variable_with_an_empty_label_as_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The doctor said "DNS: the service sent a message that cannot be decoded": the owner
    looked at the network and at Google, not at the variable."""
    async with LiveServer(pace=0, reply_seconds=0.2) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", TYPO)
        base = config_for(server)
        cfg = dataclasses.replace(base, live=dataclasses.replace(base.live, base_url=None))
        result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert result.measured.startswith("setting: GOOGLE_GEMINI_BASE_URL's"), result.measured
