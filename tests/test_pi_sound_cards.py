"""Sound cards on a real Raspberry Pi: which devices the box takes, and takes again after
a card is plugged back, with PortAudio listing what a Pi lists."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import (
    ALSA_DEFAULT,
    HDMI,
    HEADPHONES,
    HEADSET,
    RESPEAKER,
    SPEAKERPHONE,
    WEBCAM,
    Cable,
    CablePcm,
    IdlePcm,
    ListedPortAudio,
    SilentOutput,
    card,
)
from helpers import open_descriptors, until

from device.audio import capture as capture_module
from device.audio import devices as devices_module
from device.audio import keeper as keeper_module
from device.audio import playback as playback_module
from device.audio import stream as stream_module
from device.audio.capture import Capture
from device.audio.devices import AudioDeviceError, choose_device
from device.audio.keeper import STALE_S, AudioKeeper
from device.audio.playback import Playback


@pytest.mark.parametrize(
    "listed",
    [
        pytest.param((HEADPHONES, HDMI, card(SPEAKERPHONE, 2), ALSA_DEFAULT), id="pi4-lite"),
        pytest.param((HEADPHONES, HDMI, card(SPEAKERPHONE, 2)), id="pi4-desktop-pipewire"),
        pytest.param((HDMI, card(SPEAKERPHONE, 1), ALSA_DEFAULT), id="pi5-lite"),
    ],
)
def test_unset_devices_play_through_the_usb_speakerphone_not_the_jack_or_hdmi(
    listed: tuple[tuple[str, int, int, int], ...],
) -> None:
    """The breadboard profile's "system default" with a USB speakerphone plugged in: the
    microphone was the speakerphone's, the replies went to the Pi's headphone jack (or a
    screen's HDMI), and nobody heard them."""
    pa: Any = ListedPortAudio(*listed)
    assert "Jabra" in choose_device(pa, None, "input").name
    assert "Jabra" in choose_device(pa, None, "output").name


def test_unset_devices_on_a_voice_hat_are_the_hat() -> None:
    """A HAT's name says bcm2835 too (its I2S): it is no headphone jack."""
    pa: Any = ListedPortAudio(HEADPHONES, HDMI, card(RESPEAKER, 2), ALSA_DEFAULT)
    assert "seeed" in choose_device(pa, None, "output").name


def test_unset_output_stays_the_system_default_when_no_other_card_plays() -> None:
    """A USB microphone alone, and the jack (ALSA's default) as the speaker: as before."""
    pa: Any = ListedPortAudio(HEADPHONES, HDMI, card(WEBCAM, 2), ALSA_DEFAULT)
    assert choose_device(pa, None, "output").name == "default"
    assert "Webcam" in choose_device(pa, None, "input").name


def test_unset_output_with_two_other_cards_that_play_stays_the_system_default() -> None:
    """Which of two is meant is the owner's to say, not a guess."""
    pa: Any = ListedPortAudio(
        HEADPHONES, card(SPEAKERPHONE, 1), card(RESPEAKER, 2), ALSA_DEFAULT
    )
    assert choose_device(pa, None, "output").name == "default"


def test_unset_devices_stay_the_sound_servers_when_one_is_reachable() -> None:
    """Run as the desktop's own user, ALSA's "default" is PipeWire's, which holds the
    cards itself and plays where the owner chose: the raw card would be busy."""
    pipewire = ("pipewire", 64, 64, 44100)
    pa: Any = ListedPortAudio(HEADPHONES, HDMI, card(SPEAKERPHONE, 2), pipewire, ALSA_DEFAULT)
    assert choose_device(pa, None, "output").name == "default"


async def test_a_configured_index_is_not_another_microphone_after_a_replug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`input_device = 2` named the speakerphone (hw:2,0). It was unplugged; a webcam went in
    meanwhile and took card 2, and the speakerphone came back as card 3. The reopened box
    recorded from the webcam across the room, and said the microphone was back."""
    listings = iter([
        ListedPortAudio(HEADPHONES, HDMI, card(SPEAKERPHONE, 2), ALSA_DEFAULT),
        ListedPortAudio(HEADPHONES, HDMI, card(WEBCAM, 2), card(SPEAKERPHONE, 3), ALSA_DEFAULT),
    ])  # fmt: skip
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: next(listings))
    monkeypatch.setattr(capture_module, "CapturePcm", IdlePcm)
    IdlePcm.opened.clear()
    mic = Capture(lambda chunk, t: None, device=2, preroll=1)
    loop = asyncio.get_running_loop()
    mic.start(loop)
    assert "Jabra" in mic.device_name
    mic.close_stream()  # unplugged: the keeper closes it, and opens it again later
    try:
        mic.start(loop)
    except AudioDeviceError:
        pass  # not found: reported and tried again, never another device
    else:
        assert "Jabra" in mic.device_name, mic.device_name
        assert IdlePcm.opened == ["hw:2,0", "hw:3,0"]
    finally:
        mic.close_stream()


async def test_a_microphone_only_card_set_by_index_is_found_again_under_another_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`input_device = 2`: a webcam's microphone, a card that plays nothing. Its cable
    slipped and it came back as card 3: it is still the box's microphone (a microphone's
    name looked up among the devices that play found none, and the box stayed deaf)."""
    listings = iter([
        ListedPortAudio(HEADPHONES, HDMI, card(WEBCAM, 2), ALSA_DEFAULT),
        ListedPortAudio(HEADPHONES, HDMI, card(WEBCAM, 3), ALSA_DEFAULT),
    ])  # fmt: skip
    await microphone_reopened(monkeypatch, listings, device=2)
    assert IdlePcm.opened == ["hw:2,0", "hw:3,0"]


async def microphone_reopened(
    monkeypatch: pytest.MonkeyPatch, listings: Iterator[ListedPortAudio], device: int
) -> None:
    """A microphone set by index (`input_device`) opened, closed as the keeper does for a
    card that went, and opened again: each time the cards are as the next of `listings`
    lists them (IdlePcm.opened: the ALSA devices it opened)."""
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: next(listings))
    monkeypatch.setattr(capture_module, "CapturePcm", IdlePcm)
    IdlePcm.opened.clear()
    mic = Capture(lambda chunk, t: None, device=device, preroll=1)
    loop = asyncio.get_running_loop()
    mic.start(loop)
    mic.close_stream()
    try:
        mic.start(loop)
    finally:
        mic.close_stream()


async def speaker_reopened(
    monkeypatch: pytest.MonkeyPatch, listings: Iterator[ListedPortAudio], device: int
) -> Playback:
    """A speaker set by index (`output_device`) opened, closed as the keeper does for a
    card that went, and opened again: each time the cards are as the next of `listings`
    lists them (SilentOutput.opened: the indexes it opened)."""
    monkeypatch.setattr(stream_module, "open_portaudio", lambda: next(listings))
    monkeypatch.setattr(playback_module, "OutputStream", SilentOutput)
    SilentOutput.opened.clear()
    speaker = Playback(device=device)
    loop = asyncio.get_running_loop()
    speaker.start(loop)
    speaker.close_stream()
    try:
        speaker.start(loop)
    finally:
        speaker.close_stream()
    return speaker


async def test_a_configured_index_is_not_another_speaker_after_a_replug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`output_device = 2`: the speakerphone on a Pi 5 (after its two HDMI cards). A USB
    headset plugged in while it was out took card 2: the replies went into the headset
    in a drawer."""
    listings = iter([
        ListedPortAudio(HDMI, HDMI, card(SPEAKERPHONE, 2), ALSA_DEFAULT),
        ListedPortAudio(HDMI, HDMI, card(HEADSET, 2), card(SPEAKERPHONE, 3), ALSA_DEFAULT),
    ])  # fmt: skip
    speaker = await speaker_reopened(monkeypatch, listings, device=2)
    assert "Jabra" in speaker.device_name, speaker.device_name
    assert SilentOutput.opened == [2, 3]


async def test_a_play_only_card_set_by_index_is_found_again_under_another_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`output_device = 2`: a USB speaker with no microphone. A headset plugged in while it
    was out took card 2 and the speaker came back as card 3: the replies play on it (a
    speaker's name looked up among the devices that record found none)."""
    usb_speaker = ("USB2.0 Device: USB Audio (hw:{card},0)", 0, 2, 48000)
    listings = iter([
        ListedPortAudio(HDMI, HDMI, card(usb_speaker, 2), ALSA_DEFAULT),
        ListedPortAudio(HDMI, HDMI, card(HEADSET, 2), card(usb_speaker, 3), ALSA_DEFAULT),
    ])  # fmt: skip
    speaker = await speaker_reopened(monkeypatch, listings, device=2)
    assert "USB2.0 Device" in speaker.device_name, speaker.device_name
    assert SilentOutput.opened == [2, 3]


async def test_a_configured_index_among_two_identical_cards_is_found_again_after_a_reopen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two of the same cheap USB sound card: their names differ only in the hw: number, so
    the owner names the microphone by its index (`input_device = 3`). The keeper's first
    reopen (a card that hiccupped) looked it up by the name without its number, which
    both cards have: "matches several input devices", and the box stayed deaf until a
    restart."""
    listing = ListedPortAudio(HEADPHONES, HDMI, card(HEADSET, 2), card(HEADSET, 3), ALSA_DEFAULT)
    await microphone_reopened(monkeypatch, iter([listing, listing]), device=3)
    assert IdlePcm.opened == ["hw:3,0", "hw:3,0"]


async def test_a_speaker_set_by_index_among_two_identical_cards_is_found_again_after_a_reopen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same for the speaker (`output_device = 3`)."""
    listing = ListedPortAudio(HEADPHONES, HDMI, card(HEADSET, 2), card(HEADSET, 3), ALSA_DEFAULT)
    await speaker_reopened(monkeypatch, iter([listing, listing]), device=3)
    assert SilentOutput.opened == [3, 3]


async def test_an_idle_usb_speaker_unplugged_and_plugged_back_is_reopened_before_a_reply(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A USB speaker beside a HAT's microphone, its cable bumped while the box waited: the
    microphone read on, the idle speaker made no call that could fail, and the keeper saw
    nothing wrong. The next reply then went to a card that was no longer there: lost,
    with the error state, before the speaker was reopened."""
    nodes = tmp_path / "snd"
    nodes.mkdir()
    (nodes / "pcmC2D0p").touch()
    monkeypatch.setattr(playback_module, "SOUND_NODES", nodes, raising=False)
    listing = ListedPortAudio(HEADPHONES, HDMI, card(SPEAKERPHONE, 2), ALSA_DEFAULT)
    monkeypatch.setattr(stream_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(playback_module, "OutputStream", SilentOutput)
    speaker = Playback(device="Jabra")
    speaker.start(asyncio.get_running_loop())
    try:
        assert speaker.trouble(STALE_S) is None, "idle, and there"
        (nodes / "pcmC2D0p").rename(tmp_path / "gone")  # unplugged (its inode kept in use,
        # as devtmpfs never hands a node's number to the next) ...
        assert speaker.trouble(STALE_S) is not None
        (nodes / "pcmC2D0p").touch()  # ... and plugged back: a new card, a new node
        assert speaker.trouble(STALE_S) is not None
        speaker.close_stream()  # the keeper reopens it
        speaker.start(asyncio.get_running_loop())
        (nodes / "pcmC2D0p").chmod(0o600)  # a login's ACLs: the same card
        assert speaker.trouble(STALE_S) is None
    finally:
        speaker.close_stream()


def own_threads() -> list[str]:
    """The threads alive, but the event loop's worker pool (it grows to its size as asked)."""
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith("asyncio_"))


PLUGS = 8
#: A plug's journal lines: the microphone stopped, the keeper's failure for each device,
#: each back, each started.
LINES_A_PLUG = 7


async def test_a_flapping_cable_costs_no_threads_files_or_journal_lines_per_plug(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Unplugged and plugged back again and again: the box is back each time, with the
    same threads and open files, and a few journal lines a plug."""
    cable = CablePcm.cable = Cable()
    monkeypatch.setattr(capture_module, "open_portaudio", cable.listing)
    monkeypatch.setattr(capture_module, "CapturePcm", CablePcm)
    monkeypatch.setattr(stream_module, "open_portaudio", cable.listing)
    monkeypatch.setattr(playback_module, "OutputStream", SilentOutput)
    monkeypatch.setattr(capture_module, "IDLE_READ_MS", 20)
    monkeypatch.setattr(keeper_module, "REOPEN_MAX_S", 0.08)
    caplog.set_level(logging.INFO, logger="device.audio")
    mic = Capture(lambda chunk, t: None, device="Jabra", preroll=1)
    speaker = Playback(device="Jabra")
    keeper = AudioKeeper({"microphone": mic, "speaker": speaker}, lambda e: None, 0.01,
                         hardware=cable.hardware)  # fmt: skip
    await keeper.open()
    keeping = asyncio.create_task(keeper.keep())
    try:
        threads, files = own_threads(), open_descriptors()
        caplog.clear()
        for _ in range(PLUGS):
            cable.plugged = False
            await until(lambda: keeper.failures, within=3)
            await asyncio.sleep(0.05)
            cable.plugged, cable.plugs = True, cable.plugs + 1
            await until(lambda: not keeper.failures, within=3)
            await until(lambda: mic.running, within=3)
        assert own_threads() == threads
        assert open_descriptors() == files
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) <= PLUGS * LINES_A_PLUG, lines
    finally:
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        await keeper.close()


def test_a_card_another_program_holds_is_said_to_be_busy_not_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PortAudio leaves out a card it cannot open while it lists them: on Raspberry Pi OS
    Desktop, the logged-in user's PipeWire holds the USB card. The journal and the doctor
    said "no input device matches 'USB Audio'" and "Plug the device in" for a card
    plugged in all along."""
    (tmp_path / "cards").write_text(
        " 0 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones\n"
        "                      bcm2835 Headphones\n"
        " 2 [Device         ]: USB-Audio - USB Audio Device\n"
        "                      C-Media Electronics Inc. USB Audio Device at usb-xhci-hcd.0-1\n"
    )
    (tmp_path / "pcm").write_text(
        "00-00: bcm2835 Headphones : bcm2835 Headphones : playback 8\n"
        "02-00: USB Audio : USB Audio : playback 1 : capture 1\n"
    )
    monkeypatch.setattr(devices_module, "ASOUND", tmp_path, raising=False)
    pa: Any = ListedPortAudio(HEADPHONES, HDMI)
    with pytest.raises(AudioDeviceError) as err:
        choose_device(pa, "USB Audio", "input")
    assert "another program" in err.value.summary
    with pytest.raises(AudioDeviceError) as err:
        choose_device(pa, "Jabra", "input")
    assert "another program" not in err.value.summary, "not there at all: not busy"
