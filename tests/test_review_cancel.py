"""Review (hands-free with "cancel"): what a Pi owner notices when the echo canceller's
module fails, and what the far end hears."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from fakes import CHUNK, DeviceFreeCapture, FakeParts, config, running

from device.audio import echo
from device.audio.echo import FRAME, RATE, Canceller, FarEnd
from device.doctor.audio import _mic_plan
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.states import ReplyAudio, SetupComplete

REPLY = b"\x01\x02" * 24000  # 1 s at 24 kHz


def failing_binding(monkeypatch: pytest.MonkeyPatch, works_for: int) -> None:
    """pywebrtc-audio that builds its processors and cleans `works_for` blocks (of all
    of them), then fails (a native error surfacing as an exception mid-conversation)."""
    module = types.ModuleType(echo.BINDING)
    calls = 0

    class AudioProcessor:
        def __init__(self, **_: object) -> None: ...

        def process(self, near: np.ndarray, far: np.ndarray | None = None) -> np.ndarray:
            nonlocal calls
            calls += 1
            if calls > works_for:
                raise RuntimeError("ProcessStream failed: -11")
            return near.copy()

        def reset(self) -> None: ...

    module.AudioProcessor = AudioProcessor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, echo.BINDING, module)


def test_a_module_that_fails_mid_conversation_leaves_the_microphone_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Today the exception stops the microphone's reader: the keeper reopens both devices,
    the next forwarded block fails again, and a hands-free box is deaf for good (an error
    state every time someone talks to it). The audio must go on as recorded instead."""
    failing_binding(monkeypatch, works_for=10)
    far = FarEnd()
    far.played(np.full(24000 * 10, 3000, dtype=np.int16), 24000, 0.0)
    canceller = Canceller(far)
    block = 4 * FRAME
    rng = np.random.default_rng(1)
    recorded = rng.integers(-2000, 2000, 50 * block).astype(np.int16)
    out = []
    for i in range(50):
        out.append(canceller.process(recorded[i * block : (i + 1) * block], i * block / RATE))
    went_out = np.concatenate(out)
    assert canceller.failed
    # Nothing lost, nothing repeated: what went out ends as recorded, in step with it.
    assert went_out.size == recorded.size
    assert np.array_equal(went_out[-20 * block :], recorded[-20 * block :])


async def test_after_the_module_fails_the_box_gates_its_microphone_while_it_speaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With the canceller gone mid-run, "cancel" would send the box's own voice to the
    service: it would interrupt itself at every reply. It falls back to the gate, as a box
    without the module does, at once (the reply playing now included)."""
    failing_binding(monkeypatch, works_for=1)  # the check at start passes
    far = FarEnd()
    far.played(np.full(24000 * 30, 3000, dtype=np.int16), 24000, time.monotonic() - 1)

    class Parts(FakeParts):
        def microphone(self, on_chunk, on_overflow, preroll, on_pause):  # type: ignore[no-untyped-def]
            capture = DeviceFreeCapture(
                on_chunk,
                chunk_ms=40,
                preroll=preroll,
                on_pause=on_pause,
                cleaner=Canceller(far),
            )
            return self._keep("mic", capture)

    cfg = config(button={"mode": "toggle"}, audio={"chunk_ms": 40})
    async with running(tmp_path, cfg, parts_class=Parts) as box:
        assert box.appliance.mic_plan.mic_during_playback == "cancel"
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(ReplyAudio, pcm=REPLY)
        await box.settle()
        mic = box.parts.made["mic"]
        assert box.state == "speaking" and mic._closely
        box.link.sent()  # what went out before it spoke
        mic.record(CHUNK)  # the box's own voice: the module fails on it
        await box.settle()
        assert box.appliance.mic_plan.mic_during_playback == "gate"
        assert mic._muted, "the rest of the reply is kept from the service"
        for _ in range(10):
            mic.record(CHUNK)
        await box.settle()
        audio = [item for item in box.link.sent() if item.kind == "audio"]
        assert len(audio) <= 1, "of the box's own voice, at most the chunk it failed on"
        assert box.state == "speaking", "it did not interrupt itself"
    said = [r for r in caplog.records if getattr(r, "LIVE_MIC_DURING_PLAYBACK", None)]
    assert len(said) == 1 and "ProcessStream failed" in said[0].getMessage()
    assert said[0].LIVE_MIC_DURING_PLAYBACK == "gate"


def test_the_doctor_says_so_when_the_module_fails_on_audio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The doctor puts a frame through the module as the service would: one that builds
    but fails on it is no "AEC3 ready"."""
    failing_binding(monkeypatch, works_for=1)  # the check of the platform passes
    ctx = Context(config(button={"mode": "toggle"}), Options(), Progress())
    result = _mic_plan(ctx)
    assert result.status is not Status.PASS
    assert "ProcessStream failed" in result.measured
