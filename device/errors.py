"""Exceptions more than one part of the package raises or catches, in a module that
imports nothing of the package (so no import cycle can run through them)."""

from __future__ import annotations

import re

#: What in an error's text may be a credential: a Gemini key, an ephemeral token, a URL's
#: key or token parameter (not a traceback's `key=` argument), an authenticating
#: header's value (websockets quotes it whole when it cannot send it). Kept to what
#: names it: the rest of the line stays.
_CREDENTIAL = re.compile(
    r"AIza[\w-]+|auth_tokens/[\w.~-]+"
    r"|(?P<param>[?&](?:access_token|key|token)=)[^&\s'\"]+"
    r"|(?P<header>(?:x-goog-api-key|authorization) header: )(?s:.*)",
    re.IGNORECASE,
)


def without_credentials(text: str) -> str:
    """`text` with anything that may be a key or token masked."""
    return _CREDENTIAL.sub(lambda m: (m["param"] or m["header"] or "") + "***", text)


class ConfigError(Exception):
    """A setting is missing or wrong; the message is meant for the owner, as is, and a
    key pasted into the wrong setting is masked in it (it goes to the journal)."""

    def __init__(self, message: str) -> None:
        super().__init__(without_credentials(message))


class ConfigUnreadable(ConfigError):
    """The configuration file is there but this user may not read it: nothing in it is
    wrong. The installed one is root's and its service group's."""

    FIX = (
        "Run it with sudo, or as a member of the file's group (the installer adds the "
        "owner to live-appliance: log in again after it for that to take effect)."
    )


class UnusableKey(ConfigError):
    """A key or token is there but cannot be used; `fix` says what to do about it, by
    where it is and why (the doctor shows it beside the message)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class LedsUnavailable(RuntimeError):
    """The configured LEDs cannot be opened; the message says how to fix it."""
