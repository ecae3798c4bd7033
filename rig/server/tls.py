"""A throwaway certificate authority so real TLS clients can reach a local server.

The SDK forces ``wss://`` whenever it holds an API key, so the local server must
speak TLS with a certificate the client trusts. trustme makes a CA and a leaf
certificate for 127.0.0.1/localhost in milliseconds; the CA goes to a PEM file
that clients name in ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from pathlib import Path

import trustme

SERVER_NAMES = ("127.0.0.1", "localhost", "::1")


class LocalCA:
    """A CA, its PEM file on disk, and a server certificate for the loopback names."""

    def __init__(self, directory: Path | None = None, ca: trustme.CA | None = None) -> None:
        """A new CA, or `ca` (one kept from an earlier server, for clients that trust it)."""
        self._owned_dir = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="live-sim-ca-")) if directory is None \
            else directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca = ca or trustme.CA(organization_name="live-appliance local Live API")
        self._cert = self._ca.issue_cert(*SERVER_NAMES)
        self.ca_file = self.directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        """TLS context for the server side, presenting the loopback certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """TLS context trusting only this CA (for raw clients and async_client_args)."""
        # Not create_default_context: loading the system's CA store as well takes 50 ms.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ca.configure_trust(ctx)
        return ctx

    def cleanup(self) -> None:
        """Remove the PEM file (and the directory, if this object made it)."""
        if self._owned_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            self.ca_file.unlink(missing_ok=True)
