"""Vertex AI's credentials: loaded, and their access token refreshed, in threads of our own.

google-genai refreshes a token past its hour with `asyncio.to_thread`, in the loop's
worker pool, and google-auth gives the token server 120 s: each press through an
internet outage left a worker waiting on it, and a few presses left the camera's start
and the audio keeper's calls queued behind them ("the camera did not answer"). The SDK
takes the credentials it is given, and a token still valid as it is: the box refreshes
it before each connect (`Token.fresh`), one refresh at a time, each given a connect's
time at the token server.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

import google.auth
from google.auth import exceptions as auth_errors

from device.tasks import failure_seen
from device.workers import own_thread

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

    from device.config import Config

#: What the SDK asks application default credentials for.
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
#: The name of the thread a refresh runs in.
THREAD = "vertex-token"


class TokenServerSilent(auth_errors.TransportError):
    """A connect ran out of time while its token's refresh still waited for the server."""


def load(cfg: Config) -> Credentials | None:
    """Vertex AI's application default credentials, as the SDK would load them; None on
    the Gemini API. Blocking: it reads a file, or asks a metadata server."""
    if cfg.live.backend != "vertex":
        return None
    credentials, _ = google.auth.default(scopes=SCOPES)
    return credentials


class Token:
    """Keeps the access token of `credentials` valid for the SDK's connects."""

    def __init__(self, credentials: Credentials, timeout_s: float) -> None:
        """`timeout_s`: what the token server is given to answer (a connect's timeout)."""
        self.credentials = credentials
        self._timeout_s = timeout_s
        self._refresh: asyncio.Future[None] | None = None

    @property
    def refreshing(self) -> bool:
        """A refresh is waiting for the token server."""
        return self._refresh is not None and not self._refresh.done()

    async def fresh(self) -> None:
        """A valid token, for the SDK to take as it is. A refresh under way is waited for,
        not started again: presses through an outage add no thread waiting for the token
        server; cancelled, the wait leaves the refresh to the next one."""
        if self.credentials.valid:
            return
        if self._refresh is None or self._refresh.done():
            # A future, not a task: a stop that comes while the token server hangs leaves
            # its thread to finish alone, and no task behind.
            self._refresh = own_thread(self._refresh_now, THREAD)
            # A connect that timed out said so (the token server's silence); the next
            # one refreshes anew: a failure after that is nobody's to raise.
            self._refresh.add_done_callback(failure_seen)
        await asyncio.shield(self._refresh)

    def _refresh_now(self) -> None:
        """In its thread: what the SDK's refresh does, within the timeout."""
        from google.auth.transport.requests import Request

        request = functools.partial(Request(), timeout=self._timeout_s)
        self.credentials.refresh(request)

    def timed_out(self) -> Exception | None:
        """What a connect that ran out of time is best reported as, if its refresh was
        still waiting then: the token server, not the Live API (the journal said "no
        answer from the Live API in time")."""
        if not self.refreshing:
            return None
        return TokenServerSilent(f"the token server did not answer in {self._timeout_s:g} s")
