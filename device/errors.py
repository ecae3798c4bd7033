"""Exceptions more than one part of the package raises or catches, in a module that
imports nothing of the package (so no import cycle can run through them)."""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing or wrong; the message is meant for the owner, as is."""


class ConfigUnreadable(ConfigError):
    """The configuration file is there but this user may not read it: nothing in it is
    wrong. The installed one is root's and its service group's."""

    FIX = (
        "Run it with sudo, or as a member of the file's group (the installer adds the "
        "owner to live-appliance: log in again after it for that to take effect)."
    )


class LedsUnavailable(RuntimeError):
    """The configured LEDs cannot be opened; the message says how to fix it."""
