"""What of the microphone goes to the service, and when.

While the appliance captures, every chunk from the capture's reader arrives here
on the event loop and goes to the outbox in order, after the pre-roll the
capture kept from just before (people start talking as they press). In a hands-free
conversation the speaker must not reach the microphone, so while the model
speaks (`gate()`, from the state machine) chunks are gated (dropped, with
`audioStreamEnd` once the pause passes a second; the capture, muted, hands
over none) or attenuated, as configured;
with "cancel" the capture has already taken the speaker's echo out, and they go
on as they are.
A chunk loud enough to be speech is reported (`on_speech`, at most every
SPEECH_EVERY_S, and whether it starts an utterance): the silence that ends a
conversation counts from the last word. A softer voice, up to SOFT_VOICE_DB under
that, is reported apart (`on_soft_voice`): not enough to keep a silence open, but no
silence to hang up in at a long press either. A steady sound at that level (a fan's
hum) is not one: a voice rises above the pauses between its words.
With "cancel", speech held for TALK_OVER_S while the model speaks is reported too
(`on_talk_over`): a reply the service sent whole is no longer its to interrupt.
Nor is silence worth sending: after a second of it the capture holds the
microphone back (`pause_gate`) and the service is told the stream paused, until
someone speaks again.

At a push-to-talk release the last words are still on their way: in the sound
card's buffer and in the capture period being filled. The capture hands them over
as soon as the card has them, the last chunk cut short (`Capture.finish`); the
turn ends only once the chunk holding the instant of the release has gone out
(`finish`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from device.audio import pcm
from device.audio.capture import QuietGate
from device.config import AudioConfig
from device.live.wire import MIC_RATE
from device.logs import AtMostEvery, Overflow
from device.outbox import Outbox

log = logging.getLogger(__name__)

#: A gated microphone this long tells the server the stream paused.
STREAM_PAUSE_S = 1.0
#: Hands-free, silence is held back (and audioStreamEnd sent, which ends the person's
#: turn at the service) only this long after the service's own end-of-speech silence
#: (`silence_ms`) would have: a pause it lets a person make mid-sentence must stay one.
PAUSE_AFTER_SILENCE_S = 0.2
#: After a pause held back, speech goes out with this much from before its first chunk
#: above `pause_below_dbfs` (a word's soft start), or `preroll_ms` if longer.
SOFT_START_MS = 100
#: `pause_below_dbfs` at this (its lowest) never holds the microphone back.
ALWAYS_SEND_DBFS = -100.0
#: Microphone overflows are logged at most this often (the count is always kept).
OVERFLOW_LOG_EVERY_S = 60.0
#: At a release, a microphone that stops delivering is waited for two chunks and this.
FINISH_SLACK_S = 0.2
#: Speech heard is reported at most this often (it restarts the silence timer).
SPEECH_EVERY_S = 0.5
#: A voice this far under `speech_dbfs` (a child, a HAT with a low gain) is still someone
#: talking to a held button, not the silence a long press hangs up in.
SOFT_VOICE_DB = 10.0
#: ...when it rises this far above the quietest chunk since capture began (the pauses
#: between words, or before the first): a hum as loud, which does not, is nobody talking.
SOFT_VOICE_RISE_DB = 6.0
#: Speech after this long without any starts an utterance (a person starting to talk,
#: as a press starts a turn).
UTTERANCE_GAP_S = 1.0
#: With "cancel", the person talking over the box this long without a pause, at
#: `speech_dbfs` or louder, is reported once: a syllable or two, longer than what the
#: canceller lets through of the box's own voice (well below that level once it has
#: heard the box speak a second).
TALK_OVER_S = 0.16


class MicFeed:
    """Routes microphone chunks into the outbox according to what the appliance is doing."""

    def __init__(
        self,
        cfg: AudioConfig,
        outbox: Outbox,
        on_speech: Callable[[bool], None] | None = None,
        on_talk_over: Callable[[], None] | None = None,
        silence_ms: int = 0,
        on_soft_voice: Callable[[], None] | None = None,
    ) -> None:
        """`silence_ms`: the service's end-of-speech silence (hands-free); silence is held
        back no sooner than PAUSE_AFTER_SILENCE_S after it, nor than STREAM_PAUSE_S."""
        self._cfg = cfg
        self._pause_s = max(STREAM_PAUSE_S, silence_ms / 1000 + PAUSE_AFTER_SILENCE_S)
        self._outbox = outbox
        self._on_speech = on_speech
        self._on_talk_over = on_talk_over
        self._speech_level = pcm.db_to_amplitude(cfg.speech_dbfs)
        self._speech_told = -SPEECH_EVERY_S
        self._on_soft_voice = on_soft_voice
        self._soft_level = pcm.db_to_amplitude(cfg.speech_dbfs - SOFT_VOICE_DB)
        self._rise = pcm.db_to_amplitude(SOFT_VOICE_RISE_DB)
        self._soft_told = -SPEECH_EVERY_S
        self._quietest = 1.0  # the quietest chunk's RMS since capture began (`start`)
        #: When the last chunk loud enough for speech was recorded (not while gated).
        self.last_speech: float | None = None
        self._talking_s = 0.0  # the person's speech over the box so far, without a pause
        #: Hands-free, while the model speaks: keep the speaker out of what is sent.
        self.gated = False
        self._capturing = False
        self._until: float | None = None  # finishing: the last chunk ends at or after this
        self._heard_until: float | None = None  # the newest chunk captured was recorded until
        self._finished = asyncio.Event()
        self._pause_later: asyncio.TimerHandle | None = None  # gated: audioStreamEnd due
        self._stream_end_sent = False
        self._overflow = Overflow(log, "outbox_audio")
        self._overflow_due = AtMostEvery(OVERFLOW_LOG_EVERY_S)

    @property
    def preroll_chunks(self) -> int:
        """How many chunks of the moments before a press to keep (rounded up)."""
        return -(-self._cfg.preroll_ms // self._cfg.chunk_ms)

    def pause_gate(self) -> QuietGate | None:
        """Hands-free: hold the microphone back after STREAM_PAUSE_S below `pause_below_dbfs`
        (longer when the service's `silence_ms` is);
        None at ALWAYS_SEND_DBFS, which sends digital silence too (what an echo canceller
        makes of a silent loopback is exact zeros, below any level)."""
        if self._cfg.pause_below_dbfs <= ALWAYS_SEND_DBFS:
            return None
        level = pcm.db_to_amplitude(self._cfg.pause_below_dbfs)
        pause_after = -(-round(self._pause_s * 1000) // self._cfg.chunk_ms)
        return QuietGate(level, pause_after, lead_in=-(-SOFT_START_MS // self._cfg.chunk_ms))

    def gate(self, gated: bool) -> None:
        """Hands-free, the model speaks (or has stopped): with "gate" nothing goes out, and
        after STREAM_PAUSE_S the service is told the stream paused."""
        self.gated = gated
        self._talking_s = 0.0
        self._cancel_pause()
        if gated and self._cfg.mic_during_playback == "gate":
            self._pause_later = asyncio.get_running_loop().call_later(
                STREAM_PAUSE_S, self.paused
            )

    def fall_back_to_gate(self) -> None:
        """The echo canceller failed mid-run: from now on (and at once, if the model speaks
        now) nothing heard while it speaks goes out."""
        self._cfg = replace(self._cfg, mic_during_playback="gate")
        if self.gated:
            self.gate(True)

    def _cancel_pause(self) -> None:
        if self._pause_later is not None:
            self._pause_later.cancel()
            self._pause_later = None

    def paused(self) -> None:
        """The capture holds a silent microphone back: tell the service the stream paused."""
        if self._capturing:
            self._pause_stream()

    def _pause_stream(self) -> None:
        if not self._stream_end_sent:
            self._outbox.put("audio_stream_end")
            self._stream_end_sent = True

    def start(self, held: list[tuple[bytes, float]], until: float | None = None) -> None:
        """Capture from now on, beginning with what the capture held (`Capture.forward()`:
        the pre-roll, and what was said from the press's edge). A push-to-talk button that
        came up before the press was taken (at `until`) ends the turn with the chunk that
        holds that instant, held or still to come: what followed is not the person's turn,
        nor is a held chunk that began after it (the chunk holding it gone from the ring)."""
        self._capturing, self._until, self._heard_until = True, until, None
        self._quietest = min((pcm.rms(data) for data, _ in held), default=1.0)
        self._finished.clear()
        for data, t in held:
            if self._began_after_end(t):  # a press taken later than the ring reaches back
                self._reached_end(t)
                return
            self._send(data)
            self._heard_until = t
            if self._reached_end(t):
                return

    def _began_after_end(self, t: float) -> bool:
        """Whether a held chunk recorded until `t` began after `_until`: all of it was heard
        after the release (the turn's own words gone from the ring), none of it is the turn's."""
        return self._until is not None and t - self._cfg.chunk_ms / 1000 > self._until

    def _reached_end(self, t: float) -> bool:
        """Whether the chunk recorded until `t` is the turn's last (it holds `_until`):
        capture stops with it, and a finish() waiting for it is told."""
        if self._until is None or t < self._until:
            return False
        self._capturing = False
        self._finished.set()
        return True

    def released(self, at: float) -> None:
        """A push-to-talk button came up at `at`: the turn ends with the chunk that holds
        it, before the machine takes the release (a loop held up as it came up hands over
        the chunks read meanwhile first, all heard after it)."""
        if not self._capturing:
            return
        self._until = at
        if self._heard_until is not None:
            self._reached_end(self._heard_until)

    def stop(self) -> None:
        self._capturing = False
        self._cancel_pause()

    async def finish(self, until: float) -> None:
        """Go on until the chunk recorded past `until` has gone out, then stop.

        At a release, `until` is its time: that chunk holds the last sound made
        before the button came up (gone already if the release was taken late: then
        nothing more goes). A microphone that stops delivering is waited
        for two chunks and FINISH_SLACK_S at most.
        """
        if not self._capturing:
            return
        if self._heard_until is not None and self._heard_until >= until:
            self.stop()  # the release was taken late: its chunk went, the next is not the turn's
            return
        wait_s = 2 * self._cfg.chunk_ms / 1000 + FINISH_SLACK_S
        self._until = until
        self._finished.clear()
        try:
            async with asyncio.timeout(wait_s):
                await self._finished.wait()
        except TimeoutError:
            log.warning("the end of the turn did not come from the microphone in %.2f s", wait_s)
        finally:
            self._until = None
            self.stop()

    def chunk(self, data: bytes, t: float) -> None:
        """One chunk from the capture's reader (on the loop), recorded until time `t`."""
        if not self._capturing:
            return  # handed over just before capture stopped
        self._heard_until = t
        self._reached_end(t)
        if self.gated:
            self._over_the_box(data)
            data = self._while_speaking(data)
            if not data:
                return
        else:
            self._listen(data, t)
        self._send(data)
        self._stream_end_sent = False

    def _send(self, data: bytes) -> None:
        """Into the outbox; its bound said once while the oldest is dropped (a press taken
        late hands over seconds at once, past a small `hold_s` even on a link that sends)."""
        if self._outbox.put("audio", data):
            self._overflow.hit(
                "microphone audio held too long: dropping the oldest (bound %.0f s)",
                self._cfg.hold_s,
            )
        else:
            self._overflow.ended()

    def _listen(self, data: bytes, t: float) -> None:
        """Tell the appliance of speech, or of a soft voice, in the chunk."""
        level = pcm.rms(data)
        self._quietest = min(self._quietest, level)
        if level >= self._speech_level:
            self._speech(t)
        elif level >= max(self._soft_level, self._quietest * self._rise):
            self._soft_voice(t)

    def _soft_voice(self, t: float) -> None:
        """Tell the appliance of a soft voice, at most every SPEECH_EVERY_S on a clock of
        its own: a report of one never holds back the next of speech."""
        if self._on_soft_voice is not None and t - self._soft_told >= SPEECH_EVERY_S:
            self._soft_told = t
            self._on_soft_voice()

    def _speech(self, t: float) -> None:
        """Note speech, and tell the appliance someone is talking (at most every
        SPEECH_EVERY_S) and whether they start to."""
        starts = self.last_speech is None or t - self.last_speech >= UTTERANCE_GAP_S
        self.last_speech = t
        if self._on_speech is not None and t - self._speech_told >= SPEECH_EVERY_S:
            self._speech_told = t
            self._on_speech(starts)

    def _over_the_box(self, data: bytes) -> None:
        """With "cancel": tell the appliance once the person has talked over the box for
        TALK_OVER_S (then again only after a pause)."""
        if self._on_talk_over is None or self._cfg.mic_during_playback != "cancel":
            return
        if pcm.rms(data) < self._speech_level:
            self._talking_s = 0.0
            return
        before = self._talking_s
        self._talking_s += len(data) / 2 / MIC_RATE
        if before < TALK_OVER_S <= self._talking_s:
            self._on_talk_over()

    def _while_speaking(self, data: bytes) -> bytes:
        """What goes out of a chunk heard while the model speaks (gated: nothing)."""
        mode = self._cfg.mic_during_playback
        if mode in ("open", "cancel"):
            return data
        if mode == "attenuate":
            gain = pcm.db_to_amplitude(-self._cfg.attenuation_db)
            return pcm.from_float(pcm.to_float(data) * gain)
        return b""

    def overflowed(self, count: int) -> None:
        """The sound card dropped input (the reader fell behind): log, never fail."""
        if self._overflow_due.due():
            log.warning(
                "microphone overflow: the sound card dropped input (%d times so far)",
                count,
                extra={"LIVE_MIC_OVERFLOWS": count},
            )
