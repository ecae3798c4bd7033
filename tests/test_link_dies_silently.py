"""A link that dies without a word (Wi-Fi drops, a router reboots, a NAT
forgets the connection: no FIN, no RST) as the person finishes speaking.

A real black hole needs packets that vanish: the rig's stall stops reading, but its
kernel still acknowledges what the box sends. So the black-holed scenarios run in a
network namespace of their own (`unshare -rn`), whose loopback the `blackhole` qdisc
then empties both ways: the box's bytes leave and are never acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import trusted_server, until
from test_go_away import CHUNK_S, heard_ms, talking

from device.config import ButtonConfig, Config, LiveConfig, Secret
from device.live.session import LiveLink
from device.live.wire import MIC_RATE
from device.outbox import Item, Outbox
from device.states import ConnectionLost, Event, Reconnecting, ReplyAudio, SetupComplete
from rig.server.server import LiveServer

ROOT = Path(__file__).resolve().parent.parent
CHUNK = bytes(range(256)) * 5  # 40 ms of microphone audio (noise: nothing to trim)
#: "Within a few seconds": what a person takes for a hang-up, not for thinking.
NOTICED_WITHIN_S = 12.0


def _namespace_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("tc") is None:
        return False
    probe = "ip link set lo up && tc qdisc add dev lo root blackhole"
    done = subprocess.run(["unshare", "-rn", "sh", "-c", probe], capture_output=True)
    return done.returncode == 0


needs_namespace = pytest.mark.skipif(
    not _namespace_works(), reason="needs unshare -rn and tc's blackhole qdisc"
)


def _black_hole(on: bool = True) -> None:
    """From now on the namespace's loopback drops every packet, silently (no error to
    the sender: the qdisc says it went); or, `on` False, it carries them again."""
    subprocess.run(["tc", "qdisc", "add" if on else "del", "dev", "lo", "root", "blackhole"],
                   check=on)


def _loopback_up() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


async def _wait_after_black_hole(moment: str) -> tuple[float, bool, str]:
    """In the namespace: a turn goes out on a live link, which turns into a black hole at
    `moment`: "release" (with the activityEnd), "last-words" (hands-free: with the
    audioStreamEnd after them) or "thinking" (a second after the acknowledged release,
    the model at work). The seconds from then until the box knows the connection is
    gone, whether it knew a reply went with it (the state machine then plays the error
    earcon: "thinking" ends; hands-free it shows "connecting"), and the reason given."""
    push_to_talk = moment != "last-words"
    _loopback_up()
    async with LiveServer(pace=0, reply_seconds=0.2, think_seconds=60) as server:
        os.environ["SSL_CERT_FILE"] = server.ca_file
        cfg = Config(
            live=LiveConfig(base_url=server.base_url),
            button=ButtonConfig(mode="push_to_talk" if push_to_talk else "toggle"),
            api_key=Secret(server.api_key),
        )
        events: list[Event] = []
        sent: list[tuple[Item, float]] = []
        outbox = Outbox(8)
        link = LiveLink(cfg, outbox, events.append, lambda item, at: sent.append((item, at)))
        link.open(1)
        try:
            await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
            if push_to_talk:
                outbox.put("activity_start")
            for _ in range(25):  # a second of speech
                outbox.put("audio", CHUNK)
            await until(lambda: not len(outbox))
            await asyncio.sleep(0.3)  # all of it acknowledged: the link was fine till now
            if moment != "thinking":
                _black_hole()
            outbox.put("activity_end" if push_to_talk else "audio_stream_end")
            await until(lambda: sent[-1][0].kind in ("activity_end", "audio_stream_end"))
            died = sent[-1][1]
            if moment == "thinking":
                await asyncio.sleep(1.0)
                _black_hole()
                died = time.monotonic()
            gone = (Reconnecting, ConnectionLost)
            await until(lambda: any(isinstance(e, gone) for e in events), within=90)
            took = time.monotonic() - died
            lost = next(e for e in events if isinstance(e, gone))
            reply_lost = isinstance(lost, ConnectionLost) or lost.reply_lost
            return took, reply_lost, lost.reason
        finally:
            _black_hole(on=False)  # the server's close need not wait out its timeout
            await link.close()


def _in_namespace(moment: str) -> tuple[float, bool, str]:
    """Run `_wait_after_black_hole` in a network namespace of its own; its figures."""
    code = (
        "import asyncio, json, sys; sys.path[:0] = sys.argv[1:3]; "
        f"import {Path(__file__).stem} as t; "
        "print(json.dumps(asyncio.run(t._wait_after_black_hole(sys.argv[3]))))"
    )
    done = subprocess.run(
        ["unshare", "-rn", sys.executable, "-c", code, str(ROOT / "tests"), str(ROOT), moment],
        capture_output=True, text=True, timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    took, reply_lost, reason = json.loads(done.stdout.strip().splitlines()[-1])
    return float(took), bool(reply_lost), str(reason)


@needs_namespace
@pytest.mark.parametrize("moment", ["release", "last-words", "thinking"])
def test_a_link_that_dies_silently_as_the_turn_ends_is_noticed_within_seconds(
    moment: str,
) -> None:
    """The person releases the button (or stops talking) and the Wi-Fi drops in the same
    moment: no FIN, no RST, the box's last bytes never acknowledged. The box showed
    "thinking" for the whole `reply_timeout_s` (30 s) before the error earcon, and the
    liveness watch took 30 to 40 s (`dead_after_s`, checked every `keepalive_s`): the
    person took it for a model thinking hard and waited. The same when the link dies a
    moment later, while the model thinks."""
    took, reply_lost, reason = _in_namespace(moment)
    print(json.dumps({"moment": moment, "noticed_after_s": round(took, 1)}))
    assert took < NOTICED_WITHIN_S
    assert reply_lost == (moment != "last-words"), "push-to-talk: the error earcon, at once"
    assert "is acknowledged" in reason, reason  # the journal names the layer


async def test_a_model_that_thinks_past_dead_after_s_on_a_live_link_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Google Search or a tool can keep the model silent for longer than `dead_after_s`:
    the link is quiet, the service's end still answers the pings sent after
    `keepalive_s`, and the reply is still waited for. The think outlasts `dead_after_s`
    twice here: only the pongs tell the link is alive (within it, a link that never
    pinged passed too)."""
    live = {"keepalive_s": 1.0, "dead_after_s": 3.0}
    async with trusted_server(monkeypatch, pace=0, reply_seconds=0.2, think_seconds=6) as server:
        cfg = Config(
            live=LiveConfig(base_url=server.base_url, **live), api_key=Secret(server.api_key)
        )
        events: list[Event] = []
        outbox = Outbox(8)
        link = LiveLink(cfg, outbox, events.append, lambda *_: None)
        link.open(1)
        try:
            await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
            outbox.put("activity_start")
            for _ in range(25):
                outbox.put("audio", CHUNK)
            outbox.put("activity_end")
            released = time.monotonic()
            await until(lambda: any(isinstance(e, ReplyAudio) for e in events), within=15)
            assert time.monotonic() - released >= 2 * live["dead_after_s"]
        finally:
            await link.close()
    assert not [e for e in events if isinstance(e, Reconnecting | ConnectionLost)], events


async def test_speech_through_a_short_stall_of_the_link_reaches_the_service_whole_in_order(
    server: LiveServer,
) -> None:
    """A busy Wi-Fi holds the socket 1.5 s in the middle of a push-to-talk question: what
    the person said meanwhile waits in the box and goes out after it, every chunk once and
    in order, on the same connection (no reconnect, no word lost)."""
    chunks = [bytes([i, 0]) * int(MIC_RATE * CHUNK_S) for i in range(1, 31)]
    async with talking(server) as talk:
        await talk.first_turn(server)
        talk.outbox.put("activity_start")
        for i, chunk in enumerate(chunks):
            if i == 5:
                server.stall(1.5)
            talk.outbox.put("audio", chunk)
            await asyncio.sleep(CHUNK_S)
        talk.outbox.put("activity_end")
        await until(lambda: len(heard_ms(server)) == 1, within=10)
    sent = [entry.data for entry in server.entries(direction="in") if entry.kind == "audio"]
    assert sent == chunks
    assert len(server.log.connections()) == 1, "the stall was ridden out, not reconnected"
