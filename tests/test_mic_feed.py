"""The end of a push-to-talk turn: the microphone's last chunks and nothing after them."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from device.audio import pcm
from device.config import AudioConfig
from device.mic_feed import MicFeed
from device.outbox import Outbox

CHUNK_S = 0.04


def sent_audio(box: Outbox) -> list[bytes]:
    items = iter(box.get_nowait, None)
    return [item.data for item in items if item.kind == "audio"]  # type: ignore[misc]


async def test_the_turn_ends_with_the_chunk_that_holds_the_release() -> None:
    box = Outbox(hold_s=5)
    feed = MicFeed(AudioConfig(), box)
    feed.start([])
    loop = asyncio.get_running_loop()
    released = loop.time()
    # The card hands over chunks a period apart; the ones after the release still
    # carry what was said before it, up to the one arriving after its latency.
    for n in range(5):
        loop.call_later(CHUNK_S * n, feed.chunk, b"%d_" % n, released + CHUNK_S * n)
    await feed.finish(released + 0.1)
    await asyncio.sleep(CHUNK_S * 3)  # the chunks after the end keep arriving

    assert sent_audio(box) == [b"0_", b"1_", b"2_", b"3_"]


async def test_a_silent_microphone_ends_the_turn_after_the_wait() -> None:
    box = Outbox(hold_s=5)
    feed = MicFeed(AudioConfig(chunk_ms=40), box)
    feed.start([])
    loop = asyncio.get_running_loop()
    started = loop.time()
    await feed.finish(started + 0.05)
    feed.chunk(b"late", started + 0.4)

    assert 0.27 < loop.time() - started < 1.0, "two 40 ms chunks and FINISH_SLACK_S"
    assert sent_audio(box) == []


async def test_a_paused_microphone_tells_the_service_once_until_audio_flows_again() -> None:
    box = Outbox(hold_s=5)
    feed = MicFeed(AudioConfig(chunk_ms=40), box)
    feed.start([])
    feed.chunk(b"speech", 0.0, )
    feed.paused()
    feed.paused()
    feed.chunk(b"more", 2.0, )
    feed.paused()
    kinds = [item.kind for item in iter(box.get_nowait, None)]
    assert kinds == ["audio", "audio_stream_end", "audio", "audio_stream_end"]
    gate = feed.pause_gate()
    assert gate is not None and gate.pause_after == 25, "a second of 40 ms chunks"
    always = MicFeed(AudioConfig(chunk_ms=40, pause_below_dbfs=-100), box)
    assert always.pause_gate() is None, "-100 dBFS: digital silence is sent too"


async def test_gated_while_the_model_speaks_the_service_hears_the_stream_pause_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hands-free with "gate": nothing of what the box hears while it speaks goes out (the
    capture, muted, hands over nothing at all), and a second in the service is told the
    stream paused; a reply shorter than that leaves the stream as it was."""
    monkeypatch.setattr("device.mic_feed.STREAM_PAUSE_S", 0.1)
    box = Outbox(hold_s=5)
    feed = MicFeed(AudioConfig(mic_during_playback="gate"), box)
    feed.start([])
    loop = asyncio.get_running_loop()
    gated_at = loop.time()
    feed.gate(True)
    feed.chunk(b"own voice", 0.0)  # one the capture handed over as the gate came
    # A short reply: its end is due before the pause, and a loop that gets to both late
    # (a busy machine) still runs them in that order.
    loop.call_at(gated_at + 0.05, feed.gate, False)
    await asyncio.sleep(0.2)
    assert [item.kind for item in iter(box.get_nowait, None)] == []
    feed.gate(True)
    await asyncio.sleep(0.15)  # due after the pause, whenever the loop gets to them
    feed.gate(False)
    feed.chunk(b"speech", 1.0)
    kinds = [item.kind for item in iter(box.get_nowait, None)]
    assert kinds == ["audio_stream_end", "audio"]


@pytest.mark.parametrize("mode", ["cancel", "attenuate"])
async def test_talking_over_the_box_is_never_told_to_the_service_as_a_pause(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """With "cancel" or "attenuate" the microphone streams on while the box speaks: an
    audioStreamEnd then would end the person's turn at the service mid-sentence. Only
    "gate" (nothing sent) tells the service the stream paused."""
    monkeypatch.setattr("device.mic_feed.STREAM_PAUSE_S", 0.05)
    box = Outbox(hold_s=5)
    feed = MicFeed(AudioConfig(mic_during_playback=mode), box)  # type: ignore[arg-type]
    feed.start([])
    feed.gate(True)
    for n in range(5):  # they talk over the reply, a chunk every 40 ms
        feed.chunk(tone(-20), n * CHUNK_S)
        await asyncio.sleep(CHUNK_S)
    kinds = [item.kind for item in iter(box.get_nowait, None)]
    assert kinds == ["audio"] * 5, "the service was told the stream paused while it flowed"


async def test_attenuated_what_the_box_hears_while_it_speaks_goes_out_turned_down() -> None:
    """With "attenuate" the microphone streams on while the box speaks, `attenuation_db`
    quieter: at full level the service hears the box's own voice as the person's and the
    reply interrupts itself. Listening, it goes out as heard."""
    box = Outbox(hold_s=5)
    feed = MicFeed(AudioConfig(mic_during_playback="attenuate", attenuation_db=30), box)
    feed.start([])
    feed.gate(True)
    feed.chunk(tone(-20), 0.0)
    feed.gate(False)
    feed.chunk(tone(-20), 1.0)
    speaking, listening = (pcm.rms_dbfs(data) for data in sent_audio(box))
    assert speaking == pytest.approx(-50, abs=0.5), "turned down by attenuation_db"
    assert listening == pytest.approx(-20, abs=0.5)


async def test_cancelling_the_microphone_stays_open_while_the_model_speaks() -> None:
    box = Outbox(hold_s=5)
    feed = MicFeed(AudioConfig(mic_during_playback="cancel"), box)
    feed.start([])
    feed.gate(True)
    feed.chunk(b"a person", 0.0)
    kinds = [item.kind for item in iter(box.get_nowait, None)]
    assert kinds == ["audio"]


@pytest.mark.parametrize("mode", ["cancel", "attenuate", "open"])
async def test_talking_over_the_box_is_told_once_a_syllable_long_and_only_when_cancelled(
    mode: str,
) -> None:
    """With "cancel" what the microphone hears while the box speaks is the person: speech
    held TALK_OVER_S is reported, once per stretch, and never a click or the quiet the
    canceller leaves. Attenuated or open, the box's own voice would be taken for theirs."""
    told: list[float] = []
    box = Outbox(hold_s=5)
    cfg = AudioConfig(mic_during_playback=mode, speech_dbfs=-40)  # type: ignore[arg-type]
    feed = MicFeed(cfg, box, on_talk_over=lambda: told.append(now))
    loud, quiet = tone(-20), tone(-55)
    feed.start([])
    feed.gate(True)
    now = 0.0
    for n, chunk in enumerate([loud, quiet, loud, loud, quiet, loud, loud, loud, loud, loud]):
        now = n * CHUNK_S
        feed.chunk(chunk, now)
    feed.gate(False)
    feed.gate(True)  # the next reply: told again
    for n in range(5):
        now = 1.0 + n * CHUNK_S
        feed.chunk(loud, now)
    feed.gate(False)
    for n in range(5):  # listening: the service hears them as it does any speech
        feed.chunk(loud, 2.0 + n * CHUNK_S)
    assert told == ([5 * CHUNK_S + 3 * CHUNK_S, 1.0 + 3 * CHUNK_S] if mode == "cancel" else [])


def tone(dbfs: float) -> bytes:
    """A 40 ms chunk of a 16 kHz sine at `dbfs` RMS."""
    t = np.arange(640) / 16000
    return pcm.from_float(np.sin(2 * np.pi * 300 * t) * pcm.db_to_amplitude(dbfs) * np.sqrt(2))


async def test_speech_is_told_twice_a_second_and_an_utterance_only_after_a_pause() -> None:
    """Hands-free, a person starting to talk wakes a reconnect's wait as a press does: told
    once per utterance (after a second without speech), not at every report, so that a
    voice that never stops (a television) cannot have the box try every half second."""
    told: list[tuple[float, bool]] = []
    feed = MicFeed(AudioConfig(speech_dbfs=-40), Outbox(hold_s=5),
                   on_speech=lambda starts: told.append((now, starts)))  # fmt: skip
    loud, quiet = tone(-20), tone(-55)
    feed.start([])
    talk = [loud] * 40 + [quiet] * 20 + [loud] * 5 + [quiet] * 30 + [loud] * 5
    for n, chunk in enumerate(talk):
        now = round(n * CHUNK_S, 2)
        feed.chunk(chunk, now)
    assert told == [(0.0, True), (0.52, False), (1.04, False), (1.56, False), (2.4, False),
                    (3.8, True)]  # fmt: skip


async def test_a_word_that_starts_softly_is_told_at_once_as_someone_starting_to_talk() -> None:
    """A word's soft start (told as a soft voice) just before its loud part: the loud part
    is told at once, as an utterance starting (it wakes a reconnect's wait), not held back
    half a second behind the soft report and then taken for more of the same."""
    told: list[tuple[float, bool]] = []
    feed = MicFeed(AudioConfig(speech_dbfs=-40), Outbox(hold_s=5),
                   on_speech=lambda starts: told.append((now, starts)),
                   on_soft_voice=lambda: None)  # fmt: skip
    feed.start([])
    for n, chunk in enumerate([tone(-70)] * 5 + [tone(-45)] + [tone(-20)] * 5):
        now = round(n * CHUNK_S, 2)
        feed.chunk(chunk, now)
    assert told == [(0.24, True)]


async def test_a_release_already_past_ends_the_turn_with_the_held_chunk_that_holds_it() -> None:
    """A press and its release both taken late: what the capture held from the press's
    edge goes out up to the chunk holding the release, and nothing after it, held or new;
    the release then waits for nothing."""
    box = Outbox(hold_s=5)
    feed = MicFeed(AudioConfig(chunk_ms=40), box)
    held = [(b"%d_" % n, 1.0 + CHUNK_S * n) for n in range(10)]
    feed.start(held, until=1.0 + CHUNK_S * 5.5)
    feed.chunk(b"later", 2.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await feed.finish(1.0 + CHUNK_S * 5.5)
    assert loop.time() - started < 0.2  # not the wait for a late chunk (0.28 s)
    assert sent_audio(box) == [b"0_", b"1_", b"2_", b"3_", b"4_", b"5_", b"6_"]
    feed.start([], until=None)
    feed.chunk(b"next", 3.0)
    assert sent_audio(box) == [b"next"]


def test_microphone_overflows_are_one_journal_line_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Said at most once a minute: the line a struggling box gives, not one a click."""
    feed = MicFeed(AudioConfig(), Outbox(5))
    with caplog.at_level(logging.WARNING):
        for count in range(1, 4):  # three drops in one reply: one line, the first count
            feed.overflowed(count)
    said = [r for r in caplog.records if "microphone overflow" in r.getMessage()]
    assert [r.__dict__["LIVE_MIC_OVERFLOWS"] for r in said] == [1]


def test_a_press_taken_late_past_a_small_hold_says_its_oldest_words_went(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A press taken three seconds late (the camera switching off) hands over what the
    capture held at once: past `hold_s = 2` the oldest went without a journal line, where
    every chunk past it after that says the bound."""
    box = Outbox(hold_s=2)
    feed = MicFeed(AudioConfig(hold_s=2.0, chunk_ms=40), box)
    chunk = bytes(int(16000 * 2 * CHUNK_S))
    held = [(chunk, 100.0 + CHUNK_S * n) for n in range(78)]  # 3.1 s
    with caplog.at_level(logging.WARNING):
        feed.start(held)
    bounds = [r for r in caplog.records if getattr(r, "LIVE_BOUND", None) == "outbox_audio"]
    assert len(bounds) == 1, caplog.text
    assert len(b"".join(sent_audio(box))) <= 2 * 16000 * 2
