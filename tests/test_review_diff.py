"""Today's diff read as the owner of a box in a home: behaviours it changed for a case
its author did not look at."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import daemon_saying, scratch_dir
from wire import config_for

from device import config
from device.audio.devices import AudioDeviceError
from device.audio.playback import Playback
from device.cli import main
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.doctor.service import check_service
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


async def test_ask_play_while_the_service_has_lost_its_speaker_says_what_the_card_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The speakerphone unplugged: the service runs, says its speaker is failing, and holds
    no speaker. `ask --play` to try it told the owner the running service held it and to
    stop the service; only after that did it say the card is missing."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaFakeKeyForTheTest0000000000000000000")
    missing = AudioDeviceError("no output device matches 'seeed'", [])

    def gone(self: Playback, *args: Any, **kwargs: Any) -> None:
        raise missing

    monkeypatch.setattr(Playback, "start", gone)
    status = {
        "state": "error",
        "status": "error: speaker cannot open: no output device matches 'seeed'",
        "faults": ["speaker"],
        "systemd": True,
    }
    cfg = tmp_path / "config.toml"
    async with daemon_saying(status) as sock:
        cfg.write_text(f'[control]\nsocket = "{sock}"\n')
        code = await asyncio.to_thread(main, ["ask", "Hello", "--play", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 1
    assert "no output device matches 'seeed'" in err, err
    assert "systemctl stop" not in err, err


#: The service started beside a copy run by hand: each start refused ("already running"),
#: systemd starting it again every 5 s, then no more (5 starts in 10 minutes).
REFUSED_BESIDE_A_COPY = [
    {"ActiveState": "activating", "SubState": "auto-restart", "NRestarts": "3"},
    {"ActiveState": "failed", "SubState": "failed", "Result": "start-limit-hit",
     "NRestarts": "4"},
]  # fmt: skip


@pytest.mark.parametrize("unit", REFUSED_BESIDE_A_COPY, ids=["restarting", "start-limit"])
async def test_a_service_refused_beside_a_copy_run_by_hand_is_told_to_stop_the_copy(
    unit: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sudo live-appliance run` left in a tmux, then `systemctl start live-appliance`: the
    doctor said "it stopped and systemd starts it again by itself" or to reset-failed and
    start it, each start refused again for as long as the copy, which it knew of, ran."""
    bin_dir = scratch_dir("review-bin-")
    props = {"LoadState": "loaded", "ExecMainStatus": "1", **unit}
    (bin_dir / "answer").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\ncat {bin_dir / 'answer'}\n")
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    copy = {"ready": True, "state": "idle", "status": "idle", "systemd": False, "pid": 4242}
    async with daemon_saying(copy) as sock:
        path = tmp_path / "config.toml"
        path.write_text(f'[control]\nsocket = "{sock}"\n')
        cfg = config.load(path)
        result = await check_service(Context(cfg, Options(), Progress(spinner=False)))
    assert "run by hand, pid 4242" in (result.fix or ""), result
    assert "Ctrl-C" in (result.fix or ""), result
