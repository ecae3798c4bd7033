"""Where the daemon's threads meet its event loop: what crosses, and what an owner sees."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import SPEAKERPHONE, FakeParts, ListedPortAudio, card, config, running
from helpers import journal_lines, until
from test_audio_capture import _LevelPcm

from device import logs
from device.appliance import Appliance
from device.audio import capture as capture_module
from device.parts import Parts
from device.states import SetupComplete


class RealMicParts(FakeParts):
    """Fake parts, but the microphone the daemon makes, its reader a thread of its own."""

    microphone = Parts.microphone


async def test_the_microphones_silence_in_a_session_is_found_under_that_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: "Every line logged during a session carries its LIVE_SESSION". A box that
    answered a press with nothing because its microphone gave only zeros (muted) says so
    from the microphone's reader thread, outside the appliance's tasks: the owner looking
    at that session (`journalctl LIVE_SESSION=<id>`) must find the line that says why."""
    listing = ListedPortAudio(card(SPEAKERPHONE, 2))
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(capture_module, "CapturePcm", _LevelPcm)
    monkeypatch.setattr(_LevelPcm, "levels", (0,))
    monkeypatch.setattr(capture_module, "DIGITAL_SILENCE_S", 0.3)
    with journal_lines("device.audio.capture", filters=[logs.SessionField()]) as journal:
        async with running(tmp_path, parts_class=RealMicParts) as box:
            await box.ctl("press")
            box.link.deliver(SetupComplete)
            session = box.link.session_id
            await until(lambda: any("digital silence" in r["MESSAGE"] for r in journal.records))
            await box.ctl("release")
    said = [r for r in journal.records if "digital silence" in r["MESSAGE"]]
    assert session and said[0].get("LIVE_SESSION") == session, said


def test_two_volumes_set_at_once_leave_the_speaker_at_the_one_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model may call set_volume twice in one message, and each call runs in a thread
    of its own. The speaker must play the volume the box comes back with after a restart:
    it played one and kept the other on the card (the first call's slow write to the SD
    card landing after the second's)."""
    appliance = Appliance(config(), FakeParts(config(), tmp_path))
    writing, may_finish = threading.Event(), threading.Event()
    save = appliance.state_file.save

    def slow_first_write(**values: Any) -> None:
        if values.get("volume") == 0.3:  # the first call, held on the card
            writing.set()
            may_finish.wait(5)
        save(**values)

    monkeypatch.setattr(appliance.state_file, "save", slow_first_write)
    first = threading.Thread(target=appliance.set_volume, args=(0.3,))
    second = threading.Thread(target=appliance.set_volume, args=(0.6,))
    first.start()
    assert writing.wait(5)
    second.start()
    second.join(0.5)  # done by now, unless it waits for the first
    may_finish.set()
    first.join(5)
    second.join(5)
    assert appliance.speaker.volume == appliance.state_file.load()["volume"]
