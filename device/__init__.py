"""live-appliance: a Raspberry Pi voice appliance on the Gemini Live API."""

__version__ = "0.1.0"
