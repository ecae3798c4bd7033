"""PortAudio, opened without the sound libraries' chatter.

Opening PortAudio probes every ALSA device name in alsa.conf and the JACK
server; ALSA and JACK print each failure on stderr ("ALSA lib pcm.c:2666:
(snd_pcm_open_noupdate) Unknown PCM cards.pcm.rear", "jack server is not
running or cannot be started"), which under systemd is the journal: about
twenty lines at every start and every reopen, none of them worth knowing. Both
libraries let a program install its own handler for those messages; they go to
this module's debug log instead. JACK is also told not to start a server of its
own. Done once, before the first PortAudio call, only when the library is there.

The probe also loads every ALSA plugin the configuration names, and what each
links: on a Debian or Raspberry Pi OS box with libasound2-plugins, the a52
encoder pulls in libavcodec and some sixty more libraries. ALSA keeps them, and
its parsed configuration, until it is told to let go; PortAudio does that only at
Pa_Terminate. Once the scan is done they are let go of at once (ALSA reference-
counts what an open device still uses; the next open reads the configuration
again and loads only its own plugin): 10.7 MB of the daemon's resident memory
on the benchmark's loopback, 19.2 MB while the scan runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from typing import Any

import pyaudio

log = logging.getLogger(__name__)

# void handler(const char *file, int line, const char *function, int err, const char *fmt, ...)
# (the variadic arguments are not read: the format says what went wrong well enough).
_ALSA_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
_JACK_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
#: The handlers given to C: kept for the life of the process, or C would call freed memory.
_installed: list[Any] = []


def open_portaudio() -> pyaudio.PyAudio:
    """A PyAudio instance (Pa_Initialize), the libraries' chatter sent to the debug log."""
    if not _installed:
        _quiet_alsa()
        _quiet_jack()
    pa = pyaudio.PyAudio()
    _release_alsa_plugins()
    return pa


def _release_alsa_plugins() -> None:
    """Free ALSA's global configuration and unload the plugins no open device uses, as
    Pa_Terminate does (snd_config_update_free_global)."""
    library = _load("asound")
    if library is not None:
        library.snd_config_update_free_global()


def _quiet_alsa() -> None:
    def handler(file: bytes, line: int, function: bytes, err: int, fmt: bytes) -> None:
        log.debug("ALSA %s:%d %s: %s", _text(file), line, _text(function), _text(fmt))

    library = _load("asound")
    if library is not None:
        _installed.append(c_handler := _ALSA_HANDLER(handler))
        library.snd_lib_error_set_handler(c_handler)


def _quiet_jack() -> None:
    os.environ.setdefault("JACK_NO_START_SERVER", "1")

    def handler(message: bytes) -> None:
        log.debug("JACK: %s", _text(message))

    library = _load("jack")
    if library is not None:
        _installed.append(c_handler := _JACK_HANDLER(handler))
        library.jack_set_error_function(c_handler)
        library.jack_set_info_function(c_handler)


@functools.cache
def _load(name: str) -> ctypes.CDLL | None:
    """A library by its short name, looked for once (`find_library` runs a process)."""
    found = ctypes.util.find_library(name)
    if found is None:
        return None
    try:
        return ctypes.CDLL(found)
    except OSError as exc:
        log.debug("cannot load %s: %s", found, exc)
        return None


def _text(value: bytes | None) -> str:
    return value.decode(errors="replace").strip() if value else ""
