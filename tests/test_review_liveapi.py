"""Review of what the Live API is offered: settings that cannot work together or cannot
work at all, and credentials that stop working while the box is left alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.auth import exceptions as auth_errors

from device import config
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.doctor.settings import check_key
from device.live.errors import describe_failure, failure_fields, is_refusal

VERTEX = "[live]\nbackend = 'vertex'\nproject = 'my-project'\nlocation = 'us-central1'\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key or setting from this shell, and no installer's key file of this machine."""
    overrides = [name for name in os.environ if name.startswith(config.ENV_PREFIX)]
    for name in ("CREDENTIALS_DIRECTORY", *config.KEY_ENV_VARS, *overrides):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", tmp_path / "no-installed-key")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# ---- Vertex AI and a key file -----------------------------------------------------------


def test_a_key_file_named_beside_vertex_ai_is_a_config_error(tmp_path: Path) -> None:
    """Vertex AI signs in with application default credentials: the client is never given
    the key. A token minter's file named with `backend = 'vertex'` started the box, which
    then failed every press with "DefaultCredentialsError" (or, with credentials, never
    used the token): the owner is told at start, by setting, what does not go together."""
    token = tmp_path / "token"
    token.write_text("auth_tokens/minted-for-the-gemini-api\n")
    path = write(tmp_path, f"{VERTEX}api_key_file = '{token}'\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: [live] api_key_file: ")
    assert "backend 'vertex'" in message and "application default credentials" in message
    assert "auth_tokens/minted" not in message


# ---- a token where the service reads it only once ---------------------------------------


@pytest.mark.parametrize("where", ["credential", "environment"])
async def test_the_doctor_warns_of_a_token_the_service_cannot_renew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """An ephemeral token opens one session, and none a minute after it was made. In the
    systemd credential (a copy of /etc/live-appliance/api-key made at the service's
    start) or in the service's environment, the next token a job writes is never seen:
    the box works once, then every press is refused. The doctor said PASS."""
    token = "auth_tokens/minted-an-hour-ago-0123"
    if where == "credential":
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / config.CREDENTIAL_NAME).write_text(token + "\n")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    else:
        monkeypatch.setenv("GEMINI_API_KEY", token)
    cfg = config.load(write(tmp_path, ""))
    result = await check_key(Context(cfg, Options(), Progress(spinner=False)))
    assert result.status is Status.WARN, result
    assert "ephemeral token" in result.measured and token not in result.measured
    assert result.fix is not None and "[live] api_key_file" in result.fix


async def test_a_token_in_the_key_file_the_service_rereads_passes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("auth_tokens/minted-a-moment-ago-0123\n")
    cfg = config.load(write(tmp_path, f"[live]\napi_key_file = '{token}'\n"))
    result = await check_key(Context(cfg, Options(), Progress(spinner=False)))
    assert result.status is Status.PASS, result


# ---- context window compression ---------------------------------------------------------


@pytest.mark.parametrize("setting", ["compression_trigger_tokens", "compression_target_tokens"])
def test_compression_beyond_the_context_window_is_a_config_error(
    tmp_path: Path, setting: str
) -> None:
    """The Live models' context window is 128k tokens (131,072): a trigger above it is
    never reached, so the sliding window never slides and the session is cut at the
    limit after all. 10**6 was allowed."""
    path = write(tmp_path, f"[live]\n{setting} = 500000\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == (
        f"{path}: [live] {setting}: must be between "
        f"{'1000' if 'trigger' in setting else '500'} and 131072 (got 500000)"
    )


# ---- Vertex AI credentials that stop working --------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        auth_errors.DefaultCredentialsError(
            "Your default credentials were not found. To set up Application Default "
            "Credentials, see https://cloud.google.com/docs/authentication/external/set-up-adc "
            "for more information."
        ),
        auth_errors.RefreshError(
            "invalid_grant: Token has been expired or revoked.",
            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
        ),
    ],
    ids=["none", "revoked"],
)
def test_vertex_credentials_that_no_longer_work_are_said_as_such_and_not_retried(
    failure: Exception,
) -> None:
    """A Vertex AI box whose application default credentials went (a file removed, a
    refresh token revoked months later) showed "RefreshError: ('invalid_grant: ...',
    {...})" and, mid-conversation, reconnected for reconnect_for_s though no try could
    succeed."""
    words = describe_failure(failure)
    assert words.startswith("Vertex AI credentials: "), words
    assert "{" not in words and "Error:" not in words
    assert failure_fields(failure)["LIVE_FAILURE"] == "credentials"
    assert is_refusal(failure)


def test_a_credentials_server_out_of_reach_is_the_network_and_retried() -> None:
    failure = auth_errors.TransportError(
        "HTTPSConnectionPool(host='oauth2.googleapis.com', port=443): Max retries exceeded"
    )
    assert failure_fields(failure)["LIVE_FAILURE"] == "network"
    assert describe_failure(failure).startswith("network: Vertex AI credentials: ")
    assert not is_refusal(failure)


# ---- a tool's time against the turn's -----------------------------------------------------


def test_a_tool_timeout_the_reply_timer_cuts_short_is_a_config_error(tmp_path: Path) -> None:
    """A push-to-talk turn whose reply has not started after reply_timeout_s ends with
    the error earcon, and a tool at work does not hold that timer: `[tools] timeout_s =
    60` beside the default 30 s showed the error while the tool still had 30 s to go, and
    its answer, then the reply, came after the turn had been given up."""
    path = write(tmp_path, "[tools]\nenabled = ['get_time']\ntimeout_s = 60\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == (
        f"{path}: [tools] timeout_s (60) must be below [conversation] reply_timeout_s (30): "
        "a turn whose reply has not started by then ends with the error"
    )
    config.load(write(tmp_path, "[tools]\ntimeout_s = 60\n"))  # no tools: nothing to wait for
