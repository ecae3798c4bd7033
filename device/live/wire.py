"""Facts of the Live API's wire format that the device, the doctor and the rig share.

One definition each: the audio rates and MIME types both ways, how a reply
part's MIME type names its rate, the camera's image type, the WebSocket close
codes the service uses for its errors, and the one message the device sends
many times a second.
"""

from __future__ import annotations

import base64

#: Audio both ways is 16-bit little-endian mono PCM in this media type; its `rate`
#: parameter is the sample rate. In a reply, anything else (text, images, other
#: encodings) is not for the speaker.
PCM_MEDIA_TYPE = "audio/pcm"
#: Sample rates a reply part may name; outside these the part is not taken for audio.
PCM_RATES = range(8000, 192001)


def pcm_mime(rate: int) -> str:
    """The MIME type of PCM audio at `rate`, as the service writes it."""
    return f"{PCM_MEDIA_TYPE};rate={rate}"

#: The microphone's audio as the service takes it: 16 kHz mono 16-bit little-endian PCM.
MIC_RATE = 16000
MIC_MIME = pcm_mime(MIC_RATE)
#: The model's spoken reply: 24 kHz mono 16-bit little-endian PCM (what the speaker gets).
REPLY_RATE = 24000
#: Camera frames.
IMAGE_MIME = "image/jpeg"
#: Bytes per sample of the PCM both ways (16-bit).
SAMPLE_BYTES = 2

#: Close codes: a normal end (also a connection's end of life), a dropped socket,
#: an invalid argument (a setting, a wrong audio format, an unknown resumption
#: handle), a policy refusal (the API key, an unsupported feature), an oversized
#: message, an internal error (a deadline expired, the session is still held).
CLOSE_NORMAL = 1000
CLOSE_ABNORMAL = 1006
CLOSE_INVALID = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011


def pcm_rate(mime_type: str | None, default: int = REPLY_RATE) -> int | None:
    """The sample rate of 16-bit PCM in a part of this MIME type, or None if it is not that.

    "audio/pcm;rate=16000" is 16000, "audio/pcm" is `default`; the media type and
    the parameter name are case-insensitive (RFC 2045).
    """
    media, *params = (mime_type or "").split(";")
    if media.strip().lower() != PCM_MEDIA_TYPE:
        return None
    rate = default
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "rate":
            try:
                rate = int(value.strip().strip('"'))
            except ValueError:
                return None
    return rate if rate in PCM_RATES else None


def audio_message(pcm: bytes) -> str:
    """The realtime_input message carrying one microphone chunk, exactly as the SDK's
    `send_realtime_input(audio=Blob(...))` writes it (URL-safe base64, its key order).

    Built directly: the SDK validates a model, converts it and dumps it again for
    every chunk, which costs more than the rest of sending it, 25 times a second.
    A test holds this to the SDK's own output.
    """
    data = base64.urlsafe_b64encode(pcm).decode("ascii")
    return f'{{"realtime_input": {{"audio": {{"data": "{data}", "mime_type": "{MIC_MIME}"}}}}}}'
