"""Issue 18's words, checked as a Pi owner would: a box without the echo canceller's
binding gates and says so once, the doctor names the way in use, and every echo setting
with a wrong value is a clear error naming its key."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import CHUNK, config, running
from helpers import until

from device import config as settings
from device.audio import echo
from device.doctor.audio import _mic_plan
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.errors import ConfigError
from device.states import ReplyAudio, SetupComplete, TurnComplete
from rig.loopback import PulseLoopback

REPLY = b"\x01\x02" * 24000  # 1 s at 24 kHz


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from this shell."""
    for name in [n for n in os.environ if n.startswith(settings.ENV_PREFIX)]:
        monkeypatch.delenv(name)


def no_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    """32-bit Raspberry Pi OS: pywebrtc-audio has no wheel there, its import fails."""
    monkeypatch.setitem(sys.modules, echo.BINDING, None)


def said_the_fallback(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Journal lines that speak of the missing module or the gate it falls back to."""
    return [
        r for r in caplog.records
        if getattr(r, "LIVE_MIC_DURING_PLAYBACK", None) or "pywebrtc" in r.getMessage()
    ]  # fmt: skip


async def test_without_the_binding_the_box_gates_every_reply_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two hands-free conversations of two replies each: every reply gated (nothing the
    microphone hears while the box speaks reaches the service), and one journal line for
    the whole run, not one a conversation or a reply."""
    no_binding(monkeypatch)
    caplog.set_level(logging.DEBUG)
    async with running(tmp_path, config(button={"mode": "toggle"})) as box:
        for _ in range(2):
            await box.ctl("press")
            box.link.deliver(SetupComplete)
            await box.settle()
            for _ in range(2):
                box.link.deliver(ReplyAudio, pcm=REPLY)
                await box.settle()
                assert box.state == "speaking" and box.mic.muted
                box.link.sent()
                box.mic.record(CHUNK)  # the box's own voice
                await box.settle()
                assert not [i for i in box.link.sent() if i.kind == "audio"]
                box.link.deliver(TurnComplete)
                box.speaker.play()
                await until(lambda: box.state == "listening")
                assert not box.mic.muted
            await box.ctl("press")  # the conversation ends
            await until(lambda: box.state == "idle")
    said = said_the_fallback(caplog)
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING


@pytest.mark.parametrize("mode", ["toggle", "push_to_talk"])
def test_the_doctor_says_gate_where_the_binding_is_missing(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The default `mic_during_playback = "cancel"` on a box that cannot cancel: whichever
    the button mode, the doctor's echo line (text and JSON data) does not claim the box
    would cancel its echo while it speaks hands-free: it would gate."""
    no_binding(monkeypatch)
    result = _mic_plan(Context(config(button={"mode": mode}), Options(), Progress()))
    print(result.status, result.measured, result.data)
    assert "hands-free: cancel" not in result.measured
    assert "gate" in result.measured
    assert result.data["mic_during_playback"] == "gate", "the JSON form says it too"


async def test_beside_a_push_to_talk_service_the_doctor_still_says_gate_without_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The running push-to-talk service has "cancel" in its plan (it never needs the
    module, and does not look); the doctor, which looked, says the box would gate: no
    configuration edited since, nothing to restart for."""
    from helpers import daemon_saying

    from device.doctor.audio import check_echo

    no_binding(monkeypatch)
    said = {"ready": True, "state": "idle", "status": "idle", "mode": "push_to_talk",
            "session_open": False, "faults": [], "turns": [],
            "mic_during_playback": "cancel", "mic_missing": None}  # fmt: skip
    async with daemon_saying(said) as sock:
        cfg = config(control={"socket": str(sock)})
        result = await check_echo(Context(cfg, Options(), Progress()))
    assert result.status is Status.PASS, result
    assert result.data["mic_during_playback"] == "gate"
    assert "restart" not in (result.fix or "")


def test_the_doctor_says_cancel_where_the_binding_runs() -> None:
    result = _mic_plan(Context(config(button={"mode": "toggle"}), Options(), Progress()))
    assert result.status is Status.PASS
    assert result.data["mic_during_playback"] == "cancel"
    assert "hands-free: cancel" in result.measured


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('mic_during_playback = "cancle"', "one of 'cancel', 'gate', 'attenuate', 'open'"),
        ('mic_during_playback = "CANCEL"', "one of 'cancel'"),
        ("mic_during_playback = 1", "one of 'cancel'"),
        ("mic_during_playback = true", "one of 'cancel'"),
        ('mic_during_playback = ["cancel"]', "one of 'cancel'"),
        ('noise_suppression = "yes"', "true or false"),
        ("noise_suppression = 1", "true or false"),
        ('attenuation_db = "30"', "a number"),
        ("attenuation_db = -1", "between 0 and 90"),
        ("attenuation_db = nan", "between 0 and 90"),
        ("attenuation_db = inf", "between 0 and 90"),
        ("attenuation_db = true", "a number"),
        ('earcons = "no"', "true or false"),
        ("noise_supression = true", "did you mean noise_suppression"),
        ('mic_during_playbak = "gate"', "did you mean mic_during_playback"),
    ],
)
def test_a_wrong_echo_setting_is_a_clear_error_naming_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, words: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[audio]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        settings.load(path, key=False)
    message = str(caught.value)
    key = line.split(" = ")[0]
    assert f"[audio] {key}" in message and words in message, message


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("MIC_DURING_PLAYBACK", "cancle", "one of 'cancel'"),
        ("MIC_DURING_PLAYBACK", "Cancel", "one of 'cancel'"),
        ("MIC_DURING_PLAYBACK", "1", "one of 'cancel'"),
        ("MIC_DURING_PLAYBACK", "", "one of 'cancel'"),
        ("NOISE_SUPPRESSION", "yes", "true or false"),
        ("ATTENUATION_DB", "lots", "a number"),
        ("ATTENUATION_DB", "91", "between 0 and 90"),
    ],
)
def test_a_wrong_echo_setting_from_the_environment_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str, words: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("")
    monkeypatch.setenv(f"{settings.ENV_PREFIX}AUDIO_{key}", value)
    with pytest.raises(ConfigError) as caught:
        settings.load(path, key=False)
    message = str(caught.value)
    assert f"{settings.ENV_PREFIX}AUDIO_{key}" in message and words in message, message


@pytest.mark.parametrize("setting", ["cancel", "gate", "attenuate", "open"])
@pytest.mark.parametrize("binding", [True, False], ids=["binding", "no-binding"])
async def test_push_to_talk_works_as_before_with_each_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, binding: bool
) -> None:
    """Push-to-talk, whatever `mic_during_playback` says and whether the module runs: what
    is said while the button is held reaches the service as recorded (never muted nor
    turned down), and a press over a reply silences it."""
    if not binding:
        no_binding(monkeypatch)
    cfg = config(audio={"mic_during_playback": setting})
    async with running(tmp_path, cfg) as box:
        assert not box.appliance.mic_plan.echo
        for turn in range(2):  # the second press comes over the first one's reply
            await box.ctl("press")
            if turn == 0:
                box.link.deliver(SetupComplete)
            await box.settle()
            assert box.speaker.buffered.count(REPLY) == 0, "a press silences the reply"
            box.link.sent()
            for _ in range(3):
                box.mic.record(CHUNK)
            await box.settle()
            assert not box.mic.muted and not box.mic.closely
            audio = [i.data for i in box.link.sent() if i.kind == "audio"]
            assert audio == [CHUNK] * 3, setting
            await box.ctl("release")
            box.mic.record(CHUNK)
            await box.settle()
            box.link.deliver(ReplyAudio, pcm=REPLY)
            await box.settle()
            assert box.state == "speaking"
    assert not [r for r in box.appliance.history if "Fail" in r[2]]


async def test_the_reference_is_what_the_speaker_played_through_a_volume_change_and_an_earcon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The set_volume tool turns the box down mid-reply, then an earcon sounds: the echo
    canceller's reference is, sample for sample, what the speaker was handed (after the
    volume), so the echo it subtracts is the echo there is."""
    from test_audio_playback import _hands_free, _ride, _words

    from device.audio.earcons import earcon
    from device.states import Earcon

    with _hands_free(monkeypatch) as (player, clock, far):
        given: list[np.ndarray] = []
        played = far.played

        def keep(samples: np.ndarray, rate: int, t_first: float, new_run: bool = False) -> None:
            given.append(samples.copy())
            played(samples, rate, t_first, new_run)

        monkeypatch.setattr(far, "played", keep)
        loud = _words(300, 440)
        player.feed(loud)
        await until(lambda: player.heard().size > 0)
        await _ride(player, clock, 0.15)
        player.volume = 0.25  # mid-reply: its rest is turned down
        player.feed(_words(300, 660))
        await _ride(player, clock, 0.3)
        player.feed(earcon(Earcon.LISTEN_START), last=True)
        await _ride(player, clock, 1.0)
        heard = player.heard()
    reference = np.concatenate(given)
    assert np.array_equal(reference[: heard.size], heard)
    quiet = heard[np.frombuffer(loud, dtype=np.int16).size :]
    assert 0 < np.abs(quiet).max() < 0.3 * np.abs(np.frombuffer(loud, dtype=np.int16)).max()


@pytest.mark.rig
@pytest.mark.parametrize("replies", [2])
def test_without_the_module_every_chunk_of_each_reply_is_kept_from_the_server(
    loopback: PulseLoopback, make_rig: Any, tmp_path: Path, replies: int
) -> None:
    """On loopback, the box's speaker heard at its microphone: without the binding nothing
    the microphone hears while the box speaks reaches the server, reply after reply, and
    one journal line says so. The microphone is never held back for quiet here
    (`pause_below_dbfs = -100`): in test_echo_e2e's fallback test the quiet gate held back
    nearly all of what a working canceller sends too (with the module, 3840 bytes of a 6 s
    reply reached the server), so "nothing reached it" barely told the gate from cancel."""
    from test_echo_e2e import ask, received_during, replies_done, start_conversation

    from rig.acoustic import AcousticPath, Room

    (tmp_path / echo.BINDING).mkdir()
    (tmp_path / echo.BINDING / "__init__.py").write_text("raise ImportError('no wheel')\n")
    with AcousticPath(loopback, Room(delay_ms=10, gain_db=-12)):
        server, daemon = start_conversation(
            make_rig, env={"PYTHONPATH": str(tmp_path)}, audio={"pause_below_dbfs": -100}
        )
        assert daemon.status()["mic_during_playback"] == "gate"
        for turn in range(1, replies + 1):
            ask(loopback, server, "What will the weather be like tomorrow?")
            replies_done(server, turn)
            daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening again")
    out = server.log.entries(direction="out")
    assert "interrupted" not in [e.kind for e in out]
    starts = [e.t for e in out if e.kind == "audio"]
    ends = [e.t for e in out if e.kind == "turn_complete"]
    assert len(ends) == replies
    for end in ends:
        start = min(t for t in starts if t > end - 7)
        assert received_during(server, start + 0.3, end - 0.3) == b""
    assert len(daemon.records(LIVE_MIC_DURING_PLAYBACK="gate")) == 1, daemon.log()


def test_the_doctor_on_a_push_to_talk_box_without_the_binding_says_hands_free_would_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default box (push-to-talk, "cancel") on 32-bit Raspberry Pi OS needs no
    canceller and the service does not look; the owner who would switch to hands-free
    learns from the doctor that the box would mute itself while it speaks, and why; the
    line still passes (nothing is wrong as the box is set)."""
    no_binding(monkeypatch)
    result = _mic_plan(Context(config(), Options(), Progress()))
    assert result.status is Status.PASS, result
    assert "while the box speaks hands-free: gate (cancel cannot run: " in result.measured
    assert result.data["mic_during_playback"] == "gate"


def test_the_doctor_says_why_the_module_cannot_run_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Push-to-talk with [audio] noise_suppression = true on 32-bit Raspberry Pi OS: the
    line warns of the missing module, and says why once, not once for noise suppression
    and again for the hands-free canceller."""
    no_binding(monkeypatch)
    ctx = Context(config(audio={"noise_suppression": True}), Options(), Progress())
    result = _mic_plan(ctx)
    assert result.status is Status.WARN, result
    assert result.measured.count("no wheel for this platform") == 1, result.measured


def test_the_doctor_on_a_push_to_talk_box_with_the_binding_says_cancel_plainly() -> None:
    result = _mic_plan(Context(config(), Options(), Progress()))
    assert result.status is Status.PASS, result
    assert "while the box speaks hands-free: cancel;" in result.measured, result.measured
    assert "cannot run" not in result.measured and "None" not in result.measured
    assert "(push-to-talk: the microphone is open only while the button is held)" in result.measured
