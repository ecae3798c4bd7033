"""Exceptions more than one part of the package raises or catches, in a module that
imports nothing of the package (so no import cycle can run through them)."""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing or wrong; the message is meant for the owner, as is."""


class LedsUnavailable(RuntimeError):
    """The configured LEDs cannot be opened; the message says how to fix it."""
