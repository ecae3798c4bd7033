"""Exceptions more than one part of the package raises or catches, and what makes their
text fit for the journal (credentials masked, long text cut), in a module that imports
nothing of the package: every part can use them, and no import cycle runs through them."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable

#: What a masked credential reads as, wherever it is masked.
MASK = "***"
#: What in an error's text may be a credential: a Gemini key, an ephemeral token, a URL's
#: key or token parameter (not a traceback's `key=` argument), an authenticating
#: header's value (websockets quotes it whole when it cannot send it), a URL's password
#: (HTTPS_PROXY's login, quoted whole when websockets cannot use it; a port and a query or
#: fragment of `name=value` holding an '@' are none, but an owner's '#' or '?' in a password,
#: unencoded, is masked with it, after digits too: "2024#..."; an '@' in it too, the login
#: running to the last '@' before the host (not past a '?' or '#' after an '@': a query's),
#: as websockets reads it). Kept to what names it: the rest of the line stays.
_CREDENTIAL = re.compile(
    r"AIza[\w-]+|auth_tokens/[\w.~-]+"
    r"|(?P<param>[?&](?:access_token|key|token)=)[^&\s'\"]+"
    r"|(?P<header>(?:x-goog-api-key|authorization) header: )(?s:.*)"
    r"|(?P<login>://[^\s/:@'\"]+:)(?!\d+[?#][^\s/@'\"]*=)[^\s/@'\"]+(?:@[^\s/@?#'\"]+)*(?=@)",
    re.IGNORECASE,
)


#: The keys and tokens read so far (at the start, or at any session since: a token a job
#: rotates, a key an owner corrected), the latest last: masked whatever their shape (an
#: access token, a gateway's key), where the pattern above would miss them. At most
#: REMEMBERED: months of rotated tokens do not pile up, and one long spent is not in use.
REMEMBERED = 8
#: Shorter is no real key (a Gemini key has 39 characters): masking it would garble
#: every line that happens to hold the same letters.
REMEMBERED_SHORTEST = 10
_remembered: tuple[str, ...] = ()
_remembering = threading.Lock()


def remember_secret(secret: str) -> None:
    """Mask `secret` from now on wherever `without_credentials` masks (the journal, the
    reasons a state and `ctl status` show, configuration errors)."""
    global _remembered
    if len(secret) < REMEMBERED_SHORTEST:
        return
    with _remembering:
        kept = tuple(s for s in _remembered if s != secret)
        _remembered = (*kept, secret)[-REMEMBERED:]


def without_credentials(text: str, also: Iterable[str] = ()) -> str:
    """`text` with anything that may be a key or token masked, `also` too. The longest
    first: a key corrected after a paste cut short holds that paste, whose mask would
    leave the rest of the key in clear."""
    for secret in sorted({*_remembered, *also}, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return _CREDENTIAL.sub(lambda m: (m["param"] or m["header"] or m["login"] or "") + MASK, text)


def url_without_password(url: str) -> str:
    """`url` as written, its login's password masked: the mask above needs no '@' or '/'
    in the password, which a setting the box cannot use need not lack (curl's
    `user:password@host:port`, a password pasted unencoded: the very URLs refused and so
    quoted). The login runs to the last '@'."""
    scheme, sep, rest = url.rpartition("://")
    login, at, place = rest.rpartition("@")
    user, colon, _password = login.partition(":")
    if not colon:
        return url
    return f"{scheme}{sep}{user}:{MASK}{at}{place}"


#: The most characters of a journal line's message and of each LIVE_* field (and of a
#: configuration error, which stderr takes to the journal before logging is set up):
#: what a service or a local user can make the box say (a close reason, a tool's name,
#: an exception quoting a frame, a setting quoting a value) is cut here.
TEXT_LIMIT = 4096


def cut(text: str, limit: int = TEXT_LIMIT) -> str:
    """`text`, or its first `limit` characters and how many more there were."""
    return text if len(text) <= limit else shortened(text[:limit], len(text) - limit)


def shortened(kept: str, more: int) -> str:
    """What was kept of a text and how many characters of it were not, as the journal
    says it wherever a bound cut something."""
    return f"{kept}... ({more} characters more)" if more else kept


#: C0 controls, DEL and C1 controls: what a quoted TOML name (`["audio\nvolume"]`), a path,
#: a variable or the service's words may hold, and a line quotes as written (journalctl
#: shows a line holding any of them as "[N B blob data]").
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
#: Bidi embeddings, overrides and isolates: a terminal that lays out right-to-left text
#: shows what follows one reversed, to the line's end (U+202E makes "oven" read "nevo").
_CONTROLS |= {code: f"\\u{code:04x}" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def one_line(text: str) -> str:
    """`text` with its control characters written as escapes: a line break would split
    the journal's line (the rest without the error's priority), an escape sequence or a
    bidi override act on the terminal that shows it."""
    return text.translate(_CONTROLS)


def quoted(text: str, limit: int) -> str:
    """A short text the service chose (a turn's end reason, a reply part's type), as a
    journal line quotes it: cut to `limit`, on one printable line (see `one_line`)."""
    return one_line(cut(text, limit))


def words_on_one_line(text: str) -> str:
    """Words someone said or a service transcribed, as one printable line: line breaks and
    runs of spaces as one space, other controls as escapes (a line break would split the
    turn's journal line, or `ask`'s one line per reply)."""
    return one_line(" ".join(text.split()))


class ConfigError(Exception):
    """A setting is missing or wrong; the message is meant for the owner, as is, and a
    key pasted into the wrong setting is masked in it (it goes to the journal). A value
    it quotes (a file holds up to a MiB, a variable more) is cut to TEXT_LIMIT with it:
    journald makes a journal line of every 48 KiB of a longer one."""

    def __init__(self, message: str) -> None:
        super().__init__(cut(one_line(without_credentials(message))))


class ConfigFileUnusable(ConfigError):
    """The configuration file is missing where named, or no UTF-8 TOML file within the
    bound: no setting in it is to blame."""

    FIX = (
        "Make it a UTF-8 TOML file under 1 MiB (the README's Configuration section), or "
        "name the right one with --config or LIVE_APPLIANCE_CONFIG (the service's is "
        "/etc/live-appliance/config.toml)."
    )


class ConfigUnreadable(ConfigError):
    """The configuration file is there but this user may not read it: nothing in it is
    wrong. The installed one is root's and its service group's."""

    FIX = (
        "Run it with sudo, or as a member of the file's group (the installer adds the "
        "owner to live-appliance: log in again after it for that to take effect)."
    )

    def __init__(self, message: str, fix: str = FIX) -> None:
        super().__init__(message)
        #: FIX is for an owner at a shell; the service, which can neither, gets its own.
        self.fix = fix


class UnusableKey(ConfigError):
    """A key or token is there but cannot be used; `fix` says what to do about it, by
    where it is and why (the doctor shows it beside the message)."""

    def __init__(self, message: str, fix: str, source: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix
        #: The file it was read from ("api_key_file PATH", "systemd credential PATH"):
        #: only a file read again at each press is one the owner can mend without a restart.
        self.source = source


class LedsUnavailable(RuntimeError):
    """The configured LEDs cannot be opened; the message says how to fix it."""


#: asyncio's words for a connect that failed once under way, which drop the errno's own
#: ("No route to host": the router gone): "Connect call failed ('142.250.1.95', 443)"; and
#: for addresses of one host failing apart, "Multiple exceptions: [Errno 101] Connect ...".
_CONNECT_FAILED = "Connect call failed"
_JOINED = "Multiple exceptions: "
_ERRNO = re.compile(r"\[Errno (\d+)\]")


def errnos(exc: OSError) -> list[int]:
    """The errno of a failure, or each of those asyncio joined in one message."""
    if exc.errno is not None:
        return [exc.errno]
    said = str(exc)
    if not said.startswith(_JOINED):
        return []
    return [int(number) for number in _ERRNO.findall(said)]


def os_words(exc: OSError) -> str:
    """A network failure's reason in the system's words, whatever asyncio made of it."""
    said = str(exc.strerror or exc)
    numbers = errnos(exc)
    if exc.errno is not None and said.startswith(_CONNECT_FAILED):
        return f"{os.strerror(exc.errno)} ({said})"
    if exc.errno is None and numbers:
        reasons = dict.fromkeys(os.strerror(number) for number in numbers)
        return f"{'; '.join(reasons)} (each address of the host tried)"
    return said
