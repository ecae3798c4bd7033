"""Several people look after one box over SSH: the owner who installed it (sudo), a
member of the service's group, a guest in neither. What each may read of what the box
and its commands write."""

from __future__ import annotations

import asyncio
import grp
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from system_view import SystemView
from test_install_script import INSTALL, INSTALLED, StandIns, dry_run

from device import config
from device.control import AlreadyRunning, single_instance
from device.doctor import settings
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Result, Status
from device.doctor.settings import check_config, check_key
from rig.daemon import rig_settings, to_toml
from rig.server.server import ServerThread

OWNER_UID, OWNER_GID = 4321, 4322  # who typed `sudo`


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(pace=0, reply_seconds=0.3) as thread:
        yield thread


@pytest.mark.skipif(os.geteuid() != 0, reason="what `sudo` writes: needs root")
def test_sudo_ask_keeps_the_reply_audio_for_the_owner_who_asked_not_for_every_user(
    server: ServerThread, tmp_path: Path
) -> None:
    """`sudo live-appliance ask "..." --audio /tmp/reply.wav` (sudo: only root may read the
    key) left the reply root's and 0644: any guest on the box could play what the box
    told the owner, and the owner could not write over it without sudo again."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(to_toml(rig_settings(server.base_url, tmp_path)))
    out = tmp_path / "reply.wav"
    out.write_bytes(b"an earlier run's, root's")
    out.chmod(0o644)
    env = {
        **os.environ,
        "GEMINI_API_KEY": server.api_key,
        "SSL_CERT_FILE": server.ca_file,
        "SUDO_UID": str(OWNER_UID),
        "SUDO_GID": str(OWNER_GID),
    }
    result = subprocess.run(
        [sys.executable, "-m", "device", "ask", "Hello", "--audio", str(out), "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0o022),  # sudo's, as on Raspberry Pi OS
    )
    assert result.returncode == 0, result.stderr
    saved = out.stat()
    assert out.read_bytes()[:4] == b"RIFF"
    assert saved.st_mode & 0o077 == 0, f"others may read it: {saved.st_mode & 0o777:o}"
    assert (saved.st_uid, saved.st_gid) == (OWNER_UID, OWNER_GID)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory any local user may enter (pytest's own tmp_path is its user's alone)."""
    place = Path(tempfile.mkdtemp(prefix="owners-"))
    place.chmod(0o755)
    try:
        yield place
    finally:
        shutil.rmtree(place)


@pytest.mark.parametrize("setting", ["api_key_file", "installer"])
def test_the_doctor_warns_of_a_key_others_may_read(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """A token job's file written 0644 where everyone may go, or the installer's key written
    again with `sudo tee` (0644) after a `rm`: a guest on the box could `cat` the key and
    spend the owner's quota, and `sudo live-appliance doctor` said PASS."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(settings, "SERVICE_USER", "nogroup")  # a group this machine has
    key_file = open_dir / "api-key"
    key_file.write_text("AIzaReadableByOthers\n")
    key_file.chmod(0o644)
    live: dict[str, Any] = {}
    if setting == "api_key_file":
        live["api_key_file"] = str(key_file)
        monkeypatch.setattr(config, "INSTALLED_KEY_FILE", open_dir / "no-installed-key")
    else:
        monkeypatch.setattr(config, "INSTALLED_KEY_FILE", key_file)
    (open_dir / "config.toml").write_text(to_toml({"live": live}))
    _, cfg = check_config(open_dir / "config.toml")  # as the doctor's first check leaves it
    assert cfg is not None

    def key_check() -> Result:
        return asyncio.run(check_key(Context(cfg, Options(), Progress(spinner=False))))

    result = key_check()
    assert result.status is Status.WARN, result
    assert "any local user" in result.measured and str(key_file) in result.measured
    assert result.fix is not None and "chmod 0" in result.fix and str(key_file) in result.fix
    assert "ReadableByOthers" not in result.measured + result.fix
    key_file.chmod(0o600 if setting == "installer" else 0o640)
    assert key_check().status is Status.PASS
    key_file.chmod(0o644)
    os.chown(open_dir, -1, grp.getgrnam("nogroup").gr_gid)
    open_dir.chmod(0o750)  # as /etc/live-appliance: the service's group may enter it
    result = key_check()
    if setting == "installer":  # root's alone, says the README: not the household's
        assert result.status is Status.WARN and "every member of group nogroup" in result.measured
    else:  # the service's group reads a token file by design (root:live-appliance 0640)
        assert result.status is Status.PASS, result


SERVICE_UID = 1601  # the service's user, in a test of its own state directory

SAVE_VOLUME = """
import sys
from pathlib import Path
from device.persist import StateFile
state = StateFile(Path(sys.argv[1]))
state.save(volume=0.25)
print(state.problem())
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="root's file, saved over by another"
)
def test_a_save_root_left_half_done_does_not_keep_the_service_from_saving(open_dir: Path) -> None:
    """`sudo live-appliance run` by hand (the service stopped) saving the volume as the power
    went, or killed: its state.tmp, root's, stayed in the service's state directory, and
    the service could never keep a volume again (the box came back at the old one after
    each restart, "Permission denied" in a directory that is its own)."""
    place = open_dir / "state"
    place.mkdir(mode=0o700)
    os.chown(place, SERVICE_UID, SERVICE_UID)  # StateDirectory=, the service's
    (place / "state.json").write_text('{"volume": 0.5}\n')  # root's too: replaced all the same
    (place / "state.tmp").write_text('{"volume": 0.')  # root's, 0644
    saved = subprocess.run(
        ["setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups",
         sys.executable, "-c", SAVE_VOLUME, str(place / "state.json")],
        env={**os.environ, "PYTHONPATH": os.getcwd()}, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.strip() == "None", saved.stdout  # ctl status: settings kept
    assert '"volume": 0.25' in (place / "state.json").read_text()
    assert (place / "state.json").stat().st_uid == SERVICE_UID


GUEST = 1602  # an account on the box in none of its groups


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="asks as another user"
)
def test_a_guest_refused_by_the_control_socket_is_told_which_group_to_join(
    open_dir: Path,
) -> None:
    """/run/live-appliance is the service group's (0750): a user outside it was told
    "run as a member of its group, or with sudo", and could not even look up which group
    that is (the socket inside may not be looked at)."""
    run_dir = open_dir / "live-appliance"
    run_dir.mkdir()
    os.chown(run_dir, 0, grp.getgrnam("nogroup").gr_gid)  # the service's group, by name
    run_dir.chmod(0o750)
    asked = subprocess.run(
        ["setpriv", f"--reuid={GUEST}", f"--regid={GUEST}", "--clear-groups", sys.executable,
         "-m", "device", "ctl", "status", "--socket", str(run_dir / "control.sock")],
        env={**os.environ, "PYTHONPATH": os.getcwd(), "HOME": "/tmp"}, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert asked.returncode == 1, asked.stderr
    assert "Traceback" not in asked.stderr
    assert "group nogroup" in asked.stderr and "sudo" in asked.stderr, asked.stderr
    assert "usermod -a -G nogroup" in asked.stderr, asked.stderr


def test_the_doctor_warns_of_vertex_credentials_any_local_user_may_read(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GOOGLE_APPLICATION_CREDENTIALS (the README's /etc/live-appliance/vertex.json, root
    and the service's group, 0640) copied 0644 where everyone may go: any local user
    could take the box's Google Cloud credentials, and the doctor said PASS."""
    creds = open_dir / "vertex.json"
    creds.write_text(
        '{"type": "authorized_user", "client_id": "id", "client_secret": "SecretOfTheBox", '
        '"refresh_token": "RefreshOfTheBox"}'
    )
    creds.chmod(0o644)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(creds))
    live = {"backend": "vertex", "project": "my-project", "location": "us-central1"}
    (open_dir / "config.toml").write_text(to_toml({"live": live}))
    _, cfg = check_config(open_dir / "config.toml")
    assert cfg is not None

    def key_check() -> Result:
        return asyncio.run(check_key(Context(cfg, Options(), Progress(spinner=False))))

    result = key_check()
    assert result.status is Status.WARN, result
    assert str(creds) in result.measured and "any local user" in result.measured
    assert result.fix is not None and "chmod 0640" in result.fix
    assert "OfTheBox" not in result.measured + result.fix
    creds.chmod(0o640)
    assert key_check().status is Status.PASS


HOLD_THE_LOCK = """
import sys
from device.control import single_instance
with single_instance(sys.argv[1]):
    print("running", flush=True)
    sys.stdin.read()
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="root's lock, then the service's"
)
def test_the_service_keeps_a_second_copy_out_after_a_copy_run_as_root(open_dir: Path) -> None:
    """`sudo live-appliance run` by hand (the service had stopped before making its lock,
    a configuration error) made /run/live-appliance/control.sock.lock root's, 0600: the
    service started later could not open it and ran without it, and a second copy run
    by hand while it stopped took the pins and sound devices from under it."""
    run_dir = open_dir / "live-appliance"
    run_dir.mkdir(mode=0o750)
    os.chown(run_dir, SERVICE_UID, SERVICE_UID)  # RuntimeDirectory=, kept between starts
    sock = run_dir / "control.sock"
    with single_instance(sock):
        pass  # the copy run as root, and stopped
    service = subprocess.Popen(
        ["setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups",
         sys.executable, "-c", HOLD_THE_LOCK, str(sock)],
        env={**os.environ, "PYTHONPATH": os.getcwd()}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert service.stdout is not None and service.stdout.readline() == "running\n"
        with pytest.raises(AlreadyRunning), single_instance(sock):
            pass  # a second copy, run by hand again
    finally:
        service.communicate("", timeout=10)


@pytest.mark.rig  # the installer, as tests/test_install_script.py runs it
def test_an_update_leaves_the_configuration_root_alone_may_change(tmp_path: Path) -> None:
    """A configuration the owner made group-writable (0664, to let the household edit it
    without sudo): any member of the live-appliance group could set [live] base_url to a
    server of their own, and the next `sudo live-appliance doctor` or `sudo live-appliance
    ask` sent them the root-only key. The update left it so, saying it kept the file."""
    view = SystemView(tmp_path / "view")
    view.setup(INSTALLED + "\nchmod 0664 /etc/live-appliance/config.toml\n")
    lines = [line.strip() for line in dry_run(view, StandIns(tmp_path), INSTALL)]
    assert "keeping your /etc/live-appliance/config.toml" in lines
    assert "+ chmod go-w /etc/live-appliance/config.toml" in lines, lines


def test_the_doctor_warns_of_a_configuration_others_may_change(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The doctor and `ask`, run with sudo to read the root-only key, send it where the
    configuration's [live] base_url says: a configuration the service's group (the
    household's other owners) may write hands them the key, and the doctor said PASS."""
    monkeypatch.delenv("LIVE_APPLIANCE_CONFIG", raising=False)
    place = open_dir / "config.toml"
    monkeypatch.setattr(config, "DEFAULT_PATH", place)  # the service's own
    place.write_text('[button]\nmode = "toggle"\n')
    os.chown(place, 0, grp.getgrnam("nogroup").gr_gid)  # root, the service's group
    place.chmod(0o664)
    result, _ = check_config(None)
    assert result.status is Status.WARN, result
    assert "group nogroup" in result.measured and result.fix is not None
    assert f"chmod go-w {place}" in result.fix, result.fix
    place.chmod(0o640)
    assert check_config(None)[0].status is Status.PASS
    os.chown(open_dir, 0, grp.getgrnam("nogroup").gr_gid)
    open_dir.chmod(0o770)  # the file replaced in its directory: as good as written
    result, _ = check_config(None)
    assert result.status is Status.WARN and f"may change {open_dir}:" in result.measured
    open_dir.chmod(0o750)
    place.chmod(0o646)  # others may write it, but not reach it
    assert check_config(None)[0].status is Status.PASS
