"""The outbox: order kept, audio bounded with the loss counted, newest video frame wins."""

from __future__ import annotations

import asyncio
import types

from device import logs
from device.logs import Overflow
from device.outbox import BYTES_PER_SECOND, TEXTS_LIMIT, Outbox, TextsWaiting


def drain(box: Outbox) -> list[tuple[str, object]]:
    items = []
    while (item := box.get_nowait()) is not None:
        items.append((item.kind, item.data))
    return items


def test_order_is_kept_across_kinds() -> None:
    box = Outbox(hold_s=5)
    box.put("activity_start")
    box.put("audio", b"\x01\x00" * 10)
    box.put("audio", b"\x02\x00" * 10)
    box.put("activity_end")
    assert [k for k, _ in drain(box)] == ["activity_start", "audio", "audio", "activity_end"]


def test_audio_over_the_bound_drops_the_oldest_and_counts_it() -> None:
    box = Outbox(hold_s=1)
    chunk = BYTES_PER_SECOND // 10  # 100 ms
    box.put("activity_start")
    dropped = [box.put("audio", bytes([i]) * chunk) for i in range(12)]
    assert dropped == [0] * 10 + [chunk, chunk]
    assert box.held_ms == 1000
    items = drain(box)
    assert items[0] == ("activity_start", None)  # markers are never dropped
    assert [data[0] for _, data in items[1:]] == list(range(2, 12))


def test_pauses_between_utterances_dropped_over_an_outage_are_kept_as_one() -> None:
    """Hands-free through a long outage, a person talking in bursts: the audio was held
    to its bound, but a marker of each pause stayed (600 utterances, 600 markers sent in
    a burst ahead of the speech kept)."""
    box = Outbox(hold_s=1)
    utterance = b"\x01" * (BYTES_PER_SECOND // 4)  # a quarter of a second
    for _ in range(600):
        box.put("audio", utterance)
        box.put("audio_stream_end")
    kinds = [kind for kind, _ in drain(box)]
    assert kinds.count("audio") == 4
    assert kinds.count("audio_stream_end") <= 5, kinds
    assert kinds[-2:] == ["audio", "audio_stream_end"]
    assert "audio_stream_end,audio_stream_end" not in ",".join(kinds)


def test_a_frame_waits_until_nothing_else_does_and_the_newest_wins() -> None:
    box = Outbox(hold_s=5)
    box.put("video", b"frame-1")
    box.put("activity_start")
    box.put("audio", b"\x00\x00")
    box.put("video", b"frame-2")
    assert len(box) == 3
    assert drain(box) == [("activity_start", None), ("audio", b"\x00\x00"), ("video", b"frame-2")]
    box.put("video", b"frame-3")
    box.put("activity_end")
    assert drain(box) == [("activity_end", None), ("video", b"frame-3")]


def test_a_frame_put_back_after_a_failed_send_loses_to_a_newer_one() -> None:
    box = Outbox(hold_s=5)
    box.put("video", b"old")
    failed = box.get_nowait()
    assert failed is not None
    box.put("video", b"new")
    box.push_front(failed)
    assert drain(box) == [("video", b"new")]


def test_an_item_that_failed_to_send_goes_first_next_time() -> None:
    box = Outbox(hold_s=5)
    box.put("audio", b"a" * 4)
    box.put("audio", b"b" * 4)
    first = box.get_nowait()
    assert first is not None
    box.push_front(first)
    assert [d for _, d in drain(box)] == [b"a" * 4, b"b" * 4]
    assert box.held_ms == 0


async def test_get_waits_for_the_next_item() -> None:
    box = Outbox(hold_s=5)
    waiter = asyncio.create_task(box.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    box.put("activity_end")
    item = await asyncio.wait_for(waiter, 1)
    assert item.kind == "activity_end"


def test_texts_past_the_bound_are_refused_until_one_goes(caplog, monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(logs, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    box = Outbox(hold_s=5)
    texts = TextsWaiting(box)
    for i in range(TEXTS_LIMIT):  # half still on their way to the machine, half in the box
        assert texts.admit() is None
        if i % 2:
            texts.taken()
            box.put("text", f"note {i}")
    for _ in range(3):
        assert "busy" in (texts.admit() or "")
    box.put("audio", b"\x01\x00" * 10)
    assert box.get_nowait() is not None  # a text went out: there is room for one more
    assert texts.admit() is None
    clock[0] = Overflow.EVERY_S  # passed again a minute later: said again
    assert texts.admit() is not None
    assert [r.LIVE_BOUND for r in caplog.records if hasattr(r, "LIVE_BOUND")] == ["texts"] * 2


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


def test_a_frame_on_its_way_at_the_release_is_not_put_back_for_the_next_connection() -> None:
    """A frame being sent as the button comes up (drop_frame), whose connection then ends
    (a goAway, a drop): put back, it went out on the next connection after the turn."""
    outbox = Outbox(5)
    outbox.put("video", b"frame")
    on_its_way = outbox.get_nowait()
    assert on_its_way is not None
    outbox.drop_frame()  # the release
    outbox.push_front(on_its_way)  # the connection died under it
    assert outbox.get_nowait() is None


def test_what_a_dead_connection_failed_to_send_goes_first_next_time() -> None:
    """Nothing dropped in between: put back, it is the next connection's first."""
    outbox = Outbox(5)
    outbox.put("audio", b"\x01\x00" * 320)
    outbox.put("audio", b"\x02\x00" * 320)
    on_its_way = outbox.get_nowait()
    assert on_its_way is not None
    outbox.push_front(on_its_way)
    again = outbox.get_nowait()
    assert again is not None and again.data == b"\x01\x00" * 320
