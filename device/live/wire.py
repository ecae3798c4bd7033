"""Facts of the Live API's wire format that the device, the doctor and the rig share.

One definition each: the audio rates and MIME types both ways, the camera's
image type, and the WebSocket close codes the service uses for its errors.
"""

from __future__ import annotations

#: The microphone's audio as the service takes it: 16 kHz mono 16-bit little-endian PCM.
MIC_RATE = 16000
MIC_MIME = f"audio/pcm;rate={MIC_RATE}"
#: The model's spoken reply: 24 kHz mono 16-bit little-endian PCM.
REPLY_RATE = 24000
REPLY_MIME = f"audio/pcm;rate={REPLY_RATE}"
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
