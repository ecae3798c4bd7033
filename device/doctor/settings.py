"""The first two checks: the configuration loads, and there is something to sign in with."""

from __future__ import annotations

import asyncio
import dataclasses
import grp
import os
import pwd
import shlex
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from device import config as config_mod
from device.config import Config
from device.doctor import service
from device.doctor.result import Context, Result, Status
from device.doctor.service import started_at
from device.errors import ConfigError, ConfigFileUnusable, ConfigUnreadable, UnusableKey


def check_config(cli_path: str | os.PathLike[str] | None) -> tuple[Result, Config | None]:
    """Load the configuration as the daemon would; the Config too when it loads."""
    try:
        cfg = config_mod.load(cli_path, key=False)
    except ConfigError as exc:
        if isinstance(exc, ConfigUnreadable):
            fix = exc.fix
        elif isinstance(exc, ConfigFileUnusable):
            fix = ConfigFileUnusable.FIX
        else:
            fix = "Correct that setting (the README's Configuration section lists them all)."
        return Result("config", Status.FAIL, str(exc), fix), None
    where = str(cfg.path) if cfg.path else f"no file at {config_mod.resolve_path(cli_path)[0]}"
    measured = f"{where}: loaded, profile {cfg.hardware.profile}"
    try:  # a key file that cannot be used is the key check's to say
        found, source = config_mod.find_api_key(cfg.live)
    except ConfigError:
        found, source = None, None
    cfg = dataclasses.replace(cfg, api_key=found, api_key_source=source)
    data = {"path": str(cfg.path or "")}
    the_services_own = config_mod.resolve_path(cli_path)[0] == config_mod.DEFAULT_PATH
    # Hidden first: no mode lets the service see a file there.
    if the_services_own and (hidden := _hidden_from_service(cfg)):
        label, place = hidden[0]
        return Result(
            "config",
            Status.WARN,
            f"{measured}; the service cannot see {label} {place}: its unit hides "
            "/home, /root and /run/user, gives it a /tmp of its own, and it has no home",
            "Move the file under /etc/live-appliance (owner root, group live-appliance, "
            "mode 0640) and name it by that absolute path.",
            data=data | {"hidden": dict(hidden)},
        ), cfg
    if the_services_own and (unreadable := _unreadable_by_service(cfg)):
        label, place = unreadable[0]
        return Result(
            "config",
            Status.WARN,
            f"{measured}; the service (user {SERVICE_USER}) may not read {label} {place}: "
            "only its owner, or a group the service is not in, may",
            f"sudo chgrp {SERVICE_USER} {place} && sudo chmod 0640 {place} (and let the "
            "service into the directories above it).",
            data=data | {"unreadable": dict(unreadable)},
        ), cfg
    if the_services_own and cfg.path and (writable := _others_who_may(cfg.path, change=True)):
        writers, changeable = writable
        return Result(
            "config",
            Status.WARN,
            f"{measured}; but {writers} may change {changeable}: with [live] base_url they "
            "would be sent the key that `sudo live-appliance doctor` and `ask` read",
            f"sudo chmod go-w {changeable}: root's alone to change (the service's group "
            "reads it).",
            data=data | {"writable": str(changeable)},
        ), cfg
    return Result("config", Status.PASS, measured, data=data), cfg


def _others_who_may(
    place: Path, change: bool = False, groups: Iterable[int] = ()
) -> tuple[str, Path] | None:
    """Who besides root and its owner may read the file at `place` (or, `change`, write it
    or replace it in its directory), and where: any local user, or every member of one of
    `groups` (to change: also of the file's and its directory's groups other than root's),
    by the modes of the file and of the directories above it (ACLs aside). None when
    nobody else may, or when this user cannot tell (not there, or not theirs to look at)."""
    try:
        path = place.resolve()
        infos = {where: where.stat() for where in (path, *path.parents)}
    except OSError:
        return None
    asked = set(groups)
    ways: tuple[tuple[Path, tuple[int, ...]], ...] = ((path, (4,)),)
    if change:  # the file written, or replaced in its directory (write and search)
        asked |= {infos[path].st_gid, infos[path.parent].st_gid} - {0}
        ways = ((path, (2,)), (path.parent, (2, 1)))
    who: list[tuple[str, set[int]]] = [("any local user", set())]
    who += [(f"every member of group {_group_name(gid)}", {gid}) for gid in sorted(asked)]
    for others, gids in who:  # -1: a uid no file has
        for where, bits in ways:
            if all(_allows(infos[where], -1, gids, bit) for bit in bits) and all(
                _allows(infos[above], -1, gids, 1) for above in where.parents
            ):
                return others, where
    return None


def _group_name(gid: int) -> str:
    """A group's name, or its number when the box has no name for it."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


#: What the service's unit keeps from it (ProtectHome=yes; PrivateTmp=yes: a /tmp of its
#: own): a file named there reads for the owner, and the doctor, but never for the service.
HIDDEN_FROM_SERVICE = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")


def _files_named(cfg: Config) -> list[tuple[str, str]]:
    """The files the configuration names for the service to read, with their settings."""
    named = (
        ("[live] api_key_file", cfg.live.api_key_file),
        ("[live] system_instruction_file", cfg.live.system_instruction_file),
    )
    return [(label, place) for label, place in named if place]


def _hidden_from_service(cfg: Config) -> list[tuple[str, str]]:
    """The files the service's configuration names where the service cannot read them."""
    hidden = []
    for label, place in _files_named(cfg):
        path = os.path.normpath(place)
        if place.startswith("~") or any(
            path == top or path.startswith(f"{top}/") for top in HIDDEN_FROM_SERVICE
        ):
            hidden.append((label, place))
    return hidden


#: Who the installed service runs as: its unit's User=, Group= and SupplementaryGroups=.
SERVICE_USER = "live-appliance"
SERVICE_GROUPS = ("audio", "video", "gpio", "spi")


def _service_identity() -> tuple[int, set[int]] | None:
    """The service user's uid and groups, on a box the installer made it on."""
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    gids = {user.pw_gid}
    for name in SERVICE_GROUPS:
        try:
            gids.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            continue
    return user.pw_uid, gids


def _allows(info: os.stat_result, uid: int, gids: set[int], bit: int) -> bool:
    """The mode bits of `info` give `bit` (4 read, 1 search) to uid with gids (no ACLs)."""
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode >> 6 & bit)
    if info.st_gid in gids:
        return bool(info.st_mode >> 3 & bit)
    return bool(info.st_mode & bit)


def _unreadable_by_service(cfg: Config) -> list[tuple[str, str]]:
    """The configuration and the files it names that exist but the service user may not
    read: the doctor runs as root (sudo) and reads them; the service exits 2 at every start."""
    identity = _service_identity()
    if identity is None:
        return []
    uid, gids = identity
    found = []
    itself = [("the configuration", str(cfg.path))] if cfg.path else []
    for label, place in itself + _files_named(cfg):
        if place.startswith("~"):
            continue
        path = Path(os.path.normpath(place))
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                continue  # the configuration's check says what is wrong with it
            barred = not _allows(info, uid, gids, 4) or any(
                not _allows(parent.stat(), uid, gids, 1) for parent in path.parents
            )
        except OSError:  # not written yet (a token), or not ours to judge
            continue
        if barred:
            found.append((label, place))
    return found


async def check_key(ctx: Context) -> Result:
    """An API key, an ephemeral token or Vertex AI credentials: where from, never what."""
    cfg = ctx.cfg
    if cfg.live.backend == "vertex":
        return await asyncio.to_thread(_vertex_credentials, cfg)
    try:
        config_mod.find_api_key(cfg.live)
    except UnusableKey as exc:  # there, and not a key: a stray character, not text
        return Result("key", Status.FAIL, str(exc), exc.fix)
    try:
        config_mod.require_credentials(cfg)
    except ConfigError as exc:
        places = ", ".join(
            [
                "the systemd credential api-key",
                "[live] api_key_file",
                *config_mod.KEY_ENV_VARS,
                str(config_mod.INSTALLED_KEY_FILE),
            ]
        )
        named = cfg.live.api_key_file
        if named and not config_mod.installed_key_barred():  # the service starts, and waits
            return Result(
                "key",
                Status.FAIL,
                f"no API key in {places}: [live] api_key_file {named} is missing or empty",
                f"Write the key into {named} (or see why the job that writes tokens there "
                "has not): the service reads it at the next press, no restart needed.",
            )
        advice = str(exc).partition(": ")[2]
        return Result(
            "key", Status.FAIL, f"no API key in {places}", f"{advice[:1].upper()}{advice[1:]}."
        )
    assert cfg.api_key is not None  # require_credentials saw to it
    token = cfg.api_key.reveal().startswith(config_mod.TOKEN_PREFIX)
    kind = "ephemeral token" if token else "API key"
    if exposed := await asyncio.to_thread(_key_file_readers, cfg):
        place, readers = exposed
        owner, mode, whose = (
            ("root:root", "0600", "root's alone")  # the service gets it as a credential
            if place == config_mod.INSTALLED_KEY_FILE
            else (f"root:{SERVICE_USER}", "0640", "root's and the service's alone")
        )
        return Result(
            "key",
            Status.WARN,
            f"{kind} from {cfg.api_key_source} (not shown); but {readers} may read {place}, "
            "and use the key",
            f"sudo chown {owner} {place} && sudo chmod {mode} {place}: {whose} to read.",
            data={"kind": kind, "source": cfg.api_key_source, "readable": str(place)},
        )
    if shadowed := _shadowed_by_the_credential(cfg):
        return Result(
            "key",
            Status.WARN,
            f"{kind} from {cfg.api_key_source} (not shown); but the service takes its "
            f"credential, a copy of {config_mod.INSTALLED_KEY_FILE}, first: it uses "
            f"{shadowed}, not this one",
            f"Empty {config_mod.INSTALLED_KEY_FILE} (sudo truncate -s 0 "
            f"{config_mod.INSTALLED_KEY_FILE}) and restart the service, so that it reads "
            "[live] api_key_file.",
            data={"kind": kind, "source": cfg.api_key_source},
        )
    if variable := await _unseen_by_the_service(cfg):
        return Result(
            "key",
            Status.WARN,
            f"{kind} from {cfg.api_key_source} (not shown); but the service does not see "
            f"this shell's environment: it reads its credential (a copy of "
            f"{config_mod.INSTALLED_KEY_FILE}) or [live] api_key_file",
            f"Put the key in {config_mod.INSTALLED_KEY_FILE} (sudoedit) and restart the "
            f"service; then unset {variable} and run sudo live-appliance doctor, to check "
            "the key the service uses.",
            data={"kind": kind, "source": cfg.api_key_source},
        )
    if token and not (cfg.api_key_source or "").startswith("api_key_file"):
        # A token opens one session, none a minute after it was made: the service must
        # find the next one a job writes, and reads only api_key_file again.
        return Result(
            "key",
            Status.WARN,
            f"{kind} from {cfg.api_key_source} (not shown); a token opens one session "
            "(none a minute after it was made), and there the service sees no newer one "
            "until it restarts (systemd copies its credential at the start, and its "
            "environment stays as it was)",
            f"Have the job that mints tokens write each into a file the service may read, "
            f"name that file with [live] api_key_file, and empty "
            f"{config_mod.INSTALLED_KEY_FILE} (README, The API key).",
            data={"kind": kind, "source": cfg.api_key_source},
        )
    installed = config_mod.INSTALLED_KEY_FILE
    # A file's time against a clock NTP has not set (after a power cut: behind, never
    # ahead) says nothing of which came first: a key written before it looked newer than
    # the service. A token file's age by it is the least it can be: still said.
    clock_set = await asyncio.to_thread(service.clock_synchronized)
    if clock_set and cfg.api_key_source == f"the installer's key file {installed}":
        started, written = await asyncio.gather(
            started_at(), asyncio.to_thread(_written_at, str(installed))
        )
        if started is not None and written is not None and written > started:
            return Result(
                "key",
                Status.WARN,
                f"{kind} from {cfg.api_key_source} (not shown); but the running service "
                "started before it was written, and holds the key of then (systemd copies "
                "the file once, at the start)",
                "sudo systemctl restart live-appliance, for the service to take the key in "
                f"{installed}.",
                data={"kind": kind, "source": cfg.api_key_source},
            )
    if token and cfg.live.api_key_file:
        age_s = await asyncio.to_thread(_age_s, cfg.live.api_key_file)
        if age_s is not None and age_s > config_mod.TOKEN_LIFE_S:
            return Result(
                "key",
                Status.WARN,
                f"{kind} from {cfg.api_key_source} (not shown), written {age_s / 3600:.0f} h "
                f"ago: no token lives more than {config_mod.TOKEN_LIFE_S // 3600} h",
                f"The job that writes tokens into {cfg.live.api_key_file} has stopped: see "
                "why (its host, its timer, its own API key); the box reads the file again "
                "at each press.",
                data={"kind": kind, "source": cfg.api_key_source},
            )
    return Result(
        "key",
        Status.PASS,
        f"{kind} from {cfg.api_key_source} (not shown)",
        data={"kind": kind, "source": cfg.api_key_source},
    )


def _key_file_readers(cfg: Config) -> tuple[Path, str] | None:
    """A key file others may read, and who: any local user ([live] api_key_file, the
    installer's key), or every member of the service's group (the installer's key, which
    the README says is root's alone: the household's other owners are in that group to
    use `ctl`). A token job's umask (0644), or the key written again with `sudo tee`
    after a `rm`, left it so."""
    named = [(config_mod.INSTALLED_KEY_FILE, True)]
    if cfg.live.api_key_file and not cfg.live.api_key_file.startswith("~"):
        named.append((Path(cfg.live.api_key_file), False))
    for place, members_too in named:
        if readable := _others_who_may(place, groups=_service_group() if members_too else ()):
            return place, readable[0]
    return None


def _service_group() -> tuple[int, ...]:
    """The service's own group, on a box the installer made it on."""
    try:
        return (grp.getgrnam(SERVICE_USER).gr_gid,)
    except KeyError:
        return ()


def _age_s(name: str) -> float | None:
    """How long ago the file `name` was last written; None if it cannot be told."""
    written = _written_at(name)
    return None if written is None else time.time() - written


def _written_at(name: str) -> float | None:
    """When the file `name` was last written (its mtime); None if it cannot be told."""
    try:
        return Path(name).expanduser().stat().st_mtime
    except (OSError, RuntimeError):  # RuntimeError: ~someone who has no home here
        return None


def _shadowed_by_the_credential(cfg: Config) -> str | None:
    """Outside the service (`sudo live-appliance doctor`) [live] api_key_file is read before
    the installer's key file; the service reads that file's copy, its credential, first.
    What the service uses instead of the key found here, when the two differ."""
    if os.environ.get("CREDENTIALS_DIRECTORY") or cfg.path != config_mod.DEFAULT_PATH:
        return None
    if not cfg.live.api_key_file or not (cfg.api_key_source or "").startswith("api_key_file"):
        return None
    try:
        installed = config_mod.read_text(
            config_mod.INSTALLED_KEY_FILE,
            config_mod.KEY_FILE_LIMIT,
            str(config_mod.INSTALLED_KEY_FILE),
        ).strip()
    except (OSError, ConfigError):
        return None
    if not installed or cfg.api_key is None or installed == cfg.api_key.reveal():
        return None
    return f"the key in {config_mod.INSTALLED_KEY_FILE}"


async def _unseen_by_the_service(cfg: Config) -> str | None:
    """The variable of this shell's environment the key was found in, where the service's
    own configuration is checked and its unit does not set that variable too: the doctor
    passed a key the service never saw (its advice had said to export it)."""
    if os.environ.get("CREDENTIALS_DIRECTORY") or cfg.path != config_mod.DEFAULT_PATH:
        return None
    variable = next(
        (
            name
            for name in config_mod.KEY_ENV_VARS
            if cfg.api_key_source == f"environment variable {name}"
        ),
        None,
    )
    if variable is None:
        return None
    unit = await service.systemctl_show(["Environment"])
    given = shlex.split(unit.get("Environment", "")) if isinstance(unit, dict) else []
    return None if any(a.partition("=")[0] == variable for a in given) else variable


def _vertex_credentials(cfg: Config) -> Result:
    """Application default credentials, as the SDK will look for them (may ask a server)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    where = f"Vertex AI, project {cfg.live.project}, location {cfg.live.location}"
    # The client takes project and location only: a key found beside them is not used.
    unused = (
        f"; the API key from {cfg.api_key_source} is not used with Vertex AI"
        if cfg.api_key is not None
        else ""
    )
    try:
        credentials, _ = google.auth.default()
    except DefaultCredentialsError as exc:
        return Result(
            "key",
            Status.FAIL,
            f"{where}: no application default credentials ({str(exc).splitlines()[0]}){unused}",
            "Set GOOGLE_APPLICATION_CREDENTIALS to a service account key file for the service, "
            "or run gcloud auth application-default login.",
        )
    except OSError as exc:  # there, not this user's to read (root's and the service's: 0640)
        return Result(
            "key",
            Status.FAIL,
            f"{where}: cannot read {exc.filename}: {exc.strerror}{unused}",
            "The credentials file is root's and the service's: run the doctor with sudo, "
            "or check its owner and mode (sudo ls -l on it; the README's is root, group "
            "live-appliance, mode 0640).",
        )
    kind = type(credentials).__name__
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named and (readable := _others_who_may(Path(named))):
        return Result(
            "key",
            Status.WARN,
            f"{where}: application default credentials ({kind}){unused}; but {readable[0]} "
            f"may read {named}, and use them",
            f"sudo chown root:{SERVICE_USER} {named} && sudo chmod 0640 {named}: root's and "
            "the service's alone to read.",
        )
    return Result(
        "key", Status.PASS, f"{where}: application default credentials ({kind}){unused}"
    )
