"""Behaviour a manual mutation pass found unguarded: each test fails with one mutation.

Each says what a person at the box would notice if the line it guards went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.genai import types
from helpers import until

from device import states as s
from device.audio import pcm
from device.audio.echo import RATE, FarEnd
from device.audio.playback import RATE as SPEAKER_RATE
from device.audio.playback import Playback
from device.config import AudioConfig, Config, Secret
from device.control import ControlServer
from device.control_client import request
from device.live.session import LiveLink
from device.mic_feed import MicFeed
from device.outbox import TEXTS_LIMIT, Outbox, TextsWaiting
from device.states import Event, Machine, SetupComplete, State
from device.turns import TurnLog

T0 = 1000.0


class _Device:
    """An output stream that keeps what it was handed: what the speaker sounded."""

    frame_bytes = 2
    output_latency = 0.0

    def __init__(self) -> None:
        self.active = False
        self.written = bytearray()
        self.lock = threading.Lock()

    def start(self) -> None:
        self.active = True

    def write(self, frames: bytes) -> bool:
        with self.lock:
            self.written += frames
        return False

    def stop(self) -> None:
        self.active = False

    abort = stop

    def is_active(self) -> bool:
        return self.active

    def close(self) -> None:
        self.active = False


class _Speaker(Playback):
    """Playback on one fake mono output stream at the reply's rate."""

    def __init__(self) -> None:
        super().__init__()
        self.device = _Device()

    def _open(self, pa: object) -> _Device:  # type: ignore[override]
        self.device_rate, self.channels = SPEAKER_RATE, 1
        return self.device

    def heard(self) -> np.ndarray:
        with self.device.lock:
            return np.frombuffer(bytes(self.device.written), dtype=np.int16)


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
        feed.chunk(pcm.from_float(pcm.tone(300, 40, 16000)), n * 0.04)
        await asyncio.sleep(0.04)
    kinds = [item.kind for item in iter(box.get_nowait, None)]
    assert kinds == ["audio"] * 5, "the service was told the stream paused while it flowed"


async def test_half_volume_sounds_half_as_loud() -> None:
    """The volume is squared (set_volume at 50% is -12 dB, half as loud to the ear): a
    linear scale makes the lower half of the range barely quieter than full."""
    player = _Speaker()
    player.start()
    try:
        player.volume = 0.5
        tone = pcm.from_float(0.5 * pcm.tone(440, 200, SPEAKER_RATE))
        player.feed(tone)
        await asyncio.wait_for(player.wait_drained(), 5)
    finally:
        player.stop()
    played = player.heard().astype(np.float64)
    fed = np.frombuffer(tone, dtype=np.int16).astype(np.float64)
    assert np.max(np.abs(played)) == pytest.approx(np.max(np.abs(fed)) * 0.25, rel=0.01)


async def test_a_barge_in_silences_the_speaker_for_good() -> None:
    """clear() (a press over the reply, an interruption) drops all that was queued: the
    rest of the reply never plays after it."""
    player = _Speaker()
    player.start()
    try:
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 3000, SPEAKER_RATE)))
        await until(lambda: player.heard().size > 0)
        at_clear = player.heard().size
        player.clear()
        await asyncio.sleep(0.5)  # the reply would have played on for as long
        # At most the piece the writer was handing over as the clear came (DEVICE_S).
        assert player.heard().size - at_clear < 0.2 * SPEAKER_RATE, "the reply played on"
    finally:
        player.stop()


def test_far_end_reads_silence_in_a_pause_after_its_history_wrapped() -> None:
    """A pause in what the speaker played, once a whole history has played before it, is
    silence to the echo canceller, not the box's voice from a second before: that stale
    voice would be 'cancelled' out of a person speaking in the pause."""
    far_end = FarEnd(history_s=1.0)
    far_end.played(np.full(RATE, 1000, dtype=np.int16), RATE, T0)  # a whole second
    far_end.played(np.full(160, 2000, dtype=np.int16), RATE, T0 + 1.5)  # after a pause
    assert not far_end.heard(T0 + 1.2, 160).any()
    assert (far_end.heard(T0 + 1.5, 160) == 2000).all()


async def test_a_stopping_server_leaves_a_newer_servers_socket_in_place(tmp_path: Path) -> None:
    """A daemon that stops after a newer one has put its own socket in place (its file
    removed and made anew) must not remove the newer one's: `ctl` would then find no daemon
    while one runs."""
    path = tmp_path / "ctl.sock"
    older = ControlServer(path, _status_only)
    await older.start()
    path.unlink()  # its file gone (a tmpfiles clean-up, an owner) ...
    async with ControlServer(path, _status_only):  # ... and a newer daemon listens there
        await older.aclose()
        answer = await asyncio.to_thread(request, path, "status")
        assert answer == {"ok": True, "state": "idle"}


async def _status_only(req: dict[str, Any]) -> dict[str, Any]:
    return {"state": "idle"}


class _HandleGiver:
    """Each connection is set up, hands out a resumption handle and stays open; the
    handle each setup asked to resume is kept."""

    session_id = "s"

    def __init__(self) -> None:
        self.aio = self.live = self
        self.resumed: list[str | None] = []

    @contextlib.asynccontextmanager
    async def connect(self, **options: Any) -> AsyncIterator[_HandleGiver]:
        self.resumed.append(options["config"].session_resumption.handle)
        yield self

    async def receive(self) -> AsyncIterator[types.LiveServerMessage]:
        update = types.LiveServerSessionResumptionUpdate(new_handle="h1", resumable=True)
        yield types.LiveServerMessage(session_resumption_update=update)
        await asyncio.Event().wait()

    async def close(self) -> None: ...


async def test_a_conversation_after_a_hang_up_starts_afresh_not_resuming_the_last() -> None:
    """The next press after a hang-up is a new conversation: resuming the last one's handle
    brought back what was said before (the owner hung up on it), or, the service having
    forgotten it, failed the first connection (the error state at a press)."""
    service = _HandleGiver()
    link = LiveLink(Config(api_key=Secret("AIza-test")), Outbox(5), on_event=lambda e: None,
                    on_sent=lambda i, t: None)  # fmt: skip
    link._client = service  # type: ignore[assignment]
    link.open(1)
    try:
        await until(lambda: link._handle == "h1")  # the service gave the session a handle
        await link.close()  # the hang-up
        link.open(2)  # the next press
        await until(lambda: len(service.resumed) == 2)
    finally:
        await link.close()
    assert service.resumed == [None, None]


def test_texts_dropped_with_a_session_no_longer_count_against_the_bound() -> None:
    """Text turns that waited for a connection that never came are dropped with it: still
    counted, every later `ctl text` was refused as busy for as long as the daemon ran."""
    box = Outbox(hold_s=5)
    texts = TextsWaiting(box)
    for n in range(TEXTS_LIMIT):
        assert texts.admit() is None
        texts.taken()
        box.put("text", f"note {n}")
    assert texts.admit() is not None, "the bound holds while they wait"
    box.clear()  # the session they waited for failed (DropOutbox)
    assert texts.admit() is None


class _FailsFirst:
    """The session's first connection fails at once (an HTTP 503, a reset); the next is
    set up and stays open."""

    session_id = "s"

    def __init__(self) -> None:
        self.aio = self.live = self
        self.tries = 0

    @contextlib.asynccontextmanager
    async def connect(self, **_: Any) -> AsyncIterator[_FailsFirst]:
        self.tries += 1
        if self.tries == 1:
            raise ConnectionError("503 service unavailable")
        yield self

    async def receive(self) -> AsyncIterator[types.LiveServerMessage]:
        await asyncio.Event().wait()
        yield types.LiveServerMessage()  # an async generator, as the SDK's

    async def close(self) -> None: ...


async def test_a_first_connection_that_fails_at_once_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hiccup at the press (a 503, a reset) is tried once more: without it the press
    ended in the error state, the person's question dropped."""
    monkeypatch.setattr("device.live.session.FIRST_RETRY_S", 0.01)
    service, events = _FailsFirst(), list[Event]()
    link = LiveLink(Config(api_key=Secret("AIza-test")), Outbox(5), on_event=events.append,
                    on_sent=lambda i, t: None)  # fmt: skip
    link._client = service  # type: ignore[assignment]
    link.open(1)
    try:
        await until(lambda: events)
    finally:
        await link.close()
    assert events == [SetupComplete(session=1)] and service.tries == 2


def test_the_services_interruption_after_a_press_leaves_the_go_ahead_beep_playing() -> None:
    """A press over the reply silenced it and played its "go ahead" beep; the service's
    Interrupted for that reply comes a moment later and must not clear the speaker again:
    the beep was cut short, and the person could not tell the box was listening."""
    m = Machine()
    for event in (s.Pressed(), s.SetupComplete(session=1), s.Released(),
                  s.ReplyAudio(session=1, pcm=b"\x01\x00"), s.Pressed()):  # fmt: skip
        m, _ = s.step(m, event)
    assert m.state is State.LISTENING and m.held
    m, actions = s.step(m, s.Interrupted(session=1))
    assert not any(isinstance(a, s.ClearPlayback) for a in actions)


async def test_the_drain_waits_for_what_was_fed_to_play() -> None:
    """A reply fed after the last one drained is not drained until it has played: the
    machine's AwaitDrain ended the turn at once, the LEDs idle (hands-free, the microphone
    open to the box's own voice) while the reply still played."""
    player = _Speaker()
    player.start()
    try:
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 100, SPEAKER_RATE)))
        await asyncio.wait_for(player.wait_drained(), 5)  # the last reply, played out
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 300, SPEAKER_RATE)))
        assert not player.drained.is_set(), "drained before a sample of it played"
        await asyncio.wait_for(player.wait_drained(), 5)
        assert player.heard().size >= 0.4 * SPEAKER_RATE
    finally:
        player.stop()


async def test_a_barge_in_counts_as_drained() -> None:
    """After clear() nothing is left to play: whatever waits for the drain (the turn's
    end) goes on at once, not after the next reply someone may never ask for."""
    player = _Speaker()
    player.start()
    try:
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 3000, SPEAKER_RATE)))
        await until(lambda: player.heard().size > 0)
        player.clear()
        await asyncio.wait_for(player.wait_drained(), 1)
    finally:
        player.stop()


def test_the_wait_for_the_reply_is_timed_to_its_first_audio_not_its_last() -> None:
    """`ctl status` and the journal's turn line say how long the answer took to start:
    every later part of the reply moved it, and a 30 s reply read as a 30 s wait."""
    turns = TurnLog()
    turns.start(10.0, "s")
    turns.released(11.0)
    for t in (11.5, 12.0, 40.0):  # the reply's parts as they come
        turns.reply_received(t)
    turns.finish(41.0, "s")
    (turn,) = turns.recent()
    assert turn["release_to_first_reply_ms"] == 500.0
