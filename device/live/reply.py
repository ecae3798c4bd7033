"""The spoken reply out of the service's message parts: 24 kHz mono s16le, whatever came.

The daemon's connection and `run_turn` (ask, doctor --turn) both read reply audio
through a `ReplyDecoder`, so they agree on what is audio: a part whose MIME type
is `audio/pcm` at any rate (resampled here to REPLY_RATE with soxr), and nothing
else (text, images, other encodings are skipped, with one journal line). A part
that ends in the middle of a sample keeps its odd byte for the next part, so the
samples after it are not shifted by a byte into noise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from device.errors import quoted
from device.live.wire import REPLY_RATE, SAMPLE_BYTES, pcm_rate

if TYPE_CHECKING:
    import soxr
    from google.genai import types

log = logging.getLogger(__name__)

#: A reply's rate may change this many times; parts at yet another rate after that are
#: not played. A service speaks at one rate; each change builds a resampler (0.2 ms),
#: and a message of parts alternating between two rates held the loop for seconds.
RATE_CHANGES_LIMIT = 4
#: Characters of a turn's end reason (`end_reason`) or a reply part's type said: a newer
#: service's is a word or two.
REASON_LIMIT = 100
UNSPECIFIED = "TURN_COMPLETE_REASON_UNSPECIFIED"
#: The model waits for the person to go on (a sentence cut off): no refusal.
NEED_MORE_INPUT = "NEED_MORE_INPUT"
#: The model answered with a tool call it could not make: no refusal either.
MALFORMED_FUNCTION_CALL = "MALFORMED_FUNCTION_CALL"


def end_reason(content: types.LiveServerContent) -> str | None:
    """Why the service ended the turn, when it says (`turnCompleteReason`: a safety block,
    a function call it could not make), on one line as a journal or a terminal quotes it;
    None for a usual end."""
    reason = content.turn_complete_reason
    spelled = str(getattr(reason, "value", reason))
    if not content.turn_complete or reason is None or spelled == UNSPECIFIED:
        return None
    return quoted(spelled, REASON_LIMIT)


class ReplyDecoder:
    """Reply parts in, REPLY_RATE PCM out, part by part; one per connection or turn loop."""

    def __init__(self) -> None:
        self._carry = b""  # the first byte of a sample whose second byte is in the next part
        self._rate = REPLY_RATE
        self._resampler: soxr.ResampleStream | None = None
        self._rate_changes = 0  # in the reply now arriving
        self._skipped = False  # a part that is not audio has been reported
        self._skipped_rates = False  # a part past RATE_CHANGES_LIMIT has been reported

    def audio(self, content: types.LiveServerContent) -> list[bytes]:
        """The reply audio in one server message, part by part (none empty); at the end
        of a turn what the resampler still holds, and after an interruption nothing held."""
        parts = (content.model_turn.parts or []) if content.model_turn else []
        pcms = self.parts((b.data, b.mime_type) for part in parts if (b := part.inline_data))
        if content.interrupted:
            self._reset()
        elif content.turn_complete:
            if tail := self._flush():
                pcms.append(tail)
            self._rate_changes = 0
        return pcms

    def parts(self, parts: Iterable[tuple[bytes | None, str | None]]) -> list[bytes]:
        """The reply audio in a message's parts, given as (data, MIME type) of their inline
        data, part by part (none empty)."""
        return [pcm for data, mime_type in parts if (pcm := self._part(data, mime_type))]

    def _part(self, data: bytes | None, mime_type: str | None) -> bytes:
        """The reply audio in one part's inline data (b"" for none, or not audio)."""
        if not data:
            return b""
        rate = pcm_rate(mime_type)
        if rate is None:
            self._skip(mime_type)
            return b""
        tail = b""
        if rate != self._rate:
            if self._rate_changes >= RATE_CHANGES_LIMIT:
                self._skip_rate(rate)
                return b""
            self._rate_changes += 1
            tail = self._flush()
        self._rate = rate
        data = self._carry + data
        whole = len(data) - len(data) % SAMPLE_BYTES
        data, self._carry = data[:whole], data[whole:]
        return tail + self._resample(data, last=False)

    def _flush(self) -> bytes:
        """The reply, or its stretch at one rate, is over: what the resampler still holds;
        an unpaired byte is dropped."""
        self._carry = b""
        if self._resampler is None:
            return b""
        tail = self._resample(b"", last=True)
        self._resampler = None
        return tail

    def _reset(self) -> None:
        """Forget what is held (the reply was interrupted): nothing of it may play."""
        self._carry = b""
        self._resampler = None
        self._rate_changes = 0

    def _resample(self, data: bytes, last: bool) -> bytes:
        if self._rate == REPLY_RATE:
            return data
        import numpy as np
        import soxr

        if self._resampler is None:
            self._resampler = soxr.ResampleStream(self._rate, REPLY_RATE, 1, dtype="int16")
        samples = np.frombuffer(data, dtype="<i2")
        return bytes(self._resampler.resample_chunk(samples, last=last).astype("<i2").tobytes())

    def _skip(self, mime_type: str | None) -> None:
        if not self._skipped:
            self._skipped = True
            log.warning(
                "the service sent a reply part of type %s: not played (only audio/pcm is)",
                quoted(mime_type, REASON_LIMIT) if mime_type else "(none)",
            )

    def _skip_rate(self, rate: int) -> None:
        if not self._skipped_rates:
            self._skipped_rates = True
            log.warning(
                "the service changed a reply's rate over %d times: parts at %d Hz not played",
                RATE_CHANGES_LIMIT,
                rate,
            )
