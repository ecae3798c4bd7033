"""Configuration: typed values, clear errors for the owner, the key never shown."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest
from fakes import running
from helpers import journal_lines, open_refused, run_cli

from device import appliance, cli, config
from device.cli import main
from device.config import load
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.doctor.settings import check_key
from device.errors import ConfigError

KEY = "AIza-very-secret-key-0123456789"
VERTEX = "[live]\nbackend = 'vertex'\nproject = 'my-project'\nlocation = 'us-central1'\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key or setting from this shell (the command line runs in this process too)."""
    overrides = [name for name in os.environ if name.startswith(config.ENV_PREFIX)]
    for name in ("CREDENTIALS_DIRECTORY", *config.KEY_ENV_VARS, *overrides):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_when_the_default_file_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", Path("/nonexistent/config.toml"))
    cfg = config.load()
    assert cfg.live.model == "gemini-3.8-live"
    assert cfg.button.mode == "push_to_talk"
    assert cfg.audio.chunk_ms == 40
    assert cfg.path is None


def test_values_are_read_and_typed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[live]
model = "gemini-3.1-flash-live-preview"
base_url = "https://127.0.0.1:8443"
voice = "Kore"
[audio]
input_device = 2
output_device = "USB"
chunk_ms = 20
[button]
pin = 27
mode = "toggle"
[leds]
kind = "single"
pins = [12]
[conversation]
idle_timeout_s = 5
""",
    )
    cfg = config.load(path)
    assert cfg.path == path
    assert cfg.live.model == "gemini-3.1-flash-live-preview"
    assert cfg.live.voice == "Kore"
    assert cfg.audio.input_device == 2
    assert cfg.audio.output_device == "USB"
    assert cfg.audio.chunk_ms == 20
    assert (cfg.button.pin, cfg.button.mode) == (27, "toggle")
    assert cfg.leds.pins == (12,)
    assert cfg.conversation.idle_timeout_s == 5.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[audio]\nchunk_ms = 'fast'", "[audio] chunk_ms: must be an integer (got 'fast')"),
        ("[audio]\nchunk_ms = 5", "[audio] chunk_ms: must be between 10 and 100 (got 5)"),
        ("[button]\nmode = 'hold'", "[button] mode: must be one of 'push_to_talk', 'toggle'"),
        ("[button]\npinn = 3", "[button] pinn: unknown setting (did you mean pin?); allowed: pin"),
        ("[speaker]\nx = 1", "unknown section [speaker]"),
        ("[leds]\nkind = 'rgb'\npins = [1]", "kind 'rgb' needs 3 pin(s) (got 1)"),
        ("[live]\nbackend = 'vertex'", "needs project and location"),
        ("[live\nmodel = 1", "not valid TOML"),
        ("[hardware]\nprofile = ['x']", "[hardware] profile: must be one of"),
        ("[hardware]\nprofile = {a = 1}", "[hardware] profile: must be one of"),
        ("[live]\nkeepalive_s = 40", "keepalive_s (40) must be below dead_after_s (30)"),
        ("[live]\nbase_url = 'proxy.example.com:8443'", "base_url: must be an http:// or"),
        ("[live]\nbase_url = 'https://'", "base_url: must be an http:// or"),
        ("[live]\nbase_url = 'https://h:port'", "base_url: must be an http:// or"),
        ("[live]\nbase_url = 'https://bücher..example'", "too long label)"),
        ("[live]\nbase_url = 'https://live..example.com'", "too long label)"),
        ("[leds]\nkind = 'rgb'\npins = [5, 6, 99]", "[leds] pins: must be between 0 and 27"),
        ("[control]\nsocket = 'live.sock'", "[control] socket: must be an absolute path"),
        ("[service]\nstate_dir = 'state'", "[service] state_dir: must be an absolute path"),
        ("[live]\napi_key_file = 'key.txt'", "[live] api_key_file: must be an absolute path"),
        ("[live]\nsystem_instruction_file = 'p.txt'", "system_instruction_file: must be an abs"),
        ("[control]\nmode = 660", "between 0o600 and 0o666 (got 660, which is 0o1224)"),
        ("[control]\nmode = 0o640", "mode: 0o640 lets the group read the socket but not"),
        ("[control]\nmode = 0o664", "mode: 0o664 lets others on the box use the socket"),
        ("[audio]\ninput_device = -1", "[audio] input_device: must be between 0 and 1023"),
        ("[audio]\noutput_device = -2", "[audio] output_device: must be between 0 and 1023"),
        (
            "[live]\nmodel = 'gemini-live-2.5-flash-native-audio'",
            "gemini-live-2.5-flash-native-audio is not served on backend 'gemini'",
        ),
        (
            "[live]\nbackend = 'vertex'\nproject = 'p'\nlocation = 'l'\n"
            "model = 'gemini-3.1-flash-live-preview'",
            "gemini-3.1-flash-live-preview is not served on backend 'vertex'; choose",
        ),
    ],
)
def test_bad_values_name_file_key_and_what_is_allowed(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("text", "section", "got"),
    [
        ('hardware = "respeaker-2mic"', "hardware", "'respeaker-2mic'"),
        ('live = "gemini-3.8-live"', "live", "'gemini-3.8-live'"),
        ("leds = 3", "leds", "3"),
        ("[[audio]]\nvolume = 0.5", "audio", "[{'volume': 0.5}]"),
    ],
)
def test_a_section_written_as_a_value_is_named_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, section: str, got: str
) -> None:
    """`hardware = "respeaker-2mic"` was "[hardware] profile: must be one of ... (got
    None)": a setting the owner never wrote."""
    path = write(tmp_path, text)
    wanted = (
        f"{path}: [{section}] must be a table of settings: a line [{section}], its settings "
        f"on the lines below (got {section} = {got})"
    )
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == wanted
    monkeypatch.setenv(f"LIVE_APPLIANCE_{section.upper()}_X", "1")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == wanted


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="no such configuration file"):
        config.load(tmp_path / "missing.toml")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[audio]\nchunk_ms = 40\n")
    monkeypatch.setenv(config.ENV_PATH, str(path))
    monkeypatch.setenv("LIVE_APPLIANCE_AUDIO_CHUNK_MS", "30")
    monkeypatch.setenv("LIVE_APPLIANCE_LIVE_BASE_URL", "https://127.0.0.1:9")
    cfg = config.load()
    assert cfg.audio.chunk_ms == 30
    assert cfg.live.base_url == "https://127.0.0.1:9"


def test_a_string_setting_from_the_environment_keeps_its_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Vertex project number is a project; a device index is still an index."""
    vertex = "[live]\nbackend = 'vertex'\nlocation = 'us-central1'\n"
    monkeypatch.setenv("LIVE_APPLIANCE_LIVE_PROJECT", "123456789012")
    monkeypatch.setenv("LIVE_APPLIANCE_LIVE_MODEL", "gemini-3.8-live")
    monkeypatch.setenv("LIVE_APPLIANCE_AUDIO_OUTPUT_DEVICE", "2")
    monkeypatch.setenv("LIVE_APPLIANCE_AUDIO_INPUT_DEVICE", '"2"')
    cfg = config.load(write(tmp_path, vertex))
    assert cfg.live.project == "123456789012"
    assert (cfg.audio.output_device, cfg.audio.input_device) == (2, "2")
    monkeypatch.setenv("LIVE_APPLIANCE_AUDIO_CHUNK_MS", "twenty")
    with pytest.raises(config.ConfigError, match="CHUNK_MS: must be an integer"):
        config.load(write(tmp_path, vertex))


def test_an_override_is_named_by_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "")
    monkeypatch.setenv("LIVE_APPLIANCE_AUDIO_CHUNK_MS", "5")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == (
        "environment variable LIVE_APPLIANCE_AUDIO_CHUNK_MS: must be between 10 and 100 (got 5)"
    )
    monkeypatch.delenv("LIVE_APPLIANCE_AUDIO_CHUNK_MS")
    monkeypatch.setenv("LIVE_APPLIANCE_AUDIO_CHUNKMS", "20")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(caught.value).startswith(
        "environment variable LIVE_APPLIANCE_AUDIO_CHUNKMS: unknown setting [audio] chunkms "
        "(did you mean LIVE_APPLIANCE_AUDIO_CHUNK_MS?);"
    )


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("LIVE_APPLIANCE_LIVE_VOICE", "puck", "[live] voice"),
        ("LIVE_APPLIANCE_LIVE_API_VERSION", "v2", "[live] api_version"),
        ("LIVE_APPLIANCE_LIVE_LANGUAGE", "German", "[live] language"),
        ("LIVE_APPLIANCE_LIVE_BASE_URL", "localhost:8080", "[live] base_url"),
        ("LIVE_APPLIANCE_LIVE_API_KEY_FILE", "token", "[live] api_key_file"),
        ("LIVE_APPLIANCE_HARDWARE_PROFILE", "respeaker", "[hardware] profile"),
        ("LIVE_APPLIANCE_LEDS_PINS", "[5, 6]", "[leds] pins"),
        ("LIVE_APPLIANCE_BUTTON_PIN", "5", "[button] pin"),
    ],
)
def test_a_value_from_the_environment_the_checks_refuse_is_named_by_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, setting: str
) -> None:
    """A drop-in's `Environment=LIVE_APPLIANCE_LIVE_VOICE=puck`: the error named the
    file, where no voice is written, and not the variable that set it."""
    path = write(tmp_path, "")
    monkeypatch.setenv(variable, value)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    message = str(caught.value)
    assert variable in message and setting in message, message


def test_a_variable_for_a_misspelt_section_is_an_error_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "")
    for variable, wanted in [("LIVE_APPLIANCE_VOLUME", "LIVE_APPLIANCE_AUDIO_VOLUME"),
                             ("LIVE_APPLIANCE_API_KEY", "the key goes in GEMINI_API_KEY"),
                             ("LIVE_APPLIANCE_AUDIO", r"names section \[audio\] but no setting")]:
        monkeypatch.setenv(variable, "0.3")  # a section left out: not silently nothing
        with pytest.raises(config.ConfigError, match=wanted):
            config.load(path)
        monkeypatch.delenv(variable)
    monkeypatch.setenv("LIVE_APPLIANCE_LED_KIND", "none")
    with pytest.raises(config.ConfigError, match=r"LIVE_APPLIANCE_LED_KIND: no section \[led\]; "
                       "did you mean LIVE_APPLIANCE_LEDS_"):
        config.load(path)


VOICE_LIST = "Zephyr, Puck, Charon, Kore, Fenrir, Leda, Orus, Aoede, Callirrhoe, Autonoe"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[live]\napi_version = 'v2'",
         "[live] api_version: backend 'gemini' serves 'v1', 'v1beta', 'v1alpha' (got 'v2')"),
        ("[live]\nbackend = 'vertex'\nproject = 'p'\nlocation = 'l'\napi_version = 'v1alpha'",
         "[live] api_version: backend 'vertex' serves 'v1', 'v1beta1' (got 'v1alpha')"),
        ("[live]\nvoice = 'Bob'", f"[live] voice: must be a prebuilt voice: {VOICE_LIST}"),
        ("[live]\nvoice = 'kore'", "[live] voice: must be a prebuilt voice: "),
        ("[live]\nlanguage = 'German'",
         "[live] language: must be a BCP-47 language tag such as 'en-US', 'de-DE' or 'cmn-CN' "
         "(got 'German')"),
        ("[live]\nlanguage = 'en_US'", "[live] language: must be a BCP-47 language tag"),
        ("[live]\nvoice = '  '", "[live] voice: must be a non-empty string (got '  ')"),
        ("[live]\nlanguage = ' '", "[live] language: must be a non-empty string (got ' ')"),
        ('[live]\nsystem_instruction = """\n \n"""',
         "[live] system_instruction: must be a non-empty string (got ' \\n')"),
    ],
)  # fmt: skip
def test_live_settings_the_service_would_refuse_at_every_press_stop_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    """An unknown version, voice or language was a failed setup at each press, not at start."""
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(caught.value).startswith(f"{path}: {expected}")
    assert cli.main(["run", "--config", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_live_settings_the_service_serves_load(tmp_path: Path) -> None:
    for text in [
        "[live]\napi_version = 'v1beta'\nvoice = 'Sulafat'\nlanguage = 'cmn-CN'",
        "[live]\napi_version = 'v1'\nvoice = 'Zubenelgenubi'\nlanguage = 'en'",
        "[live]\nlanguage = 'zh-Hans-CN'\nsystem_instruction = ' Be brief. '",
        "[live]\nbackend = 'vertex'\nproject = 'p'\nlocation = 'l'\napi_version = 'v1beta1'",
        "[live]\nlanguage = 'es-419'",
        "[live]\nlanguage = 'zh-yue-HK'",  # an extended language subtag
        "[live]\nlanguage = 'en-US-u-ca-gregory'",  # an extension
        "[live]\nlanguage = 'de-DE-x-formal'",  # a private use subtag
    ]:
        live = config.load(write(tmp_path, text), whole=False).live
        assert live.voice in (None, *config.VOICES)


@pytest.mark.parametrize(
    "variable",
    ["LIVE_APPLIANCE_SPEAKER_VOLUME", "LIVE_APPLIANCE_GEMINI_MODEL", "LIVE_APPLIANCE_SOMETHING"],
)
def test_a_variable_for_no_section_at_all_is_an_error_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """The owner meant a setting: a box that ignores it is not the box they configured."""
    monkeypatch.setenv(variable, "0.3")
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, ""))
    section = variable.removeprefix("LIVE_APPLIANCE_").split("_")[0].lower()
    assert str(caught.value) == (
        f"environment variable {variable}: no section [{section}]; a setting's variable is "
        f"LIVE_APPLIANCE_<SECTION>_<SETTING>, the sections: {', '.join(config.SECTIONS)}"
    )


def test_the_projects_own_variables_are_not_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the test rig, the HIL runs and CI set stays theirs: the daemons they start
    inherit it."""
    for name, value in [("LIVE_APPLIANCE_LOG_FORMAT", "json"), ("LIVE_APPLIANCE_HIL", "vm"),
                        ("LIVE_APPLIANCE_HIL_STRICT", "1"), ("LIVE_APPLIANCE_HIL_CACHE", "/c")]:
        monkeypatch.setenv(name, value)
    path = write(tmp_path, "")
    monkeypatch.setenv("LIVE_APPLIANCE_CONFIG", str(path))
    assert config.load().path == path


@pytest.mark.parametrize(
    ("key", "kind", "position"),
    [
        ("AIza-first-line\nsecond-line", "a space or control character", 16),
        ("AIza-zero\u200bwidth", "a non-ASCII character", 10),
        ("AIza with space", "a space or control character", 5),
    ],
)
def test_a_key_no_header_can_carry_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, kind: str, position: int
) -> None:
    """Else every connection fails, and websockets quotes the whole key in its error."""
    keyfile = tmp_path / "key.txt"
    keyfile.write_text(key)
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, f"[live]\napi_key_file = '{keyfile}'\n"))
    assert str(caught.value) == (
        f"api_key_file {keyfile}: the API key has {kind} at position {position}, which no key "
        "has; copy the key again"
    )
    monkeypatch.setenv("GEMINI_API_KEY", key)
    with pytest.raises(config.ConfigError, match="environment variable GEMINI_API_KEY: the API"):
        config.load(write(tmp_path, ""))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('"AIza-from-a-toml-file"\n', "the API key is in quotation marks; write it without them"),
        ("'AIza-from-a-shell-line'\n", "the API key is in quotation marks; write it without them"),
        ("GEMINI_API_KEY=AIza-from-an-env-file\n",
         "holds NAME=value, not the API key alone; write only the key"),
    ],
)
def test_a_key_copied_with_its_quotes_or_its_name_is_refused_at_start(
    tmp_path: Path, text: str, problem: str
) -> None:
    """Printable ASCII, so it passed, and every press failed with a refused key (1008)."""
    keyfile = tmp_path / "key.txt"
    keyfile.write_text(text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, f"[live]\napi_key_file = '{keyfile}'\n"))
    assert str(caught.value) == f"api_key_file {keyfile}: {problem}"
    assert "AIza" not in str(caught.value)


def test_a_key_file_that_is_not_text_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cred = tmp_path / "cred"
    cred.mkdir()
    (cred / "api-key").write_bytes(b"\xff\xfe-not-utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred))
    with pytest.raises(config.ConfigError, match="api-key is not UTF-8 text; write the key again"):
        config.load(write(tmp_path, ""))


def test_a_relative_key_or_persona_file_is_refused_even_where_it_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service runs in /run/live-appliance: a path the owner's shell found (the doctor
    in their directory) would not be found there, and the box would have no key."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "key.txt").write_text("AIza-from-a-relative-file\n")
    (tmp_path / "persona.txt").write_text("Be brief.\n")
    for setting, name in [("api_key_file", "key.txt"), ("system_instruction_file", "persona.txt")]:
        path = write(tmp_path, f"[live]\n{setting} = '{name}'\n")
        with pytest.raises(config.ConfigError) as caught:
            config.load(path)
        assert str(caught.value) == (
            f"{path}: [live] {setting}: must be an absolute path (got '{name}')"
        )
    monkeypatch.setenv("HOME", str(tmp_path))  # `~` is the user's home, wherever it runs
    cfg = config.load(write(tmp_path, "[live]\napi_key_file = '~/key.txt'\n"))
    assert cfg.api_key == config.Secret("AIza-from-a-relative-file")


def test_a_bad_credential_names_the_file_the_owner_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd's copy in /run/credentials is not the file to correct, nor is it lasting."""
    cred = tmp_path / "cred"
    cred.mkdir()
    (cred / "api-key").write_text("AIza with space\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred))
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, ""))
    assert str(caught.value) == (
        f"systemd credential {cred}/api-key: the API key has a space or control character at "
        "position 5, which no key has; copy the key again into /etc/live-appliance/api-key "
        "and restart the service"
    )
    (cred / "api-key").write_bytes(b"\xff")
    with pytest.raises(config.ConfigError, match="api-key is not UTF-8 text; write the key again "
                       "into /etc/live-appliance/api-key and restart the service"):
        config.load(write(tmp_path, ""))


def test_ctl_does_not_need_the_key(tmp_path: Path) -> None:
    """`ctl` reads the socket's path only: a key it may not read is the daemon's business."""
    path = write(tmp_path, f"[live]\napi_key_file = '{tmp_path}'\n")  # a directory
    with pytest.raises(config.ConfigError, match="is a directory"):
        config.load(path)
    assert config.load(path, whole=False).api_key is None


def test_key_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cred = tmp_path / "cred"
    cred.mkdir()
    (cred / "api-key").write_text("from-credential\n")
    keyfile = tmp_path / "key.txt"
    keyfile.write_text("from-file")
    path = write(tmp_path, f"[live]\napi_key_file = '{keyfile}'\n")
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")

    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred))
    assert config.load(path).api_key == config.Secret("from-credential")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert config.load(path).api_key == config.Secret("from-file")
    assert config.load(write(tmp_path, "")).api_key == config.Secret("from-env")


def test_the_key_never_shows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    cfg = config.load(write(tmp_path, ""))
    assert cfg.api_key is not None and cfg.api_key.reveal() == KEY
    assert KEY not in repr(cfg)
    assert KEY not in str(cfg.api_key)
    assert cfg.api_key_source == "environment variable GEMINI_API_KEY"


def test_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ""))
    with pytest.raises(config.ConfigError, match="no API key"):
        config.require_credentials(cfg)


def test_the_units_default_credential_is_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no key file, systemd hands the service the unit's SetCredential= default."""
    unit = Path(__file__).parent.parent / "systemd" / "live-appliance.service"
    line = next(x for x in unit.read_text().splitlines() if x.startswith("SetCredential=api-key:"))
    cred = tmp_path / "cred"
    cred.mkdir()
    (cred / "api-key").write_text(line.split(":", 1)[1].encode().decode("unicode_escape"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred))

    with pytest.raises(config.ConfigError, match="no API key"):
        config.require_credentials(config.load(write(tmp_path, "")))
    vertex = "[live]\nbackend = 'vertex'\nproject = 'p'\nlocation = 'us-central1'\n"
    cfg = config.load(write(tmp_path, vertex))
    config.require_credentials(cfg)  # application default credentials: no key needed
    assert cfg.api_key is None


# The command line runs in this process: `python -m device` is `sys.exit(cli.main())`, and a
# process of its own would only add its start-up (test_cli runs the command as a process).


def test_cli_reports_a_bad_file_with_exit_code_2_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[audio]\nchunk_ms = 'fast'\n")
    assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{path}: [audio] chunk_ms: must be an integer" in err


def test_cli_without_a_key_exits_2_and_says_how_to_give_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--config", str(write(tmp_path, ""))]) == 2
    assert "no API key" in capsys.readouterr().err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name in ("run", "ctl", "devices", "doctor", "ask"):
        assert name in out


@pytest.mark.parametrize(
    ("settings", "wanted"),
    [
        ('[tools]\nenabled = ["get_time", "open_the_door"]', "unknown tool 'open_the_door'"),
        ('[live]\nsystem_instruction_file = "{empty}"', "is empty"),
        ('[live]\nsystem_instruction_file = "{latin1}"', "is not UTF-8 text"),
        ('[live]\nsystem_instruction_file = "{fifo}"', "is not a regular file"),
        ('[live]\nsystem_instruction_file = "/dev/zero"', "is not a regular file"),
        ('[live]\nsystem_instruction_file = "{huge}"', "is over 64 KiB"),
        ('[live]\nsystem_instruction = "{inline}"', "system_instruction: is over 64 KiB"),
        ('[control]\nsocket = "/run/{long}/control.sock"', "may have at most 107"),
        ('[live]\nmodel = "gemini-3.8-live"\nproactive_audio = false', "proactive_audio"),
        ("[button]\npin = 5", "pin and .leds. pins both name GPIO 5"),
        ('[leds]\nkind = "multi"\npins = [20, 21, 20]', "pins both name GPIO 20"),
        ('[hardware]\nprofile = "respeaker-2mic"\n[button]\npin = 10',
         "pin and the pixels' SPI0 MOSI both name GPIO 10"),
        ('[hardware]\nprofile = "respeaker-2mic"\n[button]\npin = 7',
         "pin and the pixels' SPI0 CE1 both name GPIO 7"),
        ('[hardware]\nprofile = "voice-bonnet"\n[button]\npin = 19',
         "pin and the voice-bonnet HAT's I2S LRCLK both name GPIO 19"),
        ('[control]\nsocket = "/run/a\\u0000b"', "cannot hold a NUL character"),
        ('[live]\nsystem_instruction_file = "{missing}"', "persona.md does not exist"),
        ('[leds]\nkind = "multi"\npins = []', "kind 'multi' needs at least one pin"),
        ('[leds]\nkind = "single"\npins = [28]', "must be between 0 and 27 .got 28."),
        ('[leds]\nkind = "apa102"\ndata_pin = 10', "set both .pixels on GPIO. or neither"),
        ('[camera]\nenabled = true\nled_pin = 17', "pin and .camera. led_pin both name GPIO 17"),
    ],
)
def test_what_the_daemon_would_refuse_the_configuration_refuses_with_the_same_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: str, wanted: str
) -> None:
    """One validation: the doctor's config check (config.load) and the daemon agree."""
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "huge.txt").write_text("Be kind. " * 10_000)
    os.mkfifo(tmp_path / "persona.fifo")  # opened for reading, it would wait for a writer
    text = settings.format(
        empty=tmp_path / "empty.txt", latin1=tmp_path / "latin1.txt",
        fifo=tmp_path / "persona.fifo", huge=tmp_path / "huge.txt", long="x" * 100,
        inline="Be kind. " * 10_000, missing=tmp_path / "persona.md",
    )  # fmt: skip
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError, match=wanted) as caught:
        config.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    code = cli.main(["doctor", "config", "--config", str(path), "--json"])
    assert re.search(wanted.split("'")[0], capsys.readouterr().out) and code == 1


@pytest.mark.parametrize("edited", ["persona", "configuration"])
def test_a_file_saved_in_latin1_says_where_and_how_to_convert_it(
    tmp_path: Path, edited: str
) -> None:
    """An editor set to Latin-1 (or Windows' "ANSI") saved the umlauts as single bytes:
    the doctor's fix was "Correct that setting", which is right; the file is not."""
    persona = tmp_path / "persona.txt"
    persona.write_bytes("Du bist eine Küchenhilfe.\nAntworte kurz.\n".encode())
    settings = f'[live]\nsystem_instruction_file = "{persona}"\n# Küche\n'
    latin1 = "Du bist eine Hilfe.\nSprich über Küche.\n".encode("latin-1")
    if edited == "persona":
        persona.write_bytes(latin1)
    else:
        settings += "# Gerät\n"
    path = tmp_path / "config.toml"
    path.write_bytes(settings.encode("latin-1") if edited == "configuration" else settings.encode())
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    line = 2 if edited == "persona" else 3
    assert f"is not UTF-8 text: byte 0xfc on line {line}" in str(caught.value)
    assert "save it as UTF-8" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "wanted"),
    [
        ("# K\xfcche\n[audio]\nvolume = 0.5\n".encode("latin-1"), "is not UTF-8 text"),
        ("fifo", "is not a regular file"),
        ("/dev/zero", "is not a regular file"),
        ("directory", "is a directory"),
        (b"# " + b"x" * (1024 * 1024) + b"\n", "is over 1024 KiB"),
        (b"a = " + b"[" * 100_000, "not valid TOML: nested too deep"),
    ],
)
def test_a_configuration_file_that_cannot_be_one_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | str, wanted: str
) -> None:
    """Exit 2, which systemd does not restart (a traceback's exit 1 was, in a loop), at
    once (a FIFO or a device is not read until it ends) and with a line that says why."""
    path = tmp_path / "config.toml"
    if content == "fifo":
        os.mkfifo(path)
    elif content == "directory":
        path.mkdir()
    elif content == "/dev/zero":
        path = Path("/dev/zero")
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    assert cli.main(["run", "--config", str(path)]) == 2
    said = capsys.readouterr().err
    assert f"configuration error: {path}" in said and wanted in said
    assert "Traceback" not in said


def test_an_editors_byte_order_mark_is_no_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes("\ufeff[audio]\nvolume = 0.5\n".encode())
    assert config.load(path, whole=False).audio.volume == 0.5


@pytest.mark.parametrize(
    ("settings", "command", "code"),
    [(f'[live]\napi_key_file = "{KEY}"', ["doctor", "key"], 1),
     (f'[live]\nbase_url = "{KEY}"', ["run"], 2)],
)  # fmt: skip
def test_a_key_pasted_into_the_wrong_setting_is_not_shown(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    settings: str,
    command: list[str],
    code: int,
) -> None:
    path = write(tmp_path, settings)
    assert cli.main([*command, "--config", str(path)]) == code
    said = "".join(capsys.readouterr())
    assert "***" in said and KEY[:8] not in said


def test_a_key_file_not_written_yet_is_waited_for(tmp_path: Path) -> None:
    """A token a job writes later (the README's set-up): exiting at start would stop the
    box for good (the unit does not restart a configuration error)."""
    token = tmp_path / "token"
    cfg = config.load(write(tmp_path, f"[live]\napi_key_file = '{token}'\n"))
    assert cfg.api_key is None
    with pytest.raises(config.ConfigError, match=f"api_key_file {token} is missing or empty"):
        config.require_credentials(cfg)
    token.write_text("auth_tokens/abc\n")
    assert config.find_api_key(cfg.live)[0] == config.Secret("auth_tokens/abc")


@pytest.mark.parametrize(
    "content", [b"", b"\0" * 40, b"auth_tokens/\xff\xfe"], ids=["empty", "zeros", "not utf-8"]
)
def test_a_token_file_damaged_by_a_power_cut_does_not_stop_the_box_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    """The minter was writing the next token as the power went: at boot the file is empty,
    or holds zeros or half a character. Empty, the box started and looked again at each
    press; zeros exited with status 2, which systemd never restarts (nor the retry timer),
    so the box stayed dead though the minter wrote a good token a minute later."""
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", tmp_path / "no-installed-key")
    key_file = tmp_path / "token"
    key_file.write_bytes(content)
    started: list[config.Config] = []

    def run_daemon(loaded: config.Config) -> int:
        started.append(loaded)
        return 0

    monkeypatch.setattr(appliance, "run_daemon", run_daemon)
    path = write(tmp_path, f"[live]\napi_key_file = '{key_file}'\n")
    assert cli.main(["run", "--config", str(path)]) == 0
    assert len(started) == 1 and started[0].api_key is None


@pytest.mark.parametrize("fault", ["credential", "variable", "api_version"])
def test_a_key_fault_no_rewrite_of_the_key_file_mends_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    fault: str,
) -> None:
    """With [live] api_key_file set, every key fault started the box (exit 0) "each press
    looks again": a quoted key in systemd's credential (its copy, made at the start, read
    first at each press), a bad GEMINI_API_KEY, a token on api_version v1beta (a setting).
    Each press then failed; only the token file's own faults are mended by writing it."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", tmp_path / "no-installed-key")
    key_file = tmp_path / "token"
    settings = f"[live]\napi_key_file = '{key_file}'\n"
    if fault == "credential":
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / config.CREDENTIAL_NAME).write_text('"AIzaQuotedKey0123456789"\n')
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    elif fault == "variable":
        monkeypatch.setenv("GEMINI_API_KEY", "AIza\u200bZeroWidth0123456789")
    else:
        key_file.write_text("auth_tokens/abc\n")
        settings += "api_version = 'v1beta'\n"
    started: list[config.Config] = []
    monkeypatch.setattr(appliance, "run_daemon", lambda loaded: started.append(loaded) or 0)
    assert cli.main(["run", "--config", str(write(tmp_path, settings))]) == 2
    assert started == []
    assert "each press looks again" not in capsys.readouterr().err


def test_an_ephemeral_token_on_a_version_other_than_v1alpha_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service takes tokens on v1alpha only: `api_version = "v1"` with one was a
    refused connection at every press, and a token a job writes later too."""
    token = tmp_path / "token"
    cfg = config.load(write(tmp_path, f"[live]\napi_version = 'v1'\napi_key_file = '{token}'\n"))
    token.write_text("auth_tokens/abc\n")
    with pytest.raises(config.ConfigError) as caught:
        config.find_api_key(cfg.live)
    assert str(caught.value) == (
        f"[live] api_version: the ephemeral token from api_key_file {token} is served on "
        "v1alpha only (got 'v1'); remove api_version or set it to 'v1alpha'"
    )
    with pytest.raises(config.ConfigError, match=r"^\[live\] api_version: the ephemeral token"):
        config.load(write(tmp_path, f"[live]\napi_version = 'v1beta'\napi_key_file = '{token}'\n"))
    token.unlink()
    monkeypatch.setenv("GEMINI_API_KEY", "auth_tokens/abc")
    with pytest.raises(config.ConfigError, match="from environment variable GEMINI_API_KEY"):
        config.load(write(tmp_path, "[live]\napi_version = 'v1'\n"))
    for fine in ("[live]\napi_version = 'v1alpha'\n", ""):
        assert config.load(write(tmp_path, fine)).api_key == config.Secret("auth_tokens/abc")
    vertex = "[live]\nbackend = 'vertex'\nproject = 'p'\nlocation = 'l'\napi_version = 'v1'\n"
    assert config.load(write(tmp_path, vertex)).live.api_version == "v1"  # the key goes unused


README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readmes_settings_load_and_name_every_setting_there_is(tmp_path: Path) -> None:
    """The README is the owner's reference, and the doctor sends them to it: each of its
    TOML samples loads, and each setting of every section is named in it."""
    text = README.read_text()
    samples = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert samples
    for sample in samples:
        config.load(write(tmp_path, sample), whole=False)
    missing = [
        f"[{name}] {field}"
        for name, section in config.SECTIONS.items()
        for field in section.__dataclass_fields__
        if not re.search(rf"\b{field}\b", text)
    ]
    assert not missing, f"not in the README: {missing}"


def test_the_doctor_says_a_bad_key_file_is_the_keys_trouble_and_checks_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key file with a space in it failed the configuration, and every other check was
    skipped as needing a configuration that loads (the microphone and speaker too)."""
    keyfile = tmp_path / "key.txt"
    keyfile.write_text("AIza part two\n")
    path = write(tmp_path, f"[live]\napi_key_file = '{keyfile}'\n")
    assert cli.main(["doctor", "config", "key", "echo", "--config", str(path), "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["config"]["status"] == "PASS"
    assert checks["key"]["status"] == "FAIL" and "space" in checks["key"]["measured"]
    assert checks["echo"]["status"] != "SKIP"


@pytest.mark.parametrize(
    ("voice", "meant"), [("kore", "Kore"), ("PUCK", "Puck"), ("Puck ", "Puck"), ("Aoide", "Aoede")]
)
def test_a_voice_in_the_wrong_case_or_misspelt_is_named_as_meant(
    tmp_path: Path, voice: str, meant: str
) -> None:
    """Thirty names in one line, and the owner's nearly among them."""
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, f"[live]\nvoice = '{voice}'"))
    assert str(caught.value).endswith(f"(got {voice!r}); did you mean {meant!r}?")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # above every section line: TOML reads it as a top-level key, not a section
        ('voice = "Puck"\n[live]\n', "voice = ... is above every section line; it is a "
         "setting of [live]: write it below the line [live]"),
        ('[audio]\nvolume = 0.5\nvoice = "Puck"\n', "[audio] voice: unknown setting; it is a "
         "setting of [live]: write it below the line [live]"),
        ('api_key = "k3y-0123456789"\n', "api_key = ... is above every section line; the "
         "API key does not go in the configuration: put it alone in /etc/live-appliance/api-key"),
        ('[Live]\nvoice = "Puck"\n', "unknown section [Live] (did you mean [live]?); allowed: "),
    ],
)  # fmt: skip
def test_a_setting_in_the_wrong_place_says_where_it_belongs(
    tmp_path: Path, text: str, expected: str
) -> None:
    """An owner uncommenting a line under the wrong header (or above them all) was told
    of an unknown section or setting, with no word of where it goes."""
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, text))
    assert expected in str(caught.value), str(caught.value)
    assert "k3y-0123456789" not in str(caught.value)  # a key in the wrong place stays unsaid


@pytest.mark.parametrize(
    "text",
    [f'[live]\n{name} = "{KEY}"\n' for name in ("api_key", "GEMINI_API_KEY", "token")],
    ids=["api_key", "as-the-variable", "token"],
)
def test_a_key_written_into_the_config_says_where_it_goes(tmp_path: Path, text: str) -> None:
    """The first place an owner puts a key is config.toml: listing the allowed settings
    (api_key_file among them) would lead them to write the key there next."""
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, text))
    assert "put it alone in /etc/live-appliance/api-key" in str(caught.value)
    assert "allowed:" not in str(caught.value) and KEY not in str(caught.value)


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


def test_a_key_file_of_ten_megabytes_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    keyfile = tmp_path / "key.txt"
    keyfile.write_bytes(b"A" * (10 * 1024 * 1024))
    with pytest.raises(config.ConfigError, match="is over 16 KiB; write the key again"):
        config.load(write(tmp_path, f"[live]\napi_key_file = '{keyfile}'\n"))


def test_a_binary_key_file_that_is_valid_utf8_is_refused_without_showing_it(tmp_path: Path) -> None:
    keyfile = tmp_path / "key.bin"
    keyfile.write_bytes(b"AIza\x00\x01\x02secret")
    settings = write(tmp_path, f"[live]\napi_key_file = '{keyfile}'\n")
    with pytest.raises(config.ConfigError, match="control character at position 5") as caught:
        config.load(settings)
    assert "secret" not in str(caught.value)


HUGE_DECIMAL = "1" * 5000  # past Python's 4300 digits for an int read from text
HUGE_HEX = "0x" + "f" * 5000  # TOML's hex has no such limit, but writing it in decimal has


@pytest.mark.parametrize(
    ("content", "wanted"),
    [
        (f"[audio]\nchunk_ms = {HUGE_DECIMAL}\n", "not valid TOML: a number of over 4300 digits"),
        (f"[audio]\nchunk_ms = {HUGE_HEX}\n", "[audio] chunk_ms: must be between"),
        (f"[audio]\nvolume = {HUGE_HEX}\n", "[audio] volume: must be between 0 and 1"),
        (f"[control]\nmode = {HUGE_HEX}\n", "[control] mode: must be between 0o600 and 0o666"),
        (f"[audio]\nchunk_ms = '{'4' * 500_000}'\n", "[audio] chunk_ms: must be an integer"),
        (f"[tools]\nenabled = [{HUGE_HEX}]\n", "[tools] enabled: must be"),
        (f"[conversation]\nreply_timeout_s = [{HUGE_HEX}]\n", "reply_timeout_s: must be"),
        (f"[live]\nvoice = {{ name = {HUGE_HEX} }}\n", "[live] voice: must be"),
        (f"audio = {HUGE_HEX}\n", "[audio] must be a table of settings"),
        (f"audio = '{'x' * 500_000}'\n", "[audio] must be a table of settings"),
        (f"[hardware]\nprofile = {HUGE_HEX}\n", "[hardware] profile: must be one of"),
        (f"[hardware]\nprofile = '{'x' * 500_000}'\n", "[hardware] profile: must be one of"),
    ],
    ids=[
        "decimal",
        "hex for an integer",
        "hex for a number",
        "hex for a mode",
        "long text",
        "in a list",
        "in a list for a number",
        "in a table",
        "a section",
        "a long section",
        "a profile",
        "a long profile",
    ],
)
def test_an_outsized_value_in_the_configuration_is_a_one_line_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, wanted: str
) -> None:
    """A ValueError or OverflowError with a traceback: the daemon restarted in a loop, and
    `ctl` and the doctor, which explain a configuration that does not load, crashed too.
    A long text where a number goes was written out whole: a line of 500 KB."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test")
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, content))
    assert wanted in str(caught.value)
    assert len(str(caught.value)) < 300, "the owner reads a line, not the number"


@pytest.mark.parametrize(
    ("variable", "value", "wanted"),
    [
        ("LIVE_APPLIANCE_AUDIO_CHUNK_MS", HUGE_DECIMAL, "must be an integer"),
        ("LIVE_APPLIANCE_TOOLS_ENABLED", f"[{HUGE_HEX}]", "must be a list"),
        ("LIVE_APPLIANCE_AUDIO_CHUNK_MS", "[" * 5000, "must be an integer"),
    ],
    ids=["a number", "in a list", "nested thousands deep"],
)
def test_a_variable_of_thousands_of_digits_or_brackets_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, wanted: str
) -> None:
    """The configuration file's own nesting was caught; a variable's was not: `ctl`,
    `doctor` and the service itself ended in a RecursionError traceback."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test")
    monkeypatch.setenv(variable, value)
    with pytest.raises(config.ConfigError, match=f"{variable}: {wanted}"):
        config.load(write(tmp_path, ""))


@pytest.mark.parametrize("setting", ["compression_trigger_tokens", "compression_target_tokens"])
def test_compression_token_counts_with_compression_off_stop_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str
) -> None:
    """`compression = false` sends no compression at all: token counts set beside it went
    unused without a word, and the owner who tuned them got sessions cut at 15 minutes."""
    path = write(tmp_path, f"[live]\ncompression = false\n{setting} = 2000\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value) == (
        f"{path}: [live] {setting}: set with compression = false, which sends no context "
        "window compression; remove it, or set compression = true"
    )
    assert cli.main(["run", "--config", str(path)]) == 2
    assert f"[live] {setting}" in capsys.readouterr().err


def test_a_target_above_the_services_own_trigger_stops_the_start(tmp_path: Path) -> None:
    """Unset, the trigger is the service's: 80% of the context window (104857 tokens). A
    window kept larger than where it is cut never slides: the SDK says target must be
    below trigger."""
    path = write(tmp_path, "[live]\ncompression_target_tokens = 120000\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value) == (
        f"{path}: [live] compression_target_tokens (120000) must be below "
        "compression_trigger_tokens, which is 104857 (80% of the context window) when "
        "unset; lower it, or set compression_trigger_tokens above it"
    )


@pytest.mark.parametrize("text", [
    "[live]\ncompression_target_tokens = 104856\n",
    "[live]\ncompression_trigger_tokens = 131072\ncompression_target_tokens = 120000\n",
    "[live]\ncompression = false\n",
])
def test_compression_settings_that_work_together_load(tmp_path: Path, text: str) -> None:
    config.load(write(tmp_path, text), key=False)


# ---- edge values on the wire ----------------------------------------------------------------


@pytest.mark.parametrize("silence_s", [2, 3])
def test_hands_free_hanging_up_before_the_services_end_of_speech_stops_the_start(
    tmp_path: Path, silence_s: int
) -> None:
    """Hands-free, the box hangs up `end_after_silence_s` after the last word; the service
    ends the turn only `silence_ms` after it, and answers later still. A slow talker's
    silence_ms = 3000 beside end_after_silence_s = 2 hung up on every question."""
    path = write(tmp_path, (
        "[button]\nmode = 'toggle'\n"
        f"[conversation]\nsilence_ms = 3000\nend_after_silence_s = {silence_s}\n"
    ))
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value) == (
        f"{path}: [conversation] end_after_silence_s ({silence_s} s) must be at least "
        "silence_ms (3000 ms) and 1 s more in toggle mode: the box would hang up before the "
        "service has heard the end of what was said and the model begun its answer"
    )
    # Push-to-talk the service does not detect speech: silence_ms is not used.
    config.load(write(tmp_path, path.read_text().replace("toggle", "push_to_talk")), key=False)


def test_hands_free_speech_quieter_than_the_pause_gate_stops_the_start(tmp_path: Path) -> None:
    """speech_dbfs lowered to -55 for a child who speaks softly from across the room, the
    pause gate left at -50: the box counted the child's words as speech, but once the
    room had been quiet a second the gate held them back, every one (0 of 50 chunks at
    -52 dBFS reached the service), and the silence they should have kept open hung up."""
    path = write(tmp_path, "[button]\nmode = 'toggle'\n[audio]\nspeech_dbfs = -55\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value) == (
        f"{path}: [audio] speech_dbfs (-55 dBFS) must not be below pause_below_dbfs "
        "(-50 dBFS) in toggle mode: speech that quiet would count as someone talking, but "
        "after a second of it the microphone would no longer be sent; lower pause_below_dbfs "
        "too (-100: always send)"
    )
    for fine in ("speech_dbfs = -55\npause_below_dbfs = -60", "pause_below_dbfs = -100\n"
                 "speech_dbfs = -90", "speech_dbfs = -50"):
        config.load(write(tmp_path, f"[button]\nmode = 'toggle'\n[audio]\n{fine}\n"), key=False)
    # Push-to-talk nothing of a held press is held back.
    config.load(write(tmp_path, "[audio]\nspeech_dbfs = -55\n"), key=False)


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("[conversation]\nidle_timout_s = 5\n", "idle_timeout_s"),
        ("[audio]\nVolume = 0.5\n", "volume"),
        ("[live]\nsystem_instructions = 'You are a teapot.'\n", "system_instruction"),
        ("[button]\nlong_press = 5\n", "long_press_s"),
    ],
)
def test_a_misspelt_setting_names_the_one_meant(tmp_path: Path, text: str, meant: str) -> None:
    """Not only the whole list of [conversation]'s twelve settings to search: "did you
    mean", as for a misspelt section or voice."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert f"did you mean {meant}?" in str(caught.value), caught.value


def test_a_misspelt_variable_names_the_one_meant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("")
    monkeypatch.setenv("LIVE_APPLIANCE_AUDIO_VOLUMNE", "0.5")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert "did you mean LIVE_APPLIANCE_AUDIO_VOLUME?" in str(caught.value), caught.value


def test_the_service_that_may_not_read_its_configuration_is_told_how_to_let_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """config.toml made root's alone (0600: `sudo install -m 600`, a umask 077 copy): the
    service exits 2, and its journal line says how to let the service read it, not "Run
    it with sudo, or as a member of the file's group" (an owner's fix at a shell)."""
    settings_file = tmp_path / "config.toml"
    settings_file.write_text("[audio]\nvolume = 0.5\n")
    open_refused(monkeypatch, lambda path: path == settings_file)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))  # systemd runs it
    assert main(["run", "--config", str(settings_file)]) == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1, said
    assert "Run it with sudo" not in said, said
    assert f"chmod 0640 {settings_file}" in said, said


@pytest.mark.parametrize(
    "text",
    [
        '["audio\\nvolume"]\nx = 1\n',  # a quoted name holds any character
        '[audio]\n"volume\\r\\n[live]" = 1\n',
        '[live]\n"\\u001b[2J" = 1\n',  # a terminal's clear-screen
    ],
)
def test_a_name_with_a_line_break_stays_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    """The error quotes the name as written: a line break in it would split the journal's
    line (the second part without the error priority), an escape sequence run on a
    terminal."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert main(["run", "--config", str(path)]) == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "\r" not in said and "\x1b" not in said, repr(said)


@pytest.mark.parametrize("location", ["US Central", "us-central1 ", "europe_west4", ""])
def test_a_vertex_location_that_is_no_region_is_refused_at_start(
    tmp_path: Path, location: str
) -> None:
    """It names the host of every connection (LOCATION-aiplatform.googleapis.com): loaded,
    a location no region has failed every press, blamed on the network."""
    path = tmp_path / "config.toml"
    path.write_text(f'[live]\nbackend = "vertex"\nproject = "p"\nlocation = "{location}"\n')
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert "[live] location" in str(caught.value), caught.value


@pytest.mark.parametrize("location", ["us-central1", "europe-west4", "global"])
def test_a_vertex_region_loads(tmp_path: Path, location: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[live]\nbackend = "vertex"\nproject = "p"\nlocation = "{location}"\n')
    assert config.load(path, key=False).live.location == location

def _toml_sample(after: str) -> dict[str, dict[str, object]]:
    """The first TOML sample below the heading `after`."""
    text = README.read_text()
    block = re.search(rf"{re.escape(after)}\n.*?```toml\n(.*?)```", text, re.S)
    assert block, f"no TOML sample under {after!r}"
    return tomllib.loads(block[1])


def test_the_configuration_sample_shows_the_defaults() -> None:
    """Its uncommented lines are read as the defaults ("absent: defaults"): each one is."""
    sample = _toml_sample("## Configuration") | _toml_sample("### The camera")
    defaults = config.Config()
    shown = {
        (section, key): tuple(value) if isinstance(value, list) else value
        for section, values in sample.items()
        for key, value in values.items()
    }
    wrong = [
        f"[{section}] {key} = {value!r}, default {getattr(getattr(defaults, section), key)!r}"
        for (section, key), value in shown.items()
        if getattr(getattr(defaults, section), key) != value
    ]
    assert not wrong


@pytest.mark.parametrize("silence_s", [1, 1.5])
def test_hands_free_a_silence_that_leaves_the_model_no_time_to_answer_stops_the_start(
    tmp_path: Path, silence_s: float
) -> None:
    """end_after_silence_s = 1 (its lowest) beside the default silence_ms = 800 was accepted:
    the service ends the person's turn 0.8 s after their last word and the model's answer
    begins later still, but the box hung up 1 s after the last word: no question was ever
    answered. The silence must leave the model a second beyond silence_ms."""
    path = write(
        tmp_path, f"[button]\nmode = 'toggle'\n[conversation]\nend_after_silence_s = {silence_s}"
    )
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value) == (
        f"{path}: [conversation] end_after_silence_s ({silence_s:g} s) must be at least "
        "silence_ms (800 ms) and 1 s more in toggle mode: the box would hang up before the "
        "service has heard the end of what was said and the model begun its answer"
    )
    path.write_text(path.read_text().replace(f"= {silence_s}", "= 1.8"))
    assert config.load(path, key=False).conversation.end_after_silence_s == 1.8


@pytest.mark.parametrize("silence_ms", [640, 1010])
def test_hands_free_the_least_silence_the_refusal_names_is_accepted(
    tmp_path: Path, silence_ms: int
) -> None:
    """silence_ms = 640: the refusal says end_after_silence_s "must be at least silence_ms
    (640 ms) and 1 s more"; the owner writes 1.64 and is refused again, by the same line
    (0.64 + 1.0 is a hair above 1.64 in binary floating point; 2.01 s, a hair under
    2010 ms)."""
    least_s = (silence_ms + 1000) / 1000
    path = write(
        tmp_path,
        "[button]\nmode = 'toggle'\n[conversation]\n"
        f"silence_ms = {silence_ms}\nend_after_silence_s = {least_s}",
    )
    assert config.load(path, key=False).conversation.end_after_silence_s == least_s


async def test_an_empty_configuration_file_is_said_at_the_start(tmp_path: Path) -> None:
    """A power cut while the owner saved config.toml leaves it zero bytes long: the box
    started on the defaults (their pins, voice and mode gone) without a word, and the
    owner looked everywhere but there. The journal names the file."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"")
    cfg = config.load(path, key=False)
    with journal_lines("device.appliance") as journal:
        async with running(tmp_path, cfg):
            pass
    said = [r for r in journal.records if str(path) in r["MESSAGE"]]
    assert len(said) == 1, journal.records
    assert int(said[0]["PRIORITY"]) <= 4


async def test_a_configuration_of_comments_only_is_not_said(tmp_path: Path) -> None:
    """The defaults chosen on purpose (every line a comment) are no fault."""
    path = tmp_path / "config.toml"
    path.write_text("# all defaults\n")
    cfg = config.load(path, key=False)
    with journal_lines("device.appliance") as journal:
        async with running(tmp_path, cfg):
            pass
    assert not [r for r in journal.records if str(path) in r["MESSAGE"]], journal.records


@pytest.mark.parametrize(("model", "meant"), [
    ("Gemini-3.8-Live", "gemini-3.8-live"),
    ("gemini-3.8-live ", "gemini-3.8-live"),
    ("models/GEMINI-3.1-FLASH-LIVE-PREVIEW", "gemini-3.1-flash-live-preview"),
    ("gemini 3.8 live", "gemini-3.8-live"),
])
def test_a_model_name_no_model_has_stops_the_start_naming_the_one_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, meant: str
) -> None:
    """Model names are lower case, with no spaces: one pasted from a web page's heading
    ("Gemini 3.8 Live") or with a stray space loaded, was unknown to the model table (so
    every setting went out as written), and the service refused its setup at every press."""
    path = tmp_path / "config.toml"
    path.write_text(f"[live]\nmodel = {model!r}\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value).startswith(f"{path}: [live] model: ")
    assert str(caught.value).endswith(f"(got {model!r}); did you mean {meant!r}?")
    assert cli.main(["run", "--config", str(path)]) == 2
    assert "[live] model" in capsys.readouterr().err


@pytest.mark.parametrize("model", [
    "gemini-3.8-live", "models/gemini-3.8-live", "gemini-9.1-live-preview-06-2027",
    "projects/p/locations/us-central1/publishers/google/models/gemini-3.8-live",
])
def test_a_model_name_as_the_service_writes_one_loads(tmp_path: Path, model: str) -> None:
    """A model missing from the table (a newer one) still loads: only the shape is checked."""
    path = tmp_path / "config.toml"
    path.write_text(f"[live]\nmodel = {model!r}\n")
    assert config.load(path, key=False).live.model == model


def test_a_variable_that_is_not_utf8_stops_the_start_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A persona exported from a Latin-1 terminal ("für" as single bytes): Python reads the
    bytes that are not UTF-8 as lone surrogates, and the start ended in a traceback
    (UnicodeEncodeError, from the persona's size check), naming no variable; a text
    setting checked no further ([live] project) loaded them for the service to refuse.
    The configuration file's own check says where it is not UTF-8: so does this."""
    latin1 = "Antworte kurz und f\xfcr Kinder.".encode("latin-1")
    monkeypatch.setenv("LIVE_APPLIANCE_LIVE_SYSTEM_INSTRUCTION",
                       latin1.decode("utf-8", "surrogateescape"))
    path = tmp_path / "config.toml"
    path.write_text("")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value).startswith(
        "environment variable LIVE_APPLIANCE_LIVE_SYSTEM_INSTRUCTION: is not UTF-8 text: "
        "byte 0xfc at character 20")
    assert cli.main(["run", "--config", str(path)]) == 2
    assert "LIVE_APPLIANCE_LIVE_SYSTEM_INSTRUCTION" in capsys.readouterr().err


def test_a_model_name_pasted_with_a_typo_still_names_the_one_meant(tmp_path: Path) -> None:
    """A heading pasted with a slip of the keys as well ("Gemini 3.8 Lvie"): the start
    is refused, and the line still offers the model meant, not only the rule."""
    path = tmp_path / "config.toml"
    path.write_text('[live]\nmodel = "Gemini 3.8 Lvie"\n')
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value).endswith("(got 'Gemini 3.8 Lvie'); did you mean 'gemini-3.8-live'?")


@pytest.mark.parametrize(
    ("settings", "wanted"),
    [
        ("active_high = true\n[button]\npin = 17", "a setting of [button] and [leds]"),
        ("enabled = false\n[button]\npin = 17", "a setting of [camera] and [tools]"),
        ("[camera]\nactive_high = true", "a setting of [button] and [leds]"),
    ],
)
def test_a_setting_of_several_sections_misplaced_names_them(
    tmp_path: Path, settings: str, wanted: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(settings + "\n")
    with pytest.raises(config.ConfigError, match=wanted.replace("[", r"\[").replace("]", r"\]")):
        config.load(path)


@pytest.mark.parametrize(
    "settings",
    [
        # The README's wiring table gives each GPIO's header pin beside it ("GPIO 5 / 6 / 13
        # (pins 29 / 31 / 33)"): those numbers are no GPIO on the header, and gpiozero
        # refuses them as the service opens them ("29 is not a valid pin name"): LEDs off,
        # tried again for as long as the box runs.
        "[leds]\npins = [29, 31, 33]",
        "[button]\npin = 40",
        '[leds]\nkind = "apa102"\ndata_pin = 29\nclock_pin = 31',
        "[camera]\nled_pin = 37",
    ],
)
def test_a_pin_no_button_or_led_can_be_wired_to_is_refused_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(settings + "\n")
    with pytest.raises(config.ConfigError, match="between 0 and 27"):
        config.load(path)
    assert cli.main(["doctor", "config", "--config", str(path), "--json"]) == 1
    assert "between 0 and 27" in capsys.readouterr().out


def test_the_highest_header_gpio_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[button]\npin = 27\n[leds]\nkind = \"single\"\npins = [26]\n")
    assert config.load(path).button.pin == 27


@pytest.mark.parametrize(
    ("settings", "wanted"),
    [
        # `dtparam=spi=on` (the README's setup for the pixels) gives the kernel both of SPI0's
        # chip selects (cs-gpios 8 and 7), whichever the pixels use: a button or LED there
        # fails to open for as long as the box runs ("GPIO busy"), tried again for ever.
        ('[hardware]\nprofile = "respeaker-2mic"\n[button]\npin = 8',
         "pin and the pixels' SPI0 CE0 both name GPIO 8"),
        ('[leds]\nkind = "apa102"\nspi_bus = 0\nspi_device = 0\n[camera]\nled_pin = 7',
         "the pixels' SPI0 CE1 and .camera. led_pin both name GPIO 7"),
        # SPI1's overlays (spi1-2cs for chip select 1) take every chip select up to it.
        ('[leds]\nkind = "apa102"\nspi_bus = 1\nspi_device = 1\n[button]\npin = 18',
         "pin and the pixels' SPI1 CE0 both name GPIO 18"),
    ],
)
def test_a_pin_the_pixels_spi_bus_gives_the_kernel_is_refused(
    tmp_path: Path, settings: str, wanted: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(settings + "\n")
    with pytest.raises(config.ConfigError, match=wanted):
        config.load(path)


@pytest.mark.parametrize("mode", ["0o666", "0o606", "0o602", "0o664"])
def test_a_control_socket_anyone_on_the_box_may_use_stops_the_start(
    tmp_path: Path, mode: str
) -> None:
    """`ctl press` opens the microphone: a socket others may connect to lets any local
    account (a web server's, a guest's) listen in on the room. The daemon refuses the
    file at start (the configuration's one validation), and the doctor says so."""
    config = tmp_path / "config.toml"
    config.write_text(f"[control]\nmode = {mode}\n")
    with pytest.raises(ConfigError) as refused:
        load(config)
    said = str(refused.value)
    assert said.startswith(f"{config}: [control] mode: {mode} "), said
    assert said.endswith(("use 0o600", "use 0o660")), said
    result = run_cli("doctor", "config", "--config", str(config), timeout=30)
    assert result.returncode == 1 and result.stdout.startswith("FAIL  config"), result.stdout


@pytest.mark.parametrize("mode", ["0o600", "0o660"])
def test_an_owner_only_or_group_control_socket_loads(tmp_path: Path, mode: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[control]\nmode = {mode}\n")
    assert load(config).control.mode == int(mode, 8)


