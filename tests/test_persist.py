"""The state file (volume) across restarts: whatever is on the SD card, the box starts."""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeParts, config
from helpers import journal_lines

from device.appliance import Appliance, _saved_volume
from device.persist import StateFile


@pytest.mark.parametrize(
    "content",
    [b"", b"\0" * 64, b'{"volume": 0.', b"\xff\xfe", b"[1, 2]", b"[" * 100_000,
     b'{"volume": 0.5, "pad": "' + b"x" * 300_000 + b'"}'],
    ids=["empty", "zeros", "cut short", "not utf-8", "not an object", "nested too deep",
         "too big"],
)
def test_a_state_file_the_box_cannot_use_is_ignored_and_rewritten(
    tmp_path: Path, content: bytes
) -> None:
    """A power cut mid-write, a damaged card: every start used to crash on the deepest one
    (RecursionError), until the start limit and for as long as the retry timer ran."""
    path = tmp_path / "state.json"
    path.write_bytes(content)
    state = StateFile(path)
    assert state.load() == {}
    state.save(volume=0.5)
    assert state.load() == {"volume": 0.5}


def test_a_volume_set_to_what_it_is_writes_nothing_to_the_card(tmp_path: Path) -> None:
    """The model calls set_volume as often as it likes ("louder", "a bit louder", the same
    again): each call wrote and renamed the state file, the same bytes on the SD card."""
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.3)
    written = (tmp_path / "state.json").stat()
    for _ in range(3):
        state.save(volume=0.3)
    again = (tmp_path / "state.json").stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    state.save(volume=0.4)
    assert state.load() == {"volume": 0.4}


@pytest.mark.parametrize(
    "saved",
    ['NaN', 'Infinity', '-Infinity', '1e400', "1" + "0" * 100, "-0.5", "1.5", '"loud"',
     "true", "null", "[0.5]"],
)  # fmt: skip
def test_a_saved_volume_that_is_no_volume_falls_back_to_the_configured_one(
    tmp_path: Path, saved: str
) -> None:
    """The state file is edited by hand, or damaged: the box starts at its configured
    volume, not silent, not clipping, not crashing."""
    state = tmp_path / "state.json"
    state.write_text(f'{{"volume": {saved}}}')
    assert _saved_volume(StateFile(state), 0.7) == 0.7


def _run_saves(path: Path, volumes: list[float], fsize: int) -> list[str]:
    """The journal's lines of a daemon that saves `volumes` one after another with writes
    past `fsize` bytes failing (a full card; 0: none can be written, as read-only)."""
    script = textwrap.dedent(
        """
        import logging, resource, signal, sys
        from pathlib import Path
        from device.persist import StateFile
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the bound fails EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
        state = StateFile(Path(sys.argv[1]))
        state.load()  # the start
        for volume in sys.argv[3:]:
            state.save(volume=float(volume))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(fsize), *map(str, volumes)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_card_that_fills_up_mid_write_leaves_the_old_volume_and_no_half_file(
    tmp_path: Path,
) -> None:
    """The SD card full (a journal that grew, a log of another program): the write of the
    new volume stops part way. The old file stays whole, and no half-written file is left
    beside it in the state directory."""
    path = tmp_path / "state.json"
    path.write_text('{"volume": 0.3}\n')
    lines = _run_saves(path, [0.9], fsize=8)
    assert any("cannot keep settings" in line for line in lines), lines  # said, not raised
    assert json.loads(path.read_text()) == {"volume": 0.3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_damaged_state_file_on_a_card_that_cannot_be_written_is_said_once(
    tmp_path: Path,
) -> None:
    """ext4 remounts a damaged card read-only, often with the file it was writing damaged
    too: the box starts at its configured volume and says so, once. Each volume the model
    set then said again that the file is unreadable, a line per "louder" for months."""
    path = tmp_path / "state.json"
    path.write_bytes(b"\0" * 64)
    lines = _run_saves(path, [0.2, 0.4, 0.6, 0.8], fsize=0)
    assert len([line for line in lines if "ignoring" in line]) == 1, lines
    assert len([line for line in lines if "cannot keep settings" in line]) == 1, lines


def test_a_volume_the_tool_set_is_kept_until_the_owner_changes_the_configured_one(
    tmp_path: Path,
) -> None:
    """"Louder" is kept across restarts; an owner who then edits `[audio] volume` means
    their value, which the kept one no longer overrides (a file from before the
    configured volume was kept with it keeps its volume)."""
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.3, volume_configured=0.8)
    assert _saved_volume(state, 0.8) == 0.3, "the configuration unchanged: the tool's"
    assert _saved_volume(state, 0.5) == 0.5, "the configuration changed since: the owner's"
    older = StateFile(tmp_path / "older.json")
    older.save(volume=0.3)
    assert _saved_volume(older, 0.5) == 0.3


def test_an_owner_who_edits_the_volume_back_gets_their_value_not_the_tools_old_one(
    tmp_path: Path,
) -> None:
    """Configured 0.5, "louder" to 0.8; the owner sets 0.3, then (a month later) 0.5
    again: they mean 0.5, not the 0.8 the model chose before their first edit."""
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.8, volume_configured=0.5)
    assert _saved_volume(state, 0.5) == 0.8
    assert _saved_volume(state, 0.3) == 0.3
    assert _saved_volume(state, 0.5) == 0.5, "the tool's volume from before the edits"


def test_a_volume_kept_before_the_configured_one_was_kept_yields_to_an_owners_edit(
    tmp_path: Path,
) -> None:
    """A file from an older version (the volume alone) keeps its volume at the first start,
    but an owner's edit of `[audio] volume` after that wins, as it does for a newer file."""
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.8)
    assert _saved_volume(state, 0.5) == 0.8
    assert _saved_volume(state, 0.3) == 0.3, "the owner's edit after the upgrade"


def test_a_volume_kept_has_reached_the_card_before_it_replaces_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut in the half minute after "set the volume to 30 %" (the box unplugged to
    move it) left state.json empty: the kernel writes a new file's data back later than
    the rename that puts it in place. The volume was forgotten, and every start said so."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    real_replace = Path.replace

    def replace(self: Path, target: str | os.PathLike[str]) -> Path:
        assert str(self) in synced, "renamed into place before its data was on the card"
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.3)
    assert StateFile(tmp_path / "state.json").load() == {"volume": 0.3}


def test_two_volumes_set_at_once_leave_the_speaker_at_the_one_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model may call set_volume twice in one message, and each call runs in a thread
    of its own. The speaker must play the volume the box comes back with after a restart:
    it played one and kept the other on the card (the first call's slow write to the SD
    card landing after the second's). A card slow to write holds up the save, not the
    sound."""
    appliance = Appliance(config(), FakeParts(config(), tmp_path))
    writing, may_finish = threading.Event(), threading.Event()
    save = appliance.state_file.save

    def slow_first_write(**values: Any) -> None:
        if values.get("volume") == 0.3:  # the first call, held on the card
            writing.set()
            may_finish.wait(5)
        save(**values)

    monkeypatch.setattr(appliance.state_file, "save", slow_first_write)
    first = threading.Thread(target=appliance.set_volume, args=(0.3,))
    second = threading.Thread(target=appliance.set_volume, args=(0.6,))
    first.start()
    assert writing.wait(5)
    second.start()
    second.join(0.5)
    # "Louder" is heard at once, though the card still holds the last save.
    assert appliance.speaker.volume == 0.6
    may_finish.set()
    first.join(5)
    second.join(5)
    assert appliance.speaker.volume == appliance.state_file.load()["volume"]


def test_two_volumes_set_at_once_keep_the_one_played_whichever_saves_last(tmp_path: Path) -> None:
    """Two set_volume threads: the first sets the speaker, the second sets it after and
    saves before the first reaches the card. The first's save must keep what the speaker
    plays (the second's), not its own level: else the box comes back from a restart at
    another volume than the one heard."""
    appliance = Appliance(config(), FakeParts(config(), tmp_path))
    second = threading.Thread(target=appliance.set_volume, args=(0.6,))
    speaker = appliance.speaker

    class SecondBetween(type(speaker)):  # type: ignore[misc]
        """The second call runs whole just after the first set the speaker."""

        @property
        def volume(self) -> float:
            return float(self.__dict__["volume"])

        @volume.setter
        def volume(self, level: float) -> None:
            self.__dict__["volume"] = level
            if level == 0.3:
                second.start()
                second.join(5)

    speaker.__class__ = SecondBetween
    appliance.set_volume(0.3)
    assert speaker.volume == 0.6
    assert appliance.state_file.load()["volume"] == 0.6


def test_a_volume_kept_has_its_rename_on_the_card_before_save_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename lives in the directory, written back on the kernel's own time: a power
    cut in the half minute after "set the volume to 30 %" brought the old volume back
    (or, for a first save, none). Only a sync of the directory after the rename keeps it."""
    path = tmp_path / "state.json"
    dirs_synced_after_rename: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode) and path.exists() and "0.3" in path.read_text():
            dirs_synced_after_rename.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    StateFile(path).save(volume=0.3)
    assert dirs_synced_after_rename == [str(tmp_path)]


@pytest.mark.parametrize("content", ["[0.5]", '"loud"', "0.5", "null", "true"])
def test_a_state_file_of_json_that_is_no_object_is_said_once_when_ignored(
    tmp_path: Path, content: str
) -> None:
    """`[0.5]` in state.json (edited by hand, written by another program): the box started
    at its configured volume, the owner's kept volume gone, and the journal said nothing,
    where a damaged file says "ignoring ... damaged"."""
    path = tmp_path / "state.json"
    path.write_text(content)
    state = StateFile(path)
    with journal_lines("device.persist") as journal:
        assert state.load() == {}
        assert state.load() == {}
    said = [r for r in journal.records if str(path) in r["MESSAGE"]]
    assert len(said) == 1, journal.records
    assert int(said[0]["PRIORITY"]) <= 4  # a warning, as for a damaged file


SERVICE_UID = 1601  # the service's user, in a test of its own state directory


SAVE_VOLUME = """
import sys
from pathlib import Path
from device.persist import StateFile
state = StateFile(Path(sys.argv[1]))
state.save(volume=0.25)
print(state.problem())
"""


def _saved_as_the_service(path: Path) -> subprocess.CompletedProcess[str]:
    """SAVE_VOLUME run as the service's user against the state file `path`."""
    return subprocess.run(
        ["setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups",
         sys.executable, "-c", SAVE_VOLUME, str(path)],
        env={**os.environ, "PYTHONPATH": os.getcwd()}, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip


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
    saved = _saved_as_the_service(place / "state.json")
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.strip() == "None", saved.stdout  # ctl status: settings kept
    assert '"volume": 0.25' in (place / "state.json").read_text()
    assert (place / "state.json").stat().st_uid == SERVICE_UID


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="root's directory, saved in by another"
)
def test_a_state_directory_the_service_may_not_write_is_said_as_permission_denied(
    open_dir: Path,
) -> None:
    """A state directory left root's (made by hand, or a backup restored as root): the
    service cannot keep its volume, and `ctl status` and the doctor say why by the errno,
    which decides the fix (EACCES: the directory's owner). It said ENOENT, "No such file or
    directory", for a directory that is there, about a file nobody asked for."""
    place = open_dir / "state"
    place.mkdir(mode=0o755)  # root's: the service may read it, not write in it
    (place / "state.json").write_text('{"volume": 0.5}\n')
    saved = _saved_as_the_service(place / "state.json")
    assert saved.returncode == 0, saved.stderr
    problem = ast.literal_eval(saved.stdout.strip())  # the dict ctl status shows, as printed
    assert problem["errno"] == "EACCES", problem
    assert problem["error"] == "Permission denied", problem
    assert "Permission denied" in saved.stderr, saved.stderr  # the journal's line
    assert json.loads((place / "state.json").read_text()) == {"volume": 0.5}


def test_a_link_left_where_the_save_writes_first_is_not_followed(tmp_path: Path) -> None:
    """The save's temporary file has a fixed name: a link planted there (the state
    directory is the service's: a compromised service, for root's `sudo live-appliance
    run` to follow) was opened and truncated, the file it named overwritten."""
    victim = tmp_path / "victim.txt"
    victim.write_text("not the box's\n")
    (tmp_path / "state.tmp").symlink_to(victim)
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.3)
    assert victim.read_text() == "not the box's\n"
    assert json.loads((tmp_path / "state.json").read_text()) == {"volume": 0.3}
    assert not (tmp_path / "state.tmp").exists()


def test_a_directory_where_the_state_file_goes_is_said_to_be_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No save can rename over a directory: "written anew at the next change" never came."""
    (tmp_path / "state.json").mkdir()
    state = StateFile(tmp_path / "state.json")
    assert state.load() == {}
    assert f"sudo rm -r {tmp_path / 'state.json'}" in caplog.text, caplog.text
    assert "written anew" not in caplog.text
