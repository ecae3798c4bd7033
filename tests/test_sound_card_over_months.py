"""The sound card over months: what the owner is told about a card that is there, gone,
held by another program or plugged back."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import CHUNK, HDMI, HEADPHONES, Cable, FakeParts, ListedPortAudio, config, running
from helpers import until
from test_audio_playback import _Speaker

from device.audio import capture as capture_module
from device.audio import devices as devices_module
from device.audio.capture import Capture
from device.audio.devices import print_devices
from device.audio.earcons import earcon
from device.audio.keeper import AudioKeeper
from device.audio.playback import Playback
from device.config import AudioConfig, Config
from device.doctor import audio as doctor_audio
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.doctor.runner import held_by_the_service
from device.states import Earcon

#: A Raspberry Pi OS Desktop with its USB card in: the logged-in user's PipeWire holds it,
#: and PortAudio, run by the service's user, lists the Pi's own outputs only.
CARDS = (
    " 0 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones\n"
    "                      bcm2835 Headphones\n"
    " 2 [Device         ]: USB-Audio - USB Audio Device\n"
    "                      C-Media Electronics Inc. USB Audio Device at usb-xhci-hcd.0-1\n"
)
PCMS = (
    "00-00: bcm2835 Headphones : bcm2835 Headphones : playback 8\n"
    "02-00: USB Audio : USB Audio : playback 1 : capture 1\n"
)


@pytest.fixture
def card_held_by_pipewire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "cards").write_text(CARDS)
    (tmp_path / "pcm").write_text(PCMS)
    monkeypatch.setattr(devices_module, "ASOUND", tmp_path)
    listing: Any = lambda: ListedPortAudio(HEADPHONES, HDMI)  # noqa: E731
    monkeypatch.setattr(devices_module, "open_portaudio", listing)
    monkeypatch.setattr(doctor_audio, "open_portaudio", listing)
    monkeypatch.setattr(capture_module, "open_portaudio", listing)


WRONG_FIXES = ("Plug the device in", "plug in a", "a name or index above", "index that")


@pytest.mark.usefixtures("card_held_by_pipewire")
async def test_a_card_another_program_holds_is_not_fixed_by_plugging_it_in_or_choosing_another(
) -> None:
    """The summary said the card is there and held; the fix beside it still said to plug it
    in, or to choose another device (the Pi's headphone jack is listed above): the owner
    unplugged a card that was never the trouble, or sent the replies to the jack."""
    audio = AudioConfig(input_device="USB Audio", output_device="USB Audio")
    out = io.StringIO()
    assert print_devices(audio, out) == 1
    for line in out.getvalue().splitlines()[-2:]:
        assert "another program holds it" in line, line
        assert not any(wrong in line for wrong in WRONG_FIXES), line
        assert "fuser -v /dev/snd/*" in line, line
    ctx = Context(Config(audio=audio), Options(), Progress(spinner=False))
    for check in (doctor_audio.check_devices, doctor_audio.check_mic):
        result = await check(ctx)
        assert result.status is Status.FAIL
        assert "another program holds it" in result.measured, result.measured
        assert not any(wrong in result.fix for wrong in WRONG_FIXES), result.fix
        assert "fuser -v /dev/snd/*" in result.fix, result.fix
    keeper = AudioKeeper({"microphone": Capture(lambda *_: None, device="USB Audio")},
                         lambda _: None, 1.0)  # fmt: skip
    await keeper.open()
    said = keeper.failures["microphone"]  # the journal's line, and `ctl status`
    assert "another program holds it" in said and "fuser -v /dev/snd/*" in said, said


def test_devices_with_the_named_card_unplugged_says_to_plug_it_back_not_to_take_the_jack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The speakerphone named in the configuration lies unplugged: `devices` said "set
    [audio] output_device to a name or index above", and above were only the Pi's
    headphone jack and HDMI, where nobody listens; not a word of plugging it back in."""
    monkeypatch.setattr(devices_module, "ASOUND", tmp_path)  # the kernel lists no such card
    cable = Cable()
    cable.plugged = False
    monkeypatch.setattr(devices_module, "open_portaudio", cable.listing)
    out = io.StringIO()
    assert print_devices(AudioConfig(input_device="Jabra", output_device="Jabra"), out) == 1
    output = out.getvalue().splitlines()[-1]
    assert output.startswith("output: no output device matches 'Jabra'"), output
    assert "plug" in output, output


class _Output:
    """An output stream that takes what it is given: the doctor's tone plays."""

    frame_bytes, output_latency = 2, 0.01

    def start(self) -> None:
        """Nothing to start."""

    def write(self, frames: bytes) -> bool:
        return False

    def stop(self) -> None:
        """Nothing to stop."""

    abort = stop

    def close(self) -> None:
        """Nothing to close."""


def _plays(self: Playback, pa: object) -> _Output:
    self.device_rate, self.channels = 24000, 1
    return _Output()


async def test_a_box_the_model_turned_down_to_silence_is_not_a_speaker_that_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Someone asked the box to be quiet: the set_volume tool set 0 %, and the box keeps it
    across restarts. Its replies and beeps were silent; the owner stopped the service and
    ran the doctor, whose tone (at full volume) passed: "you should have heard it", not a
    word of the volume the box plays at."""
    (tmp_path / "state.json").write_text(json.dumps({"volume": 0.0, "volume_configured": 1.0}))
    monkeypatch.setattr(Playback, "_open", _plays)
    cfg = config(service={"state_dir": str(tmp_path)})
    result = await doctor_audio.check_speaker(Context(cfg, Options(), Progress(spinner=False)))
    assert result.status is Status.WARN, result.measured
    assert "volume 0%" in result.measured, result.measured
    assert result.fix is not None and str(tmp_path / "state.json") in result.fix, result.fix


def test_a_running_box_turned_down_to_silence_is_said_beside_its_speaker() -> None:
    """The service running: the doctor's speaker line was SKIP "in use", and the volume of
    0 % it plays at only in `ctl status`, while every reply went unheard."""
    said = {"ready": True, "state": "idle", "status": "idle", "session_open": False,
            "faults": [], "turns": [], "volume": 0.0}  # fmt: skip
    speaker = held_by_the_service("speaker", said, Config())
    assert speaker.status is Status.WARN, speaker.measured
    assert "volume 0%" in speaker.measured, speaker.measured
    assert held_by_the_service("mic", said, Config()).status is Status.SKIP


@dataclass
class _SpeakerOnHdmi(FakeParts):
    """Fake parts but the speaker: the real Playback on a card of its own (HDMI, the jack)
    that stays when the USB microphone goes."""

    def speaker(self):  # type: ignore[no-untyped-def]
        return self._keep("speaker", _Speaker())


def _sounded(speaker: _Speaker) -> bytes:
    """Everything the speaker's streams were handed, across reopens."""
    return b"".join(bytes(device.written) for device in speaker.devices)


async def test_a_microphone_unplugged_mid_question_is_told_by_the_error_beep(
    tmp_path: Path,
) -> None:
    """A USB microphone, the speaker on the Pi's own HDMI or jack: the microphone's cable
    pulled while the person spoke. The state machine played the error earcon into the
    speaker, which works, and the keeper closed it at that very moment with the
    microphone (both close and reopen together): the question was lost in silence, the
    LEDs alone saying why."""
    cfg = config(audio={"earcons": True, "reopen_s": 30.0})
    async with running(tmp_path, cfg, parts_class=_SpeakerOnHdmi) as box:
        speaker: _Speaker = box.parts.made["speaker"]
        await box.ctl("press")
        for _ in range(3):
            box.mic.record(CHUNK)
        await box.settle()
        box.mic.vanish()
        await until(lambda: box.state == "error", within=3)
        await asyncio.sleep(1.0)  # the earcon is 0.33 s long
        assert earcon(Earcon.ERROR) in _sounded(speaker), "the error earcon was not heard"


@pytest.mark.usefixtures("card_held_by_pipewire")
async def test_unset_devices_on_a_card_another_program_holds_are_not_to_be_plugged_in() -> None:
    """The configuration unset (the default, "the USB card"), on the Desktop image: the
    logged-in user's PipeWire holds the card, and PortAudio lists no microphone. `devices`
    said "no default input device: plug in a microphone", the doctor "Plug the device in",
    for a card plugged in all along."""
    out = io.StringIO()
    assert print_devices(AudioConfig(), out) == 1
    line = next(line for line in out.getvalue().splitlines() if line.startswith("input:"))
    assert "another program holds it" in line and "fuser -v /dev/snd/*" in line, line
    assert not any(wrong in line for wrong in WRONG_FIXES), line
    ctx = Context(Config(), Options(), Progress(spinner=False))
    result = await doctor_audio.check_devices(ctx)
    assert result.status is Status.FAIL
    assert "another program holds it" in result.measured, result.measured
    assert not any(wrong in result.fix for wrong in WRONG_FIXES), result.fix


async def test_a_box_turned_down_to_silence_is_said_without_the_test_tone_too(
    tmp_path: Path,
) -> None:
    """`doctor --quiet` (a box in a room where someone sleeps) skips the tone: the speaker
    line was SKIP, though the volume the box plays at needs no tone to be read."""
    (tmp_path / "state.json").write_text(json.dumps({"volume": 0.0, "volume_configured": 1.0}))
    cfg = config(service={"state_dir": str(tmp_path)})
    ctx = Context(cfg, Options(quiet=True), Progress(spinner=False))
    result = await doctor_audio.check_speaker(ctx)
    assert result.status is Status.WARN, result.measured
    assert "no test tone" in result.measured and "volume 0%" in result.measured, result.measured


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


def _state_dir_of_the_service(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> None:
    """The owner's view of the service's state directory (0700, not theirs): nothing in
    it can even be looked at (EACCES), as the doctor run without sudo sees it."""
    import os

    real = os.stat

    def refused(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).startswith(f"{state_dir}/"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", refused)


@pytest.mark.parametrize("quiet", [False, True], ids=["tone", "--quiet"])
async def test_the_doctor_without_sudo_says_it_could_not_read_the_kept_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    """`live-appliance doctor speaker`, without sudo, on a box someone asked to be quiet
    (0 % kept in the service's own 0700 directory, which the owner may not even look
    into): the tone sounded and the line passed, "you should have heard it", as if the
    box played at the configured volume; it must say the kept one was not read."""
    import json

    from fakes import config
    from test_sound_card_over_months import _plays

    from device.audio.playback import Playback
    from device.doctor import audio as doctor_audio
    from device.doctor.progress import Progress
    from device.doctor.result import Context, Options

    (tmp_path / "state.json").write_text(json.dumps({"volume": 0.0, "volume_configured": 1.0}))
    monkeypatch.setattr(Playback, "_open", _plays)
    _state_dir_of_the_service(monkeypatch, tmp_path)
    cfg = config(service={"state_dir": str(tmp_path)})
    ctx = Context(cfg, Options(quiet=quiet), Progress(spinner=False))
    result = await doctor_audio.check_speaker(ctx)
    assert "sudo live-appliance doctor speaker" in result.measured, result.measured


async def test_the_doctor_on_a_new_box_passes_its_speaker_at_the_configured_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A box that has kept no volume yet (first boot, nobody asked it to be louder or
    softer): the speaker passes at the configured volume, with no word of a volume the
    owner may not read: there is none, and sudo would change nothing."""
    from fakes import config
    from test_sound_card_over_months import _plays

    from device.audio.playback import Playback
    from device.doctor import audio as doctor_audio
    from device.doctor.progress import Progress
    from device.doctor.result import Context, Options, Status

    monkeypatch.setattr(Playback, "_open", _plays)
    cfg = config(service={"state_dir": str(tmp_path / "not-yet")})
    result = await doctor_audio.check_speaker(Context(cfg, Options(), Progress(spinner=False)))
    assert result.status is Status.PASS, result.measured
    assert "sudo" not in result.measured and "not this user's" not in result.measured
