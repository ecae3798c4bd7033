"""The SD card full, read-only or in memory (the overlay file system): the box answers,
and the doctor, ctl status, the journal and the installers say what is wrong and how to
put it right."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import wave
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import running
from helpers import daemon_saying
from system_view import SystemView, device_after, require

from device import config
from device import config as config_module
from device.audio import pcm
from device.audio.pcm import write_wav
from device.control import AlreadyRunning, single_instance
from device.doctor import card
from device.doctor.card import check_card
from device.doctor.daemon import summary_lines
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.persist import StateFile

INSTALL = Path(__file__).parents[1] / "scripts" / "install-pi.sh"


def writes_fail(monkeypatch: pytest.MonkeyPatch, under: Path, code: int) -> None:
    """Every file opened for writing `under` a directory fails as on a card full or
    read-only."""
    real_open = os.open

    def refusing(path: Any, flags: int, *args: Any, **kwargs: Any) -> Any:
        if flags & (os.O_WRONLY | os.O_RDWR) and Path(path).is_relative_to(under):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    if code == errno.EROFS:  # the card itself is: the doctor, outside the unit, sees it so
        real_statvfs = os.statvfs

        def read_only(path: Any) -> Any:
            fs = real_statvfs(path)
            if not Path(path).is_relative_to(under):
                return fs
            fields = {name: getattr(fs, name) for name in dir(fs) if name.startswith("f_")}
            return SimpleNamespace(**{**fields, "f_flag": fs.f_flag | os.ST_RDONLY})

        monkeypatch.setattr(os, "statvfs", read_only)


@pytest.mark.parametrize(
    ("code", "fix"),
    [(errno.ENOSPC, "journalctl --vacuum-size"), (errno.EROFS, "read-only")],
    ids=["full", "read-only"],
)
async def test_a_card_that_cannot_keep_the_volume_is_named_by_the_doctor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, fix: str
) -> None:
    """"Louder" on a full or read-only card: the box plays louder and keeps answering, the
    journal says it once, far up by the time anyone looks; the doctor said PASS, and the
    box came back at its old volume after each restart with nobody told why."""
    async with running(tmp_path / "box") as box:
        writes_fail(monkeypatch, tmp_path / "box", code)
        box.appliance.set_volume(0.9)
        assert box.appliance.volume() == 0.9  # heard at once
        status = box.appliance.status()
    async with daemon_saying(status) as sock:
        path = tmp_path / "config.toml"
        path.write_text(f'[control]\nsocket = "{sock}"\n')
        ctx = Context(config.load(path), Options(), Progress(spinner=False))
        result = await check_card(ctx)
    assert result.status is Status.WARN, result
    assert os.strerror(code) in result.measured and "state.json" in result.measured, result
    assert fix in (result.fix or ""), result.fix
    said = "\n".join(summary_lines(status))  # `live-appliance ctl status`
    assert f"not kept in {tmp_path / 'box' / 'state.json'}: {os.strerror(code)}" in said, said


def test_a_full_run_directory_does_not_stop_the_daemon_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/run is a small tmpfs: full (a runaway log of another program), the lock opens but
    its pid cannot be written, and the daemon ended at every start with a traceback,
    restarted by systemd until its start limit. The pid is only a courtesy to the next
    one refused; the lock itself still keeps a second daemon out."""
    path = tmp_path / "control.sock"

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with single_instance(path), pytest.raises(AlreadyRunning, match="another process holds"):
        single_instance(path).__enter__()


async def test_room_made_on_the_card_clears_the_warning_and_a_new_fill_is_said_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The owner frees space as the doctor says: the next "louder" is kept, and the doctor
    no longer warns. The card full again months later is said in the journal again (it
    was said once for the life of the process)."""
    async with running(tmp_path / "box") as box:
        with monkeypatch.context() as full:
            writes_fail(full, tmp_path / "box", errno.ENOSPC)
            box.appliance.set_volume(0.9)
            box.appliance.set_volume(0.8)
        assert box.appliance.status()["settings_not_kept"] is not None
        box.appliance.set_volume(0.7)  # room made
        assert box.appliance.status()["settings_not_kept"] is None
        with monkeypatch.context() as full:
            writes_fail(full, tmp_path / "box", errno.ENOSPC)
            box.appliance.set_volume(0.6)
    said = [r.getMessage() for r in caplog.records if "cannot keep settings" in r.getMessage()]
    assert len(said) == 2, said


@pytest.mark.parametrize(
    ("options", "reason"),
    [("size=4k", "No space left on device"), ("ro", "Read-only file system")],
    ids=["full", "read-only"],
)
def test_a_key_the_installer_cannot_write_is_not_said_to_exist(
    tmp_path: Path, options: str, reason: str
) -> None:
    """The installer storing the API key on a full card (or one the kernel remounted
    read-only) said "/etc/live-appliance/api-key exists: not replacing the key", a file
    that was not there before, and left it empty on the card full: the owner looked for
    a key that was never stored, not for room on the card."""
    where = tmp_path / "etc"
    where.mkdir()
    script = (
        f"mount -t tmpfs -o {options} tmpfs {where} && "
        f"{{ head -c 4096 /dev/zero > {where}/fill; }} 2>/dev/null; "
        f"bash -c 'source {Path(__file__).parents[1] / 'scripts' / 'install-pi.sh'}; "
        f'write_key AIza-sdcard-test-key "$1"\' install-pi.sh {where}/api-key; '
        f"echo rc=$?; ls {where}"
    )
    unshare = require("unshare", "util-linux")
    done = subprocess.run(
        [unshare, "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=30
    )
    assert "rc=1" in done.stdout, (done.stdout, done.stderr)
    assert "api-key" not in done.stdout.split("rc=1")[1], "a key file was left: " + done.stdout
    assert "exists" not in done.stderr, done.stderr
    assert reason in done.stderr and "cannot store the key" in done.stderr, done.stderr


def doctor_on_a_card(tmp_path: Path, options: str) -> dict[str, Any]:
    """`live-appliance doctor card --json` with the state directory on a file system of
    its own, mounted with `options` (a full one is filled first), no daemon running."""
    state = tmp_path / "state"
    state.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[service]\nstate_dir = "{state}"\n[control]\nsocket = "{tmp_path}/none.sock"\n'
    )
    fill = f"{{ head -c 8192 /dev/zero >{state}/fill 2>/dev/null || :; }} &&"
    fill = fill if "size" in options else ""
    return doctor_after(f"mount -t tmpfs -o {options} tmpfs {state} && {fill}", cfg)


def doctor_after(mounts: str, cfg: Path, check: str = "card", *options: str) -> dict[str, Any]:
    """`live-appliance doctor <check> --json` of `cfg`, in a mount namespace of its own
    after the shell commands `mounts` (each ending in `&&`)."""
    done = device_after(mounts.strip().removesuffix("&&"), "doctor", check, "--json",
                        "--config", str(cfg), *options)  # fmt: skip
    assert done.stdout.startswith("{"), (done.stdout, done.stderr)
    (line,) = json.loads(done.stdout)["checks"]
    return line


@pytest.mark.parametrize(
    ("options", "words", "fix"),
    [("size=8k", "full", "journalctl --vacuum-size"), ("ro", "read-only", "dmesg")],
    ids=["full", "read-only"],
)
def test_the_doctor_names_a_full_or_read_only_card_before_the_box_trips_on_it(
    tmp_path: Path, options: str, words: str, fix: str
) -> None:
    """The card full (a journal grown for a year) or remounted read-only after an error:
    every check passed, the service's too while the daemon had not yet tried to write.
    The next "louder" is lost at the next start, and so is every journal line."""
    line = doctor_on_a_card(tmp_path, options)
    assert line["status"] == "WARN", line
    assert words in line["measured"] and str(tmp_path / "state") in line["measured"], line
    assert fix in line["fix"], line


def test_the_doctor_passes_a_card_with_room(tmp_path: Path) -> None:
    line = doctor_on_a_card(tmp_path, "size=64m")
    assert line["status"] == "PASS" and "free" in line["measured"], line


def doctor_on_an_overlay(tmp_path: Path, upper_on: str, linked: bool = False) -> dict[str, Any]:
    """`doctor card` with the state directory on an overlay whose writes land on a tmpfs
    (Raspberry Pi OS's overlay file system: lost at each boot) or on the disk; `linked`:
    named through a symbolic link (/var/lib moved to a USB disk)."""
    state, lower, rw = tmp_path / "state", tmp_path / "lower", tmp_path / "rw"
    for directory in (state, lower, rw):
        directory.mkdir()
    named = tmp_path / "link"
    named.symlink_to(state)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[service]\nstate_dir = "{named if linked else state}"\n'
        f'[control]\nsocket = "{tmp_path}/none.sock"\n'
    )
    tmpfs = f"mount -t tmpfs tmpfs {rw} && " if upper_on == "tmpfs" else ""
    overlay = (
        f"{tmpfs}mkdir {rw}/upper {rw}/work && mount -t overlay overlay -o lowerdir={lower},"
        f"upperdir={rw}/upper,workdir={rw}/work {state} &&"
    )
    return doctor_after(overlay, cfg)


def test_the_doctor_says_the_overlay_forgets_the_volume_at_each_boot(tmp_path: Path) -> None:
    """Raspberry Pi OS's overlay file system (raspi-config) keeps every write in memory:
    "louder" lasted until the next power cut, with nothing said anywhere, and the owner's
    edit of the configuration too."""
    line = doctor_on_an_overlay(tmp_path, "tmpfs")
    assert line["status"] == "WARN" and "lost at each boot" in line["measured"], line
    assert "raspi-config" in line["fix"], line
    disk = tmp_path / "disk"
    disk.mkdir()
    line = doctor_on_an_overlay(disk, "disk")  # a container's root: kept
    assert line["status"] == "PASS", line


def test_the_doctor_sees_the_overlay_under_a_state_directory_named_through_a_link(
    tmp_path: Path,
) -> None:
    """The mounts name real paths: a state directory named through a link was looked up
    by the link's own path, found on the root's mount, and passed."""
    line = doctor_on_an_overlay(tmp_path, "tmpfs", linked=True)
    assert line["status"] == "WARN" and "lost at each boot" in line["measured"], line


def doctors_picture_in(tmp_path: Path, mounts: Callable[[Path], str]) -> dict[str, Any]:
    """`doctor camera --json` of the synthetic camera, its picture written to a directory
    the shell commands `mounts(directory)` made a file system of its own."""
    out = tmp_path / "out"
    out.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[camera]\nenabled = true\nsource = "synthetic"\n'
        f'[control]\nsocket = "{tmp_path}/none.sock"\n'
    )
    return doctor_after(mounts(out), cfg, "camera", "--camera-out", str(out / "camera.jpg"))


def test_the_doctors_picture_on_a_full_tmp_is_said_full_not_forbidden(tmp_path: Path) -> None:
    """/tmp a small tmpfs, full: the doctor took the picture and said "Give --camera-out a
    path you may write to", sending the owner after permissions they had."""
    line = doctors_picture_in(tmp_path, lambda out: (
        f"mount -t tmpfs -o size=8k tmpfs {out} && "
        f"{{ head -c 8192 /dev/zero >{out}/fill 2>/dev/null || :; }}"
    ))  # fmt: skip
    assert line["status"] == "WARN" and "No space left" in line["measured"], line
    assert "you may write to" not in line["fix"] and "df -h" in line["fix"], line


def test_a_reply_wav_the_card_cannot_take_leaves_the_earlier_one_whole(tmp_path: Path) -> None:
    """`ask --audio reply.wav` again, the card filling up as it writes: the earlier reply
    was cut to nothing first, then half of the new one written over it and left there,
    a file that plays the start of a reply as though it were all of it."""
    out = tmp_path / "reply.wav"
    earlier = b"RIFF an earlier reply, whole"
    out.write_bytes(earlier)
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from types import SimpleNamespace
        from device import ask
        from device.cli import main

        async def replies(cfg, args, _kept):
            return [SimpleNamespace(audio=b"\\1\\0" * 48_000)]

        ask._ask_and_play = replies
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the bound fails EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.RLIM_INFINITY))
        sys.exit(main(["ask", "Hello", "--audio", sys.argv[1], "--config", sys.argv[2]]))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
           "GEMINI_API_KEY": "AIzaFakeKeyForTheTest0000000000000000000"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", script, str(out), str(cfg)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 1 and "File too large" in done.stderr, done.stderr
    assert out.read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "reply.wav"]


def test_a_damaged_state_file_is_said_in_words_an_owner_can_act_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A power cut mid-write on a card without barriers leaves zeros: the journal said
    "ignoring unreadable .../state.json: Expecting value: line 1 column 1 (char 0)", a
    parser's words, not what the box does about it."""
    path = tmp_path / "state.json"
    path.write_bytes(b"\0" * 4096)
    with caplog.at_level("WARNING"):
        assert StateFile(path).load() == {}
    (line,) = [r.getMessage() for r in caplog.records]
    said = line.split(str(path))[1]  # the path holds the test's name
    assert "damaged" in said and "configured volume" in said and "written anew" in said, line


class CardView(SystemView):
    """The installer's view of a Pi whose /opt is Raspberry Pi OS's overlay file system
    (its writes in memory), or read-only (the kernel remounted the card after an error)."""

    def __init__(self, base: Path, card: str) -> None:
        super().__init__(base)
        self.card = card
        self.rw = base / "rw"
        self.rw.mkdir()

    def mount(self, place: str) -> str:
        return self.opt_mount() if place == "/opt" else super().mount(place)

    def opt_mount(self) -> str:
        """The command that puts this card's /opt in place, in the view's namespace."""
        if self.card == "overlay":
            return (
                f"mount -t tmpfs tmpfs {self.rw} && mkdir {self.rw}/u {self.rw}/w && "
                f"mount -t overlay overlay -o lowerdir=/opt,upperdir={self.rw}/u,"
                f"workdir={self.rw}/w /opt"
            )
        return "mount -t tmpfs -o ro tmpfs /opt"


@pytest.mark.parametrize(
    ("card", "words"),
    [("overlay", "undone at the next boot"), ("read-only", "read-only")],
)
def test_the_installer_refuses_a_card_that_would_not_keep_it(
    tmp_path: Path, card: str, words: str
) -> None:
    """With raspi-config's overlay file system on, the install went well, the box answered,
    and after the next boot nothing of it was left: not the service, not the key. On a
    card the kernel made read-only, it failed half-way with a tool's error."""
    view = CardView(tmp_path / "view", card)
    env = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    result = view.run(["bash", str(INSTALL), "--dry-run"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert words in result.stderr and "/opt" in result.stderr, result.stderr
    assert "==> Debian packages" not in result.stdout, "refused before any step"


def test_the_uninstaller_refuses_an_overlay_that_would_bring_it_all_back(tmp_path: Path) -> None:
    """Uninstalled with the overlay file system on: gone until the next boot, then the
    service, its user and the key were all back, started at boot, with nothing said."""
    view = CardView(tmp_path / "view", "overlay")
    env = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    uninstall = INSTALL.with_name("uninstall-pi.sh")
    result = view.run(["bash", str(uninstall), "--dry-run"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "overlay file system" in result.stderr, result.stderr
    assert "==> service" not in result.stdout, "refused before any step"


async def test_a_volume_set_back_to_the_one_kept_clears_the_card_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """"Louder" on a full card is not kept; "back as it was" sets the volume the card
    holds. Nothing is unkept any more, and the next start plays what plays now: ctl status
    still said the volume goes back at the next start, and the doctor kept warning of a
    full card after the owner had made room, until a volume the card did not hold."""
    async with running(tmp_path / "box") as box:
        box.appliance.set_volume(0.4)  # kept
        with monkeypatch.context() as full:
            writes_fail(full, tmp_path / "box", errno.ENOSPC)
            box.appliance.set_volume(0.9)
        assert box.appliance.status()["settings_not_kept"] is not None
        box.appliance.set_volume(0.4)  # room made, or not: the card holds this one
        status = box.appliance.status()
    assert status["settings_not_kept"] is None, status["settings_not_kept"]
    assert not any("not kept" in line for line in summary_lines(status))


async def test_ctl_status_says_the_volume_the_next_start_plays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A volume kept before the card filled is the one the next start plays: ctl status
    (and the README's card line) said the configured one, which the owner then looked
    for and never heard."""
    async with running(tmp_path / "box") as box:
        configured = box.appliance.volume()
        box.appliance.set_volume(0.4)  # kept
        with monkeypatch.context() as full:
            writes_fail(full, tmp_path / "box", errno.ENOSPC)
            box.appliance.set_volume(0.9)
        said = "\n".join(summary_lines(box.appliance.status()))
    async with running(tmp_path / "box") as box:
        played = box.appliance.volume()
    assert played == 0.4 != configured
    assert "not kept" in said and "configured" not in said, said


def test_a_reply_wav_is_written_over_a_temporary_file_left_by_a_power_cut(tmp_path: Path) -> None:
    """The reply is written beside its file, named by the process's pid, then renamed:
    a power cut between left that file, and after the reboot a process of the same pid
    (a Pi's pids start afresh at each boot) failed with "File exists", every time. The
    earlier file's permissions are kept, as writing it in place kept them."""
    out = tmp_path / "reply.wav"
    out.write_bytes(b"earlier")
    out.chmod(0o600)
    (tmp_path / f".reply.wav.{os.getpid()}.tmp").write_bytes(b"RIFF, cut short")
    pcm.write_wav(out, b"\0\0" * 240, 24000)
    assert out.read_bytes()[:4] == b"RIFF" and len(out.read_bytes()) == 44 + 480
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reply.wav"]


def test_a_reply_wav_is_readable_by_others_as_before(tmp_path: Path) -> None:
    """Written beside its place and renamed, the WAV keeps the mode a file written in
    place had (0666 less the umask): another user's player, or a web server, reads it."""
    out = tmp_path / "reply.wav"
    old = os.umask(0o022)
    try:
        write_wav(out, b"\0\0" * 160, 16_000)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_a_reply_wav_to_a_pipe_is_written_into_it(tmp_path: Path) -> None:
    """`ask --audio` to a named pipe a player reads (`mkfifo`, `aplay < pipe`): the WAV
    goes into the pipe, which stays a pipe; a file renamed over it took the reply away
    from the player, and left the player waiting for ever."""
    pipe = tmp_path / "reply.pipe"
    os.mkfifo(pipe)
    heard: list[bytes] = []
    reader = threading.Thread(target=lambda: heard.append(pipe.read_bytes()), daemon=True)
    reader.start()
    write_wav(pipe, b"\1\0" * 160, 16_000)
    reader.join(5)
    assert stat.S_ISFIFO(pipe.stat().st_mode), "the pipe was replaced by a file"
    assert heard and heard[0].startswith(b"RIFF"), heard


def test_a_reply_wav_to_a_link_writes_where_it_points(tmp_path: Path) -> None:
    """`--audio latest.wav`, a link the owner keeps to a file elsewhere: the reply is
    written to that file, and the link stays a link (a file renamed over it cut the two
    apart: the next look at the linked file found the old reply)."""
    target = tmp_path / "kept" / "reply.wav"
    target.parent.mkdir()
    target.write_bytes(b"an old reply")
    link = tmp_path / "latest.wav"
    link.symlink_to(target)
    write_wav(link, b"\1\0" * 160, 16_000)
    assert link.is_symlink()
    with wave.open(str(target), "rb") as reply:
        assert reply.getnframes() == 160


# --- `doctor card` ------------------------------------------------------------------------


def card_context(tmp_path: Path, text: str) -> Context:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return Context(config_module.load(path), Options(), Progress(spinner=False))


async def test_the_doctor_looks_at_the_card_before_the_first_start(tmp_path: Path) -> None:
    """A new box, the doctor run before the service ever started: the state directory is
    not made yet, and the card under it is what the service will write to. The line was
    SKIP "cannot look", the one time an owner runs the doctor to see all is well."""
    state = tmp_path / "not" / "made" / "yet"
    ctx = card_context(
        tmp_path, f'[service]\nstate_dir = "{state}"\n[control]\nsocket = "{tmp_path}/n.sock"\n'
    )
    result = await check_card(ctx)
    assert result.status is Status.PASS, result
    assert str(state) in result.measured and "free" in result.measured, result


async def test_a_state_file_over_its_quota_is_said_full(tmp_path: Path) -> None:
    """A disk quota met (EDQUOT) is a full disk for the service's user: the fix is room
    made, not the permissions the doctor sent the owner after."""
    unkept = {"path": "/var/lib/live-appliance/state.json", "error": os.strerror(errno.EDQUOT),
              "errno": "EDQUOT"}  # fmt: skip
    async with daemon_saying({"settings_not_kept": unkept}) as sock:
        ctx = card_context(tmp_path, f'[control]\nsocket = "{sock}"\n')
        result = await check_card(ctx)
    assert result.status is Status.WARN, result
    assert "full" in (result.fix or "") and "sudo ls -ld" not in (result.fix or ""), result.fix


async def test_an_overlay_mounted_over_the_card_is_the_one_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlay file system mounted over the card's own mount at the same point: what
    the service writes lands in the overlay (the last mounted), in memory, and the doctor
    says so; the card's ext4 below it, first in the mount table, is not what is written."""
    state = tmp_path / "state"
    state.mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "1 0 8:2 / / rw - ext4 /dev/root rw\n"
        f"2 1 8:2 / {state} rw - ext4 /dev/root rw\n"
        f"3 1 0:9 / {state} rw - overlay overlay rw,lowerdir=/lower,upperdir=/ram/upper\n"
        "4 1 0:10 / /ram rw - tmpfs tmpfs rw\n"
    )
    monkeypatch.setattr(card, "MOUNTINFO", mountinfo)
    ctx = card_context(
        tmp_path, f'[service]\nstate_dir = "{state}"\n[control]\nsocket = "{tmp_path}/n.sock"\n'
    )
    result = await check_card(ctx)
    assert result.status is Status.WARN and "lost at each boot" in result.measured, result


def test_the_doctors_picture_on_a_read_only_tmp_is_said_read_only(tmp_path: Path) -> None:
    """/tmp read-only (the card remounted after an error): the doctor took the picture and
    said to give a path "you may write to", sending the owner after permissions."""
    line = doctors_picture_in(tmp_path, lambda out: f"mount -t tmpfs -o ro tmpfs {out}")
    assert line["status"] == "WARN" and "Read-only" in line["measured"], line
    assert "read-only" in line["fix"] and "you may write to" not in line["fix"], line


# --- the installer ------------------------------------------------------------------------


class DiskOverlayView(CardView):
    """/opt on an overlay whose writes land on the disk (a container's root, a build
    image's layers): kept across boots."""

    def opt_mount(self) -> str:
        return (
            f"mkdir {self.rw}/u {self.rw}/w && mount -t overlay overlay -o lowerdir=/opt,"
            f"upperdir={self.rw}/u,workdir={self.rw}/w /opt"
        )


def test_the_installer_takes_an_overlay_written_to_the_disk(tmp_path: Path) -> None:
    """Only an overlay whose writes stay in memory undoes the install at the next boot:
    one written to the disk (a container, an image being built) keeps it, and is not
    refused as raspi-config's overlay file system."""
    view = DiskOverlayView(tmp_path / "view", "overlay")
    env = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    result = view.run(["bash", str(INSTALL), "--dry-run"], env=env)
    assert "undone at the next boot" not in result.stderr, result.stderr
    assert "==> Debian packages" in result.stdout, result.stdout + result.stderr


def test_ask_audio_on_a_full_card_is_refused_before_the_session(tmp_path: Path) -> None:
    """`ask "..." --audio reply.wav` with the card full: the check before the session
    opened the (existing) file and passed, the session ran (the owner waited for every
    turn, and paid for it), and only then was the reply lost to "No space left". It is
    said before any connection is tried."""
    card = tmp_path / "card"
    card.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text('[live]\nbase_url = "http://127.0.0.1:9"\n')  # discard: never reached
    wav = card / "reply.wav"
    fill = f"head -c 65536 /dev/zero >{card}/fill 2>/dev/null; : >{wav}"
    mounts = f"mount -t tmpfs -o size=8k tmpfs {card} && {fill}"
    done = device_after(mounts, "ask", "Hello", "--audio", str(wav), "--config", str(cfg))
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--audio" in lines[0], done.stderr  # nothing of a session
    assert os.strerror(errno.ENOSPC) in lines[0], done.stderr


@pytest.mark.parametrize(
    ("path", "code", "fix"),
    [
        # [service] state_dir outside the unit's StateDirectory: read-only to the service
        # alone (ProtectSystem=strict); the card is fine, its fix sent the owner to
        # reboot and copy a healthy card.
        ("/srv/box/state.json", "EROFS", "ReadWritePaths=/srv/box"),
        ("/srv/box/state.json", "EACCES", "sudo ls -ld on /srv/box"),  # owner, mode
        ("/srv/box/state.json", "EACCES", "ReadWritePaths=/srv/box"),  # and the unit's
        # a directory where the file goes: no rename replaces it; not a permission
        ("/var/lib/live-appliance/state.json", "EISDIR",
         "sudo rm -r /var/lib/live-appliance/state.json"),
        ("/var/lib/live-appliance/state.json", "EACCES", "sudo ls -ld"),
    ],
)  # fmt: skip
async def test_the_doctor_names_what_keeps_the_volume_from_the_card(
    tmp_path: Path, path: str, code: str, fix: str
) -> None:
    unkept = {"path": path, "error": os.strerror(getattr(errno, code)), "errno": code}
    async with daemon_saying({"settings_not_kept": unkept}) as sock:
        ctx = card_context(tmp_path, f'[control]\nsocket = "{sock}"\n')
        result = await check_card(ctx)
    assert result.status is Status.WARN, result
    assert fix in (result.fix or ""), result.fix
    assert "copy it to a new one" not in (result.fix or ""), result.fix


async def test_a_card_with_room_but_no_inodes_is_said_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Room in bytes, none in inodes (a program that made millions of small files): the
    doctor said PASS, and after the save failed (ENOSPC) sent the owner to `df -h`, which
    shows room, and to shrink the journal, which frees few inodes."""
    real_statvfs = os.statvfs

    def no_inodes(path: Any) -> Any:
        fs = real_statvfs(path)
        fields = {name: getattr(fs, name) for name in dir(fs) if name.startswith("f_")}
        return SimpleNamespace(**{**fields, "f_files": 200, "f_ffree": 0, "f_favail": 0,
                                  "f_bavail": 2**20, "f_frsize": 4096})  # fmt: skip

    monkeypatch.setattr(os, "statvfs", no_inodes)
    ctx = card_context(tmp_path, f'[service]\nstate_dir = "{tmp_path}"\n'
                                 f'[control]\nsocket = "{tmp_path}/n.sock"\n')  # fmt: skip
    result = await check_card(ctx)
    assert result.status is Status.WARN, result
    assert "0 inodes free" in result.measured and "df -i" in (result.fix or ""), result
    unkept = {"path": f"{tmp_path}/state.json", "error": os.strerror(errno.ENOSPC),
              "errno": "ENOSPC"}  # fmt: skip
    async with daemon_saying({"settings_not_kept": unkept}) as sock:
        ctx = card_context(tmp_path, f'[control]\nsocket = "{sock}"\n')
        result = await check_card(ctx)
    assert "df -i" in (result.fix or "") and "vacuum" not in (result.fix or ""), result.fix
