"""A sound card another program holds: the command the owner is told to run to name that
program must see every user's programs. Run without sudo, `fuser` looks only at the
caller's own: of the service's, another user's PipeWire or a music player's daemon (each
its own user) it prints nothing and exits 1, and the owner concludes nothing holds it."""

from __future__ import annotations

import io
from typing import Any

import pytest
from test_sound_card_over_months import card_held_by_pipewire  # noqa: F401  (a fixture)

from device.audio.capture import Capture
from device.audio.devices import print_devices
from device.audio.playback import Playback
from device.config import AudioConfig, Config
from device.doctor import audio as doctor_audio
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.doctor.runner import held_by_the_service

#: What names the program that holds a card, whoever's it is.
SEES_EVERY_USER = "sudo fuser -v /dev/snd/*"


@pytest.mark.usefixtures("card_held_by_pipewire")
async def test_devices_and_the_doctor_name_a_held_cards_program_with_sudo() -> None:
    audio = AudioConfig(input_device="USB Audio", output_device="USB Audio")
    out = io.StringIO()
    assert print_devices(audio, out) == 1
    for line in out.getvalue().splitlines()[-2:]:
        assert SEES_EVERY_USER in line, line
    ctx = Context(Config(audio=audio), Options(), Progress(spinner=False))
    result = await doctor_audio.check_devices(ctx)
    assert result.status is Status.FAIL
    assert SEES_EVERY_USER in (result.fix or ""), result.fix


@pytest.mark.parametrize(
    ("check", "stream"), [(doctor_audio.check_mic, Capture), (doctor_audio.check_speaker, Playback)]
)
async def test_the_doctor_on_a_busy_device_names_its_program_with_sudo(
    monkeypatch: pytest.MonkeyPatch, check: Any, stream: type
) -> None:
    def busy(self: object, loop: object = None) -> None:
        raise OSError("Device or resource busy")

    monkeypatch.setattr(stream, "start", busy)
    result = await check(Context(Config(), Options(mic_seconds=0.5), Progress(spinner=False)))
    assert result.status is Status.FAIL
    assert SEES_EVERY_USER in (result.fix or ""), result.fix


@pytest.mark.parametrize(("check", "part"), [("mic", "microphone"), ("speaker", "speaker")])
def test_the_doctor_beside_a_service_that_lost_its_card_names_the_taker_with_sudo(
    check: str, part: str
) -> None:
    """The service (its own user) lost the card to another program; the owner, over SSH as
    theirs, sees neither the service's nor the taker's in fuser without sudo."""
    said = {"ready": True, "state": "error", "status": f"error: {part}: Device unavailable",
            "session_open": False, "faults": [part], "turns": []}  # fmt: skip
    line = held_by_the_service(check, said, Config())
    assert line.status is Status.FAIL, line
    assert SEES_EVERY_USER in (line.fix or ""), line.fix
