"""The doctor's speaker line when the volume the service keeps is not this user's to read
(review of stop 55)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fakes import config

from device.doctor import audio as doctor_audio
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status


async def test_a_kept_volume_the_doctor_may_not_read_is_not_passed_over_in_silence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone asked the box to be quiet (the set_volume tool kept 0 %). The owner, as the
    README's `live-appliance doctor mic speaker` has it, without sudo: the state directory
    is the service's alone (0700), the doctor read the configured volume instead, and its
    speaker line said nothing of the volume the box will play at, which nobody hears."""
    (tmp_path / "state.json").write_text(json.dumps({"volume": 0.0, "volume_configured": 1.0}))
    real = os.access

    def not_root(path: Any, mode: int, **kwargs: Any) -> bool:  # the owner's view of 0700
        if str(path).startswith(str(tmp_path)):
            return False
        return real(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", not_root)
    cfg = config(service={"state_dir": str(tmp_path)})
    result = await doctor_audio.check_speaker(Context(cfg, Options(quiet=True),
                                                      Progress(spinner=False)))  # fmt: skip
    said = f"{result.measured} {result.fix or ''}"
    assert result.status is not Status.PASS, said
    assert "sudo live-appliance doctor speaker" in said, said
