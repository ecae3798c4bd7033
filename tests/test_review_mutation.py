"""What a Pi owner notices of the last stops' changes, where no test noticed a careless
edit of them (hand mutants that survived)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from device import ask as ask_mod
from device.cli import main
from device.live.client import Reply

FAKE_KEY = "AIzaFakeKeyForTheTest0000000000000000000"


def _ask_saying(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, replies: list[Reply]
) -> tuple[Path, Path]:
    """`ask` whose session gives `replies`; its config and --audio path."""
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    cfg = tmp_path / "config.toml"
    cfg.write_text("")

    async def session(cfg: Any, args: Any) -> list[Reply]:
        return replies

    monkeypatch.setattr(ask_mod, "_ask_and_play", session)
    return cfg, tmp_path / "reply.wav"


def test_ask_says_how_much_reply_audio_it_kept_and_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ask --audio reply.wav` tells the owner what it wrote: without the line, an owner
    cannot tell a file of the replies from one of nothing."""
    said = Reply(text="Hi", audio=b"\x01\x00" * 12000, first_audio_s=0.1, seconds=0.5)
    cfg, wav = _ask_saying(monkeypatch, tmp_path, [said])
    code = main(["ask", "Hello", "--audio", str(wav), "--config", str(cfg)])
    assert code == 0
    assert f"wrote 0.5 s of reply audio to {wav}" in capsys.readouterr().err


def test_ask_whose_audio_cannot_be_written_after_the_session_says_why_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The card filled while the turns were asked (the check before the session passed):
    the reply's WAV is not written, and ask says so on stderr and by its exit status,
    never a 0 a script takes for a kept reply."""
    from device.audio import pcm

    said = Reply(text="Hi", audio=b"\x01\x00" * 2400, first_audio_s=0.1, seconds=0.2)
    cfg, wav = _ask_saying(monkeypatch, tmp_path, [said])

    def card_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pcm, "write_wav", card_full)
    code = main(["ask", "Hello", "--audio", str(wav), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"--audio {wav}: No space left on device" in err, err
    assert "wrote" not in err, err


async def test_ctl_status_says_leds_whose_writes_fail_are_tried_again_every_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ctl status` on a box whose LEDs' writes fail says they are tried again (at each
    frame): said with no word of a retry, the owner takes them for given up on, and
    restarts the service for nothing."""
    from test_leds_opened_late import failing_from_a_press

    from device.doctor.daemon import summary_lines

    async with failing_from_a_press(tmp_path, monkeypatch) as (box, _):
        said = next(t for t in summary_lines(box.appliance.status()) if t.startswith("leds:"))
    assert said.endswith("(each frame tried again until one shows)"), said


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


def test_two_webcams_microphones_are_named_as_several_not_a_traceback() -> None:
    """Two USB webcams (microphones that only record) and `input_device = "USB"`: neither
    plays, so neither is preferred; the owner is told that "USB" matches several input
    devices, and which, to name one; not a crash of the service with an IndexError."""
    from fakes import ALSA_DEFAULT, HEADPHONES, WEBCAM, ListedPortAudio, card

    from device.audio.devices import AudioDeviceError, choose_device

    pa: Any = ListedPortAudio(HEADPHONES, card(WEBCAM, 2), card(WEBCAM, 3), ALSA_DEFAULT)
    with pytest.raises(AudioDeviceError, match="'USB' matches several input devices"):
        choose_device(pa, "USB", "input")


@pytest.fixture
def pi_camera(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fake Pi camera (picamera2) and the rig it reports to."""
    from test_camera import fake_picamera2_class, installed_picamera2

    return installed_picamera2(monkeypatch, fake_picamera2_class)


def _doctor_camera(tmp_path: Path) -> Any:
    from fakes import config

    from device.doctor.progress import Progress
    from device.doctor.result import Context, Options

    cfg = config(camera={"enabled": True, "source": "picamera2"})
    return Context(cfg, Options(camera_out=tmp_path / "camera.jpg"), Progress(spinner=False))


async def test_the_doctor_warns_of_a_capped_lens_once_a_camera_had_its_second_to_settle(
    pi_camera: Any, tmp_path: Path
) -> None:
    """A lens cap on: `doctor camera` takes the picture again while a camera may still be
    settling (a second from its first frame), then warns; an owner does not wait many
    seconds on a camera that is black all along."""
    import time

    import numpy as np

    from device.doctor.camera import check_camera
    from device.doctor.result import Status

    pi_camera.picture = lambda config: np.zeros((768, 768, 3), dtype=np.uint8)
    started = time.monotonic()
    result = await check_camera(_doctor_camera(tmp_path))
    assert result.status is Status.WARN, result
    assert time.monotonic() - started < 3.0, "a black camera kept the owner waiting"
    assert pi_camera.captures > 1, "taken again while the camera could still be settling"


async def test_a_picture_just_bright_enough_to_show_something_passes_at_its_first_frame(
    pi_camera: Any, tmp_path: Path
) -> None:
    """A picture whose brightest pixels are BLACK_LEVEL shows the model something: the
    doctor passes it, at once, as the service would send it; it is not taken again for a
    second and then warned of as black."""
    import numpy as np

    from device.doctor.camera import check_camera
    from device.doctor.result import Status
    from device.hw.camera import BLACK_LEVEL

    level = np.full((768, 768, 3), BLACK_LEVEL, dtype=np.uint8)
    pi_camera.picture = lambda config: level
    result = await check_camera(_doctor_camera(tmp_path))
    assert result.status is Status.PASS, result
    assert pi_camera.captures == 1


def _older_libcamera(rig: Any) -> type:
    """picamera2 over an older libcamera pipeline: the ScalerCrop control's maximum is
    the crop's size without its offset; the ScalerCropMaximum property has both."""
    from test_camera import fake_picamera2_class

    base = fake_picamera2_class(rig)

    class Picamera2(base):  # type: ignore[misc,valid-type]
        @property
        def camera_controls(self) -> dict[str, Any]:
            controls = dict(super().camera_controls)
            *_, width, height = self.camera_properties["ScalerCropMaximum"]
            low, _, default = controls["ScalerCrop"]
            controls["ScalerCrop"] = (low, (0, 0, width, height), default)
            return controls

    return Picamera2


async def test_an_older_libcamera_crops_the_square_from_the_middle_of_the_sensor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Camera Module 3 in its binned, cropped mode (768, 432, 3072x1728 of the sensor)
    on an older libcamera, whose ScalerCrop control's maximum lacks that offset: the
    square is cut from the middle of what the mode sees, as ScalerCropMaximum says, not
    from its top left corner (the model would see the room off to one side)."""
    from test_camera import IMX708_MODES, Frames, feed_for, installed_picamera2, picamera2

    from device.hw.camera_sources import centred_square_crop

    camera = installed_picamera2(monkeypatch, _older_libcamera)
    camera.modes = [IMX708_MODES[0]]  # the one with an offset: (768, 432, 3072, 1728)
    frames = Frames()
    feed = feed_for(picamera2(), frames)
    feed.start_frames()
    from helpers import until

    await until(lambda: frames.jpegs)
    await feed.aclose()
    square = centred_square_crop(IMX708_MODES[0]["crop_limits"])
    assert square == (1440, 432, 1728, 1728)
    assert camera.call("set_controls") == {"ScalerCrop": square}


async def test_the_journal_says_a_pi_camera_is_cropped_by_its_isp(
    camera_rig_journal: tuple[Any, pytest.LogCaptureFixture],
) -> None:
    """`camera on:` in the journal says how the square was made: by the ISP (a square
    ScalerCrop) on a Pi camera; "cropped to a square in software" sends whoever reads it
    after a crop that never happened (and a picture squeezed by the ISP)."""
    from helpers import until
    from test_camera import Frames, feed_for, picamera2

    camera, caplog = camera_rig_journal
    frames = Frames()
    feed = feed_for(picamera2(), frames)
    feed.start_frames()
    await until(lambda: frames.jpegs)
    await feed.aclose()
    (on,) = [r for r in caplog.records if getattr(r, "LIVE_CAMERA", None) == "on"]
    assert "square ScalerCrop" in on.getMessage(), on.getMessage()
    assert "ScalerCrop" in camera.call("set_controls")


@pytest.fixture
def camera_rig_journal(
    pi_camera: Any, caplog: pytest.LogCaptureFixture
) -> tuple[Any, pytest.LogCaptureFixture]:
    import logging

    caplog.set_level(logging.INFO, logger="device.hw.camera")
    return pi_camera, caplog


async def test_an_active_high_module_held_at_rest_is_told_by_its_pin(tmp_path: Path) -> None:
    """`[button] active_high = true` on GPIO 27, a module that reads high with nobody at
    it: the fix names the pin to look at, as it does for a button to ground."""
    from gpiozero.pins.mock import MockPin
    from helpers import mock_pins
    from test_doctor import context

    from device.doctor.gpio import check_button
    from device.doctor.result import Options, Status

    class DrivenHighAtRest(MockPin):
        def _set_pull(self, value: str) -> None:
            self._pull = value
            self.drive_high()

    ctx = context(tmp_path, Options(button_wait_s=0.2), button={"active_high": True, "pin": 27})
    with mock_pins(DrivenHighAtRest):
        result = await check_button(ctx)
    assert result.status is Status.WARN, result
    assert "GPIO 27" in (result.fix or ""), result.fix


@pytest.mark.parametrize(
    ("tried_again", "fix_says", "never_says"),
    [(True, "free its pins", "apt install"), (False, "apt install", "free its pins")],
    ids=["pins busy at boot", "no pin driver"],
)
def test_the_doctor_beside_the_service_fixes_unopened_leds_by_why_they_did_not_open(
    tried_again: bool, fix_says: str, never_says: str
) -> None:
    """LEDs the service could not open: pins another program held at boot (tried again)
    are freed or corrected; a machine with no pin driver at all gets lgpio installed.
    Each fix given for the other cause sends the owner after what is not wrong."""
    from test_doctor import RUNNING

    from device.config import Config
    from device.doctor.result import Status
    from device.doctor.runner import held_by_the_service

    said = {"ready": True, "state": "idle", "status": "idle", "session_open": False,
            "faults": [], "turns": [], "unit": RUNNING,
            "leds_off": {"reason": "GPIO busy", "tried_again": tried_again}}  # fmt: skip
    line = held_by_the_service("leds", said, Config())
    assert line.status is Status.FAIL, line
    assert fix_says in (line.fix or "") and never_says not in (line.fix or ""), line.fix


def _box_speaking_to(
    canceller: Any,
    module: Any,
    far_end: Any,
    script: list[tuple[float, bool, float]],
    between: Any = None,
) -> Any:
    """What the server hears of -24 dBFS at the microphone while the box speaks (or not)
    and the module leaves `left_db` of it, by `script` (until, the box speaking, left_db);
    `between(t)` is called before each 40 ms block."""
    import numpy as np
    from test_audio_echo import SPEAKER_RATE, T0

    from device.audio.echo import RATE

    mic = np.random.default_rng(3).standard_normal(round(script[-1][0] * RATE)) * 2000
    mic16 = np.round(mic).astype(np.int16)
    out = []
    for i in range(0, mic16.size, 640):
        t = i / RATE
        _, speaking, module.left_db = next(step for step in script if t < step[0])
        active = True if between is None else between(t)
        piece = np.full(round(0.04 * SPEAKER_RATE), 8000 if speaking else 0, dtype=np.int16)
        far_end.played(piece, SPEAKER_RATE, T0 + t)
        out.append(canceller.process(mic16[i : i + 640], T0 + t, active=active))
    return np.concatenate(out)


def test_after_a_reply_cut_short_the_modules_second_second_is_guarded_again() -> None:
    """A reply cut short and the next one started (the echo moved): the module starts
    afresh, and for the second second of hearing the box again what it leaves of the
    echo (15 dB under the microphone) is lowered, as after the box's first words; else
    the server hears the box, and the box interrupts itself."""
    from test_audio_echo import T0, LeavesSome, frames_dbfs

    from device.audio import echo

    far_end = echo.FarEnd()
    canceller = echo.Canceller(far_end)
    module = canceller._apm = LeavesSome()

    def cut_at_3(t: float) -> bool:
        if abs(t - 3.0) < 1e-9:
            far_end.cut(T0 + t)
        return True

    script = [(3.0, True, -40.0), (4.0, True, -40.0), (5.0, True, -15.0)]
    heard = _box_speaking_to(canceller, module, far_end, script, between=cut_at_3)
    assert frames_dbfs(heard, 4.1, 4.95).max() < -24 - 15 - echo.GUARD_DB + 1


def test_a_canceller_switched_on_again_while_the_box_speaks_keeps_cleaning() -> None:
    """The microphone's forwarding stopped and started again while the box went on
    speaking, its module long converged: the first block after the start is not whole
    frames (the module's priming is dropped from it), and the guard must take it; a
    canceller that failed there sent the box's own voice, as recorded, from then on."""
    from test_audio_echo import LeavesSome, frames_dbfs

    from device.audio import echo

    far_end = echo.FarEnd()
    canceller = echo.Canceller(far_end)
    module = canceller._apm = LeavesSome()
    script = [(5.0, True, -40.0)]
    heard = _box_speaking_to(canceller, module, far_end, script,
                             between=lambda t: not 3.0 <= t < 3.2)  # fmt: skip
    assert canceller.failed is None, canceller.failed
    assert frames_dbfs(heard, 3.5, 4.9).max() < -24 - 30


def test_a_person_the_converging_module_takes_a_little_of_is_heard() -> None:
    """In the module's second second of hearing the box, a person talking over it whom the
    module takes 8 dB out of (still converging) is what the server hears, as they are
    left: only what it takes RESIDUE_DB or more out of is the echo's residue."""
    from test_audio_echo import LeavesSome, frames_dbfs

    from device.audio import echo

    far_end = echo.FarEnd()
    canceller = echo.Canceller(far_end)
    module = canceller._apm = LeavesSome()
    heard = _box_speaking_to(canceller, module, far_end, [(1.0, True, -40.0), (2.0, True, -8.0)])
    assert frames_dbfs(heard, 1.1, 1.9).min() > -24 - 8 - 1.5


async def test_a_lamp_in_a_dark_room_is_a_picture_not_a_capped_lens(
    pi_camera: Any, tmp_path: Path
) -> None:
    """A dark room lit by one lamp (a tenth of the picture): the model sees the lamp and
    what it lights, and the doctor passes the picture at its first frame; judged by its
    middling pixels it was warned of as black."""
    import numpy as np

    from device.doctor.camera import check_camera
    from device.doctor.result import Status

    room = np.zeros((768, 768, 3), dtype=np.uint8)
    room[:77] = 200  # the lamp's tenth
    pi_camera.picture = lambda config: room
    result = await check_camera(_doctor_camera(tmp_path))
    assert result.status is Status.PASS, result
    assert pi_camera.captures == 1


async def _tool_answer(result: Any) -> dict[str, Any]:
    """The response the model gets from a tool that returns `result`."""
    from google.genai import types
    from test_tools import FakeActions

    from device.config import ToolsConfig
    from device.tools import Registry, ToolBox

    registry = Registry()

    @registry.tool
    def sensor(device: Any) -> Any:
        """The sensor's readings."""
        return result

    toolbox = ToolBox(ToolsConfig(enabled=("sensor",), timeout_s=10.0), FakeActions(),
                      registry=registry)  # fmt: skip
    response = await toolbox.run(types.FunctionCall(id="c1", name="sensor", args={}))
    assert response.response is not None
    return dict(response.response)


async def test_readings_in_a_models_computed_field_reach_the_model() -> None:
    """A tool returning a pydantic model whose readings are a computed field handing out a
    stream: the model is told the readings, not an empty list (a copy of the model
    reads the field afresh, from a stream already read)."""
    from test_tools import ComputedModel

    answer = await _tool_answer(ComputedModel.of(iter([20, 21, 22])))
    assert answer.get("output", answer) == {"values": [20, 21, 22]}, answer


async def test_a_models_aliases_reach_the_model() -> None:
    """A tool returning a pydantic model with aliased fields (`sensorName`), a stream in
    it: the model is told the fields by the names the tool's model gives them."""
    from pydantic import BaseModel, ConfigDict, Field

    class Reading(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

        sensor_name: str = Field(alias="sensorName")
        values: Any

    answer = await _tool_answer(Reading(sensor_name="thermometer", values=iter([20, 21])))
    assert answer == {"output": {"sensorName": "thermometer", "values": [20, 21]}}, answer


async def test_a_result_that_holds_itself_is_answered_as_not_json() -> None:
    """A tool whose result holds itself (a dict of readings with a link back to it): the
    model is told the result is not JSON, a circular reference, as pydantic names it."""
    readings: dict[str, Any] = {"values": iter([20, 21])}
    readings["all"] = readings
    answer = await _tool_answer(readings)
    assert "not JSON" in answer.get("error", "") and "ircular" in answer["error"], answer


@pytest.mark.parametrize("kind", ["dataclass", "model with a computed field", "model"])
async def test_a_tools_record_reaches_the_model_as_its_output_whatever_its_kind(
    kind: str,
) -> None:
    """A tool returning a record (a dataclass, a pydantic model) is answered as its
    output, as a plain dict alone is the answer itself: since stop 57 walked dataclasses
    and models into dicts, a dataclass's or a computed-field model's fields became the
    answer's own, and a record's `error` field told the model that the tool failed."""
    import dataclasses

    from pydantic import BaseModel, computed_field

    @dataclasses.dataclass
    class Check:
        ok: bool
        error: str

    class CheckModel(BaseModel):
        ok: bool

        @computed_field  # type: ignore[prop-decorator]
        @property
        def error(self) -> str:
            return "the lid is open"

    class PlainModel(BaseModel):
        ok: bool
        error: str

    record = {
        "dataclass": Check(ok=False, error="the lid is open"),
        "model with a computed field": CheckModel(ok=False),
        "model": PlainModel(ok=False, error="the lid is open"),
    }[kind]
    answer = await _tool_answer(record)
    assert answer == {"output": {"ok": False, "error": "the lid is open"}}, answer
