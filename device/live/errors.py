"""What went wrong with the Live connection, in words an owner can act on, and what to do.

The SDK raises `APIError` with the WebSocket close code for every close (even
1000), OSError and its kin for the network, TimeoutError for our own bounds.
Each failure becomes one journal line naming the layer (DNS, TCP, TLS, the key,
a setting) and a decision: try again, or stop until the next press.
"""

from __future__ import annotations

import ast
import errno
import socket
import ssl
from typing import TypeGuard
from urllib.parse import urlsplit

from google.auth import exceptions as auth_errors
from google.genai import errors
from pydantic import ValidationError
from websockets.exceptions import (
    ConnectionClosed,
    InvalidProxy,
    InvalidProxyMessage,
    InvalidProxyStatus,
    InvalidStatus,
)
from websockets.http11 import Response

from device.config import TOKEN_PREFIX, Secret
from device.errors import (
    cut,
    errnos,
    one_line,
    os_words,
    url_without_password,
    without_credentials,
)
from device.live.endpoint import AddressUnusable, ProxyUnreachable, ResolverSilent, TcpSilent
from device.live.wire import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL,
    CLOSE_INVALID,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
)

# Close codes after which retrying cannot help: the key or a setting was refused.
REFUSED = {
    CLOSE_INVALID: "a setting or a message was refused as invalid",
    CLOSE_POLICY: "the API key, the model name or a setting was refused",
}
_CLOSE_HINTS = {
    CLOSE_NORMAL: "the service closed the connection",
    CLOSE_ABNORMAL: "the connection dropped without a goodbye (network)",
    CLOSE_TOO_BIG: "the service sent a message larger than allowed",
    CLOSE_INTERNAL: "the service had an internal error",
    **REFUSED,
}

#: A close whose reason says one of these is the key's quota or rate limit, whatever its
#: code (the Gemini API closes with 1011, "You exceeded your current quota..."): not the
#: service in trouble, nor a session still held by the old connection.
_QUOTA_WORDS = ("quota", "resource_exhausted")
QUOTA_HINT = "a quota or rate limit of the key was reached"

#: How the SDK says a frame is not JSON, before it quotes the whole frame.
_NOT_JSON = "Failed to parse response: "
#: What Python's JSON decoder says of a document nested deeper than it goes (a frame of a
#: few kilobytes on Bookworm's Python, some tens on Trixie's), as against a RecursionError
#: of the box's own.
_JSON_TOO_DEEP = "while decoding a JSON"

#: HTTP answers instead of the WebSocket upgrade (before any close code exists); those
#: after which retrying cannot help first.
HTTP_REFUSED = {
    401: "the service refused the credentials",
    403: "the service refused the credentials",
}
#: A page in place of the upgrade: the network (a hotel's, a school's) wants a sign-in
#: first, or a proxy answers for the service.
SIGN_IN_HINT = "the network answers for the service: a sign-in page (captive portal) or a proxy"
#: OpenSSL's reasons when what answered on the port does not speak TLS at all (a sign-in
#: page's plain HTTP): 3.0's, and the record layer's of 3.2 and later.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})
#: The proxy wants credentials the box has not got: asking again cannot help.
PROXY_AUTH_REQUIRED = 407
_HTTP_HINTS = {
    **HTTP_REFUSED,
    200: SIGN_IN_HINT,
    511: SIGN_IN_HINT,
    429: "too many requests: a quota or rate limit of the key",
    500: "the service had an internal error",
    502: "the service is unavailable for a moment",
    503: "the service is unavailable for a moment",
    504: "the service is unavailable for a moment",
}


class ConnectionDead(Exception):
    """No traffic at all (messages or pongs) for longer than the configured bound."""


class NotReading(ConnectionDead):
    """The service reads nothing the box sends while it keeps sending (pings): dead too."""


class Unacknowledged(ConnectionDead):
    """What the box sent stayed unacknowledged (the kernel's TCP_USER_TIMEOUT ended the
    connection): the link died without a word, or the service stopped reading."""


def unacknowledged(exc: BaseException) -> bool:
    """The kernel ended the connection under what ended it: ETIMEDOUT, somewhere in the
    chain the SDK and websockets wrap it in (APIError 1006, ConnectionClosedError)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; a cycle in it must not hang the session
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno == errno.ETIMEDOUT:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class AnswerCrossed(Exception):
    """The service closed the connection over a tool's answer that crossed its withdrawal
    of the call (toolCallCancellation) on the wire: a race, not a refusal."""


def answer_crossed(ended: Exception) -> Exception:
    """What ended a connection on which a tool's answer crossed its call's withdrawal:
    the service's 1007 (an id it no longer knows) is that race, and resuming mends it; a
    refusal it would be, and the conversation ended. Anything else as it is."""
    closed = _close_of(ended)
    if closed is None or closed[0] != CLOSE_INVALID or _names_the_key(*closed):
        return ended
    crossed = AnswerCrossed(_close_words(*closed))  # not the words of a 1007 refusal
    crossed.__cause__ = ended
    return crossed


class GaveUp(Exception):
    """The connections kept failing for `reconnect_for_s`: the session ends (the message
    says how many tries, for how long, and the last failure)."""


def describe_failure(exc: BaseException) -> str:
    """One line an owner can act on: which layer failed, never the key; within TEXT_LIMIT
    (it becomes the error state's reason, which `ctl status` and `ctl text` say, and the
    SDK raises a frame like `{"code": 1008, "message": <a megabyte>}` as an error)."""
    return cut(_said(_classify(exc)[1]))


def _said(words: str) -> str:
    """A failure's words masked and on one printable line: what the service or the network
    sent (a close reason, a token server's answer) may hold line breaks and escape
    sequences, which `ctl status` would print to the owner's terminal as they are, and
    journalctl would show as "[N B blob data]"."""
    return one_line(without_credentials(words))


def failure_fields(exc: BaseException) -> dict[str, object]:
    """A failure's journal fields: LIVE_FAILURE, a word from a closed set an owner can
    filter on (closed, http, proxy, credentials, setting, gave_up, silent, timeout, dns,
    tls, tcp, network, undecodable, other); LIVE_ERROR, the line describe_failure gives;
    LIVE_CLOSE_CODE for a close, LIVE_HTTP_STATUS for an HTTP answer to the upgrade."""
    kind, words = _classify(exc)
    fields: dict[str, object] = {"LIVE_FAILURE": kind, "LIVE_ERROR": _said(words)}
    said = exc.__cause__ if isinstance(exc, AnswerCrossed) else exc  # the crossing's close
    if said is not None and (closed := _close_of(said)) is not None:
        fields["LIVE_CLOSE_CODE"] = closed[0]
    if isinstance(exc, InvalidStatus):
        fields["LIVE_HTTP_STATUS"] = exc.response.status_code
    elif (redirect := _redirect_of(exc)) is not None:
        fields["LIVE_HTTP_STATUS"] = redirect.status_code
    return fields


def closed_by_the_box(exc: ConnectionClosed) -> bool:
    """websockets ended the connection itself over what the service sent (a frame over
    max_size, text that is not UTF-8), and no close came from the service: the SDK would
    raise that as 1006, a connection that dropped (the network)."""
    return exc.rcvd is None and exc.sent is not None and exc.sent.code != CLOSE_NORMAL


def _close_of(exc: BaseException) -> tuple[int, str] | None:
    """(code, reason) of a close frame the service sent: as the SDK raises it, or as
    websockets does when it ends the connection itself (a close it did not finish)."""
    if isinstance(exc, errors.APIError):
        return exc.code, close_reason(exc)
    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return None


def _classify(exc: BaseException) -> tuple[str, str]:
    """(the kind of failure, the line for the owner)."""
    if isinstance(exc, ConnectionClosed) and closed_by_the_box(exc):
        assert exc.sent is not None
        hint = "the service broke the WebSocket protocol"
        if exc.sent.code == CLOSE_TOO_BIG:
            hint = _CLOSE_HINTS[CLOSE_TOO_BIG]
        return "undecodable", f"{hint} ({exc.sent.reason or exc.sent.code})"
    if (closed := _close_of(exc)) is not None:
        code, reason = closed
        hint = _CLOSE_HINTS.get(code, "the connection closed")
        if _names_the_key(code, reason):
            hint = "the service refused the API key"
        if _speaks_of_quota(reason):
            hint = QUOTA_HINT
        return "closed", f"{hint} ({_close_words(code, reason)})"
    if (redirect := _redirect_of(exc)) is not None:
        where = urlsplit(redirect.headers.get("Location", "")).hostname or "a page"
        return "http", f"{SIGN_IN_HINT}: redirected to {where} ({_http(redirect)})"
    if isinstance(exc, InvalidStatus):
        hint = _HTTP_HINTS.get(exc.response.status_code, "the Live API refused the connection")
        return "http", f"{hint} ({_http(exc.response)})"
    if isinstance(exc, InvalidProxy):  # HTTPS_PROXY written as curl takes it (no http://)
        setting = url_without_password(exc.proxy)
        return "proxy", f"proxy: HTTPS_PROXY's {setting} cannot be used: {exc.msg}"
    if isinstance(exc, InvalidProxyStatus):
        return "proxy", f"the proxy refused the tunnel ({_http(exc.response)})"
    if isinstance(exc, InvalidProxyMessage):
        return "proxy", f"the proxy's answer cannot be read ({exc})"
    if isinstance(exc, ProxyUnreachable):
        return "proxy", f"proxy: cannot reach {exc}"
    if isinstance(exc, AddressUnusable):
        return "setting", f"setting: {exc}"
    if token_server_unreached(exc):
        return "network", f"network: Vertex AI credentials: {_auth_words(exc)}"
    if isinstance(exc, auth_errors.GoogleAuthError):  # Vertex AI's, before ValueError
        return "credentials", f"Vertex AI credentials: {_auth_words(exc)}"
    if isinstance(exc, GaveUp):
        return "gave_up", str(exc)
    if isinstance(exc, AnswerCrossed):
        return "closed", f"a tool's answer crossed the service's withdrawal of it ({exc})"
    if isinstance(exc, Unacknowledged):
        return "silent", f"nothing the box sends is acknowledged ({exc})"
    if isinstance(exc, NotReading):
        return "silent", f"the Live API reads nothing the box sends ({exc})"
    if isinstance(exc, ConnectionDead):
        return "silent", f"no traffic from the Live API: {exc}"
    if isinstance(exc, ResolverSilent):
        return "dns", f"DNS: the resolver does not answer ({exc})"
    if isinstance(exc, TcpSilent):
        return "tcp", f"TCP: what the box sends goes nowhere ({exc})"
    if isinstance(exc, TimeoutError):
        return "timeout", "no answer from the Live API in time"
    if isinstance(exc, socket.gaierror):
        return "dns", f"DNS: cannot resolve the Live API host ({exc.strerror})"
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return "tls", f"TLS: {exc.reason or exc} ({_verified(exc.verify_message)})"
    if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS:
        return "tls", f"TLS: {exc.reason} (what answered does not speak TLS): {SIGN_IN_HINT}"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "tcp", "TCP: connection refused by the Live API host"
    if isinstance(exc, OSError) and exc.filename is not None:
        # A file of the box's, read as the client is built (Vertex AI's credentials): no
        # network error has a file name, and "network: Permission denied" sent an owner
        # to the Wi-Fi for a key file only root may read.
        return "credentials", f"cannot read {exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        return "network", f"network: {os_words(exc)}"
    if (size := _not_json(exc)) is not None:
        return "undecodable", f"the service sent a frame that is not JSON{size}"
    if isinstance(exc, ValidationError):
        return "undecodable", f"the service sent a message that cannot be decoded ({_refused(exc)})"
    if isinstance(exc, RecursionError) and _JSON_TOO_DEEP in str(exc):
        return "undecodable", "the service sent a message nested too deeply to decode"
    if isinstance(exc, ValueError | AttributeError):
        return "undecodable", f"the service sent a message that cannot be decoded ({exc})"
    return "other", f"{type(exc).__name__}: {exc}"


#: No way to the host at all: no route (the Wi-Fi without its router, one rebooting).
_NO_ROUTE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH})


def no_route(exc: BaseException) -> bool:
    """The box found no way to the host at all (not refused, not a timeout): its network
    or its router, not the service nor a firewall."""
    numbers = errnos(exc) if isinstance(exc, OSError) else []
    return bool(numbers) and set(numbers) <= _NO_ROUTE


def _close_words(code: int, reason: str) -> str:
    """A close as a failure's line quotes it: "close code 1007: invalid function id"."""
    return f"close code {code}: {reason}" if reason else f"close code {code}"


def _http(response: Response) -> str:
    """An HTTP answer as a failure's line quotes it: "HTTP 407 Proxy Authentication Required"."""
    return f"HTTP {response.status_code} {response.reason_phrase}"


def _redirect_of(exc: BaseException) -> Response | None:
    """The redirect a connect failed on: websockets follows one only to a wss:// address on
    the same terms, and raises what stopped it (InvalidURI for an http:// page, a
    SecurityError) with the 3xx answer as its cause or context."""
    for linked in (exc.__cause__, exc.__context__):
        if isinstance(linked, InvalidStatus) and 300 <= linked.response.status_code < 400:
            return linked.response
    return None


def _not_json(exc: BaseException) -> str | None:
    """The size of a frame that is not JSON (not even text) as words to append, "" if it
    is not to be had; None for any other failure. Never the frame: the SDK's error quotes
    it whole (base64 audio, a proxy's page), and the journal must not carry it."""
    if isinstance(exc, UnicodeDecodeError):  # json.loads of bytes that are no text
        return f" ({len(exc.object)} bytes)"
    text = str(exc) if isinstance(exc, ValueError) else ""
    if not text.startswith(_NOT_JSON):
        return None
    try:  # the SDK's repr of the frame: a bytes (or str) literal
        frame = ast.literal_eval(text.removeprefix(_NOT_JSON))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return ""
    if isinstance(frame, str):
        frame = frame.encode("utf-8", "surrogatepass")
    return f" ({len(frame)} bytes)" if isinstance(frame, bytes) else ""


def _refused(exc: ValidationError) -> str:
    """Where and why the SDK's models refused a message, on one line, without the values
    pydantic quotes (a piece of reply audio's base64)."""
    problems = exc.errors(include_url=False, include_context=False, include_input=False)
    said = "; ".join(
        f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}" for problem in problems[:3]
    )
    more = f"; {len(problems) - 3} more" if len(problems) > 3 else ""
    return " ".join(f"{said}{more}".split())


def _verified(message: str) -> str:
    """Why the certificate was refused; a date out of range is most often this box's clock
    (a Pi has no clock of its own: until NTP has set it, it runs from the last shutdown).
    Any other refusal (another host's, an issuer the box does not trust) is most often not
    the service's certificate at all: a hotel's sign-in page, or a proxy that intercepts TLS
    ("IP address mismatch" alone sent nobody to sign in to the Wi-Fi)."""
    if out_of_its_dates(message):
        return f"{message}: check the clock, timedatectl"
    return f"{message}: {SIGN_IN_HINT}"


def out_of_its_dates(message: str) -> bool:
    """OpenSSL's verify message says the certificate is not valid at the box's time."""
    return "not yet valid" in message or "expired" in message


#: What the token server, or its certificate, says of a box whose clock is off: a signed
#: request out of its timeframe (a service account's), a certificate not yet valid.
_CLOCK_WORDS = ("reasonable timeframe", "not yet valid", "certificate has expired")


def _auth_words(exc: auth_errors.GoogleAuthError) -> str:
    """The first line of google-auth's message: a RefreshError's args are the message and
    the token server's whole answer (a dict), which the owner needs no more of. One that
    the box's clock explains says to check it first (a Pi runs from its last shutdown's
    time until NTP has set the clock)."""
    words = _first_line(exc)
    return f"check the clock, timedatectl: {words}" if _about_the_clock(words) else words


def _first_line(exc: auth_errors.GoogleAuthError) -> str:
    first = exc.args[0] if exc.args else exc
    return (str(first).strip().splitlines() or [type(exc).__name__])[0]


def _about_the_clock(words: str) -> bool:
    return any(clue in words for clue in _CLOCK_WORDS)


def blames_the_clock(exc: BaseException) -> bool:
    """Vertex AI's token server (or its certificate) refused the box's time: neither new
    credentials nor a minute's wait mend that, a clock set right does."""
    return isinstance(exc, auth_errors.GoogleAuthError) and _about_the_clock(_first_line(exc))


def token_server_unreached(exc: BaseException) -> TypeGuard[auth_errors.GoogleAuthError]:
    """Vertex AI's token server was out of reach or busy (not credentials that are gone or
    revoked): the Live API was never asked."""
    timed_out = (auth_errors.TransportError, auth_errors.TimeoutError)
    return isinstance(exc, auth_errors.GoogleAuthError) and (
        isinstance(exc, timed_out) or exc.retryable
    )


def close_reason(exc: errors.APIError) -> str:
    """The service's words: the SDK keeps a close frame's reason in `details`."""
    if exc.message:
        return str(exc.message)
    return exc.details if isinstance(exc.details, str) else ""


def is_refusal(exc: BaseException) -> bool:
    """The service refused the key or a setting, or Vertex AI's credentials are gone or
    revoked, or the environment's address of the service cannot be read: retrying would
    only fail again."""
    if isinstance(exc, AddressUnusable):
        return True
    if isinstance(exc, auth_errors.GoogleAuthError):
        return not token_server_unreached(exc)
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code in HTTP_REFUSED
    if isinstance(exc, InvalidProxyStatus):
        return exc.response.status_code == PROXY_AUTH_REQUIRED
    closed = _close_of(exc)
    return closed is not None and closed[0] in REFUSED


def is_unknown_handle(exc: BaseException) -> bool:
    """A resumption handle the service no longer knows (expired, or its session ended);
    not the key refused with the same code, which a fresh session would not mend."""
    return isinstance(exc, errors.APIError) and exc.code == CLOSE_INVALID and not refuses_key(exc)


def refuses_key(exc: BaseException) -> bool:
    """A close that refuses the API key (or token). The Gemini API closes one that is not
    valid, expired or deleted with 1007 (its INVALID_ARGUMENT), "API key not valid. Please
    pass a valid API key.", the code it refuses a setting or a resumption handle with."""
    closed = _close_of(exc)
    return closed is not None and _names_the_key(*closed)


def refuses_credential(exc: BaseException) -> bool:
    """The Live API refused the key (or token) itself: a close that names it, or HTTP
    401/403 at the upgrade."""
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code in HTTP_REFUSED
    return refuses_key(exc)


def refuses_token(exc: BaseException | None, key: Secret | None) -> bool:
    """The service refused the credential, and it is an ephemeral token (`key`): spent or
    past its expiry, refused as a key not valid is (or with words of a token's own)."""
    if exc is None or key is None or not key.reveal().startswith(TOKEN_PREFIX):
        return False
    closed = _close_of(exc)
    own_words = closed is not None and closed[0] == CLOSE_POLICY and "token" in closed[1].lower()
    return refuses_credential(exc) or own_words


def spent_token(source: str | None) -> str:
    """What a refused ephemeral token most likely is: the owner's fix is the job that writes
    them where the box reads its key, not a new API key."""
    where = f" from {source}" if source else ""
    return f"the ephemeral token{where} is spent or expired, and none newer is there"


def _names_the_key(code: int, reason: str) -> bool:
    """1008 (permission) for any key; 1007 only where its reason says API key (a message
    refused for a field named `key` is a setting)."""
    said = reason.lower()
    return (code == CLOSE_POLICY and "key" in said) or (code == CLOSE_INVALID and "api key" in said)


def is_busy_session(exc: BaseException) -> bool:
    """1011 at setup: most often the old connection still holds the session; never when
    it is the key's quota (a new session would be refused just the same, and the
    conversation's history thrown away for nothing)."""
    return (
        isinstance(exc, errors.APIError)
        and exc.code == CLOSE_INTERNAL
        and not _speaks_of_quota(close_reason(exc))
    )


def _speaks_of_quota(reason: str) -> bool:
    said = reason.lower()
    return any(word in said for word in _QUOTA_WORDS)
