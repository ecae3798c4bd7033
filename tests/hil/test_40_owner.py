"""4. The owner's SSH paths, each as the README gives it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hilrig import (
    APP_VENV,
    CHECKOUT,
    CONFIG,
    IN_VM,
    KEY_FILE,
    MOCK_PINS,
    OWNER,
    UNIT,
    client_env,
    ctl,
    play,
    save,
    sh,
    sh_live,
    show,
    status,
    tone,
    venv_distributions,
    wait_active,
)

pytestmark = pytest.mark.usefixtures("installed")


def owner_sudo(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`sudo COMMAND` typed by the owner. SSL_CERT_FILE stands for the system's trust in
    the local server's CA (the unit has it from its drop-in)."""
    env = client_env()
    extra = [f"{name}={env[name]}" for name in ("SSL_CERT_FILE", *MOCK_PINS) if name in env]
    return sh(["sudo", *extra, *argv], user=OWNER, check=False, timeout=timeout)


def test_ctl_status_works_for_the_owner_through_the_group() -> None:
    wait_active()
    groups = sh(["id", "-nG", OWNER]).stdout.split()
    assert "live-appliance" in groups
    result = ctl("status", "--json", user=OWNER)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "idle"
    # Someone outside the group is refused.
    stranger = sh(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                   "live-appliance", "ctl", "status"], check=False)
    assert stranger.returncode != 0


@pytest.fixture(scope="module")
def doctor() -> dict[str, Any]:
    """`sudo systemctl stop live-appliance; sudo live-appliance doctor; ... start`, with
    speech playing into the microphone the whole time."""
    sh(["systemctl", "stop", UNIT])
    player = play(tone(300, 240, 16000))  # the doctor reaches the mic after a minute or more
    try:
        result = owner_sudo("live-appliance", "doctor", "--json", timeout=600)
    finally:
        player.kill()
        sh(["systemctl", "start", UNIT])
    save("doctor.json", result.stdout + result.stderr)
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_doctor_passes_what_the_vm_has(doctor: dict[str, Any]) -> None:
    for name in ("config", "devices", "speaker", "mic", "card"):
        assert doctor[name]["status"].upper() == "PASS", doctor[name]
    for name, check in doctor.items():
        assert check["status"].upper() != "FAIL" or name in ("key", "network"), check
        if check["status"].upper() == "SKIP":
            assert check["measured"], f"a SKIP without its reason: {check}"


def test_doctor_finds_the_key_and_reaches_the_service(doctor: dict[str, Any]) -> None:
    assert doctor["key"]["status"].upper() == "PASS", doctor["key"]
    assert doctor["network"]["status"].upper() == "PASS", doctor["network"]


def test_ask_hello_gets_an_answer(server: Any) -> None:
    before = len(server.log.connections())
    result = owner_sudo("live-appliance", "ask", "Hello")
    save("ask.txt", result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(server.log.connections()) > before


def test_the_journalctl_recipes() -> None:
    """Each recipe of the README's "Looking after it over SSH", as the owner types it."""
    session = status().get("session_id") or ""
    recipes = {
        "errors since boot": "journalctl -u live-appliance -p err -b --no-pager",
        "states": "journalctl -u live-appliance LIVE_STATE=idle --no-pager",
        "latencies": (
            "journalctl -u live-appliance -o json "
            "--output-fields=LIVE_TURN,LIVE_PRESS_TO_FIRST_AUDIO_MS,"
            "LIVE_RELEASE_TO_FIRST_REPLY_MS,LIVE_TURN_MS,LIVE_SETUP_MS "
            "| jq -c 'select(.LIVE_TURN or .LIVE_SETUP_MS)'"
        ),
    }
    if session:
        recipes["one session"] = f"journalctl -u live-appliance LIVE_SESSION={session} --no-pager"
    outputs = {name: sh(["sudo", "bash", "-c", cmd], user=OWNER) for name, cmd in recipes.items()}
    save("journal-recipes.txt", "\n".join(f"== {n}\n{r.stdout}" for n, r in outputs.items()))
    assert "idle" in outputs["states"].stdout
    lines = [json.loads(line) for line in outputs["latencies"].stdout.splitlines()]
    assert any("LIVE_TURN" in line for line in lines), "no turn in the latency recipe"
    assert any("LIVE_SETUP_MS" in line for line in lines)
    if session:
        assert outputs["one session"].stdout.strip()


def site_file(relative: str) -> Path:
    return next(APP_VENV.glob(f"lib/python3*/site-packages/{relative}"))


#: What the installer records after installing the lock: the digest of its lock file.
LOCKS_DIGEST = APP_VENV / ".live-appliance-locks"


def venv_packages() -> set[str]:
    return {name.lower() for name in venv_distributions(APP_VENV)}


@pytest.mark.skipif(not IN_VM, reason="an update from this checkout would replace the Pi's")
def test_an_update_keeps_config_and_key_and_restarts() -> None:
    """`git pull && sudo scripts/install-pi.sh` after a pull that changed the lock: config
    and key kept, the service restarted with the new code; only what the venv lacks at
    its locked version is downloaded and installed, and a package the lock no longer
    names is gone. (With the same lock an update replaces only the appliance:
    tests/test_install_script.py.)"""
    config, key = CONFIG.read_bytes(), KEY_FILE.read_bytes()
    invocation = show("InvocationID")
    # A package an earlier version of the appliance needed (any wheel the lock lacks).
    stale = next(Path("/srv/hil/wheelhouse").glob("iniconfig-*.whl"))
    pip = [str(APP_VENV / "bin" / "python"), "-m", "pip"]  # apt's pip: the venv has none
    sh([*pip, "install", "--no-index", "--no-deps", str(stale)])
    assert "iniconfig" in venv_packages()
    # A package the new lock has at another version (here: not at all).
    sh([*pip, "uninstall", "--yes", "distro"])
    # ... installed with that version's lock, whose digest the venv holds.
    digest = LOCKS_DIGEST.read_text()
    LOCKS_DIGEST.write_text("0" * 64 + "\n")
    unchanged, appliance = site_file("numpy/__init__.py"), site_file("device/__init__.py")
    inodes = unchanged.stat().st_ino, appliance.stat().st_ino
    status, output = sh_live(f"cd {CHECKOUT} && sudo scripts/install-pi.sh --no-camera "
                             "--no-gpio", user=OWNER, log="update.txt")
    assert status == 0, output[-3000:]
    assert CONFIG.read_bytes() == config
    assert KEY_FILE.read_bytes() == key
    wait_active()
    assert show("InvocationID") != invocation, "not restarted"
    assert "iniconfig" not in venv_packages()
    assert "distro" in venv_packages()
    downloads = [line for line in output.splitlines() if line.startswith("Successfully down")]
    assert downloads == ["Successfully downloaded distro"], downloads
    assert LOCKS_DIGEST.read_text() == digest, "the lock's digest not recorded for the next update"
    assert site_file("numpy/__init__.py").stat().st_ino == inodes[0], "numpy installed again"
    assert site_file("device/__init__.py").stat().st_ino != inodes[1], "the new code not installed"

