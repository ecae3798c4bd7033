"""Reading what clients send: both key spellings, both base64 alphabets, paths and auth.

The SDK writes a mix of camelCase and snake_case and URL-safe base64; raw
clients may write the other forms. Everything here is forgiving about spelling
and strict about meaning, and reports violations as ``ProtocolError`` carrying
the close code the real service would use.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import parse_qs

from device.live.wire import CLOSE_INVALID, CLOSE_POLICY, MIC_RATE, pcm_rate

_GEMINI_PATH = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(v1|v1beta|v1alpha)\.GenerativeService\."
    r"(BidiGenerateContent|BidiGenerateContentConstrained)$"
)
_VERTEX_PATH = re.compile(
    r"^/ws/google\.cloud\.aiplatform\.(v1|v1beta1|v1beta|v1alpha)\.LlmBidiService/"
    r"BidiGenerateContent$"
)


class ProtocolError(Exception):
    """A client mistake the service answers by closing with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def camel(name: str) -> str:
    """snake_case -> camelCase."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def pick(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` under either spelling (``name`` is given in snake_case)."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    return obj.get(camel(name), default)


def has(obj: Any, name: str) -> bool:
    """Whether ``obj`` carries ``name`` under either spelling."""
    return isinstance(obj, dict) and (name in obj or camel(name) in obj)


def b64decode(data: Any) -> bytes:
    """Decode standard or URL-safe base64, padding optional."""
    if not isinstance(data, str):
        raise ProtocolError(CLOSE_INVALID, "Invalid value: blob data must be a base64 string.")
    text = data.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        reason = f"Invalid value: blob data is not base64 ({exc})."
        raise ProtocolError(CLOSE_INVALID, reason) from exc


def b64encode(data: bytes) -> str:
    """The server's own spelling: standard alphabet with padding, like the service."""
    return base64.b64encode(data).decode("ascii")


def check_audio_mime(mime: Any) -> None:
    """Accept only ``audio/pcm`` at 16 kHz (the rate parameter may be omitted)."""
    if not isinstance(mime, str):
        raise ProtocolError(CLOSE_INVALID, "Invalid argument: audio mime_type is required.")
    if pcm_rate(mime, default=MIC_RATE) != MIC_RATE:
        raise ProtocolError(
            CLOSE_INVALID, f"Unsupported audio mime_type {mime!r}: use audio/pcm at {MIC_RATE} Hz."
        )


def parse_target(target: str) -> tuple[str, str, dict[str, list[str]]]:
    """Split a request target into (normalised path, endpoint kind, query).

    kind is 'gemini', 'constrained' or 'vertex'; raises ProtocolError otherwise.
    """
    raw_path, _, raw_query = target.partition("?")  # not urlsplit: '//ws' is no netloc
    path = re.sub(r"/{2,}", "/", raw_path)
    query = parse_qs(raw_query)
    gemini = _GEMINI_PATH.match(path)
    if gemini:
        return path, "constrained" if gemini.group(2).endswith("Constrained") else "gemini", query
    if _VERTEX_PATH.match(path):
        return path, "vertex", query
    raise ProtocolError(CLOSE_POLICY, f"Unknown endpoint {path!r}.")
