"""A Vertex AI model named as the Gemini API names it ("models/..."), as the setup that
reaches the service carries it."""

from __future__ import annotations

import dataclasses

import google.auth
import pytest
from helpers import until
from test_live_session import Credentials
from wire import config_for

from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import Event, SetupComplete
from rig.server.server import LiveServer


async def setup_model(monkeypatch: pytest.MonkeyPatch, model: str) -> str:
    """The model the setup of one press names, on Vertex AI with `model` configured."""
    monkeypatch.setattr(Credentials, "made", [])  # this press's first: token-1
    monkeypatch.setattr(google.auth, "default", lambda **_: (Credentials(), "p"))
    events: list[Event] = []
    async with LiveServer(pace=0, reply_seconds=0.2, bearer_tokens={"token-1"}) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        live = {"backend": "vertex", "project": "p", "location": "l", "model": model}
        cfg = dataclasses.replace(config_for(server, live=live), api_key=None)
        link = LiveLink(cfg, Outbox(5), events.append, lambda _item, _t: None)
        link.open(1)
        await until(lambda: events)
        await link.close()
        assert isinstance(events[-1], SetupComplete), events
        return str(server.log.connections()[-1].setup["model"])


async def test_a_vertex_model_named_with_the_gemini_apis_prefix_is_the_publishers_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`model = "models/gemini-3.8-live"`, as the Gemini API's examples write it, loads
    (the config takes "models/" as the Gemini API does); on Vertex AI the SDK kept it as
    it was, and the setup named "models/gemini-3.8-live", where Vertex AI's publisher
    models are "projects/P/locations/L/publishers/google/models/NAME": the same model
    named without the prefix, which is what the owner meant."""
    bare = await setup_model(monkeypatch, "gemini-3.8-live")
    assert bare == "projects/p/locations/l/publishers/google/models/gemini-3.8-live"
    assert await setup_model(monkeypatch, "models/gemini-3.8-live") == bare
