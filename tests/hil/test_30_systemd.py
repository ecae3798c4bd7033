"""3. systemd for real: the credential, a missing key, the watchdog, SIGTERM, the
exposure rating, and what the hardened service can and cannot touch."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from hilrig import (
    KEY_FILE,
    UNIT,
    active,
    api_key,
    cursor,
    daemon_entries,
    journal,
    main_pid,
    restart_service,
    restarts_counted_from_now,
    save,
    sh,
    show,
    span_s,
    wait_active,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("installed")


def test_the_key_comes_as_a_credential_and_nowhere_else() -> None:
    pid = wait_active()
    credential = Path(f"/run/credentials/{UNIT}/api-key")
    key = api_key()
    assert credential.read_text().strip() == key
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert key.encode() not in environ
    assert key.encode() not in cmdline
    assert b"CREDENTIALS_DIRECTORY=" in environ
    everything = sh(["journalctl", "-b", "-o", "json", "--no-pager"]).stdout
    assert key not in everything
    assert key not in show("Environment")


def test_without_a_key_file_it_still_starts_and_says_what_is_missing() -> None:
    """The unit starts (the credential is empty, not missing), the daemon names the file
    the key belongs in and stops as on any configuration error: no restart loop."""
    hidden = KEY_FILE.with_name("api-key.hidden")
    KEY_FILE.rename(hidden)
    try:
        mark = cursor()
        restarts = restarts_counted_from_now()
        sh(["systemctl", "restart", UNIT], check=False, timeout=300)
        wait_until(lambda: show("ActiveState") == "failed", 240, "stopped as failed")
        entries = daemon_entries(mark)
        assert any(str(KEY_FILE) in e.get("MESSAGE", "") for e in entries), \
            [e.get("MESSAGE") for e in entries]
        assert (show("Result"), show("ExecMainStatus")) == ("exit-code", "2")
        assert int(show("NRestarts")) == restarts
    finally:
        hidden.rename(KEY_FILE)
        sh(["systemctl", "reset-failed", UNIT], check=False)
        restart_service()


def test_a_stopped_daemon_is_killed_and_restarted_by_the_watchdog() -> None:
    pid = wait_active()
    restarts = int(show("NRestarts"))
    watchdog_s = span_s("WatchdogUSec")
    restart_s = span_s("RestartUSec")
    # The unit's watchdog is the daemon's: systemd told it the timeout it must ping within.
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"WATCHDOG_USEC={round(watchdog_s * 1_000_000)}".encode() in environ, "no watchdog"
    mark = cursor()
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    wait_until(lambda: active() and main_pid() not in (0, pid),
               watchdog_s + restart_s + 120, "a new daemon after the watchdog fired")
    took = time.monotonic() - started
    save("watchdog.txt", f"SIGSTOP to a new running daemon: {took:.1f} s "
         f"(WatchdogSec {watchdog_s:.0f} s, RestartSec {restart_s:.0f} s)\n")
    assert int(show("NRestarts")) == restarts + 1
    entries = journal(mark)
    assert any("watchdog" in e.get("MESSAGE", "").lower() and e.get("_PID") == "1"
               for e in entries), "systemd did not say the watchdog fired"


def test_sigterm_stops_it_cleanly() -> None:
    pid = wait_active()
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: show("ActiveState") in ("inactive", "failed", "activating"), 60,
               "the service stopped")
    took = time.monotonic() - started
    save("sigterm.txt", f"SIGTERM to stopped: {took:.2f} s\n")
    # A clean exit of its own (status 0), not systemd's SIGKILL after TimeoutStopSec.
    assert show("ExecMainCode") == "1", "killed, not exited"
    assert show("ExecMainStatus") == "0"
    assert took < span_s("TimeoutStopUSec")
    sh(["systemctl", "start", UNIT])
    wait_active()


def test_systemd_rates_it_hardened() -> None:
    out = sh(["systemd-analyze", "security", "--no-pager", UNIT], check=False).stdout
    save("security.txt", out)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out[-500:]
    assert float(match.group(1)) <= 2.0


def probe(pid: int, script: str, as_service_user: bool = True) -> Any:
    """Run ``script`` inside the running service's cgroup and mount namespace (so its
    device policy and read-only file system apply), as its user and groups or as root."""
    cgroup = Path(f"/proc/{pid}/cgroup").read_text().strip().split("::")[-1]
    identity = ""
    if as_service_user:
        # The daemon's own groups, as systemd gave them (SupplementaryGroups= adds audio
        # and the rest; the user's entry in /etc/group need not name them).
        status = Path(f"/proc/{pid}/status").read_text()
        groups = re.search(r"^Groups:\s*(.*)$", status, re.MULTILINE)
        assert groups and groups.group(1).split(), status
        identity = (f"setpriv --reuid=live-appliance --regid=live-appliance "
                    f"--groups={','.join(groups.group(1).split())} --inh-caps=-all --")
    command = (f'echo $$ > /sys/fs/cgroup{cgroup}/cgroup.procs && exec nsenter -t {pid} -m '
               f'-- {identity} sh -c "$1"')
    return sh(["sh", "-c", command, "probe", script], check=False)


def test_the_hardened_service_opens_what_it_needs_and_writes_nowhere_else() -> None:
    pid = wait_active()
    fine = probe(pid, ": > /run/live-appliance/hil-probe"
                 " && : > /var/lib/live-appliance/hil-probe"
                 " && rm /run/live-appliance/hil-probe /var/lib/live-appliance/hil-probe"
                 ' && : < "$(ls /dev/snd/controlC* | head -1)"')
    assert fine.returncode == 0, fine.stderr
    # Even root, inside the service's mount namespace, writes nowhere else.
    for target in ("/etc/hil-probe", "/opt/live-appliance/hil-probe", "/usr/hil-probe",
                   "/var/hil-probe", "/home/owner/hil-probe", "/root/hil-probe"):
        refused = probe(pid, f": > {target}", as_service_user=False)
        assert refused.returncode != 0, f"the service could write {target}"
        assert not Path(target).exists()
    # The device policy holds even for root inside the service's cgroup: no disk.
    disk = probe(pid, "head -c 1 /dev/vda > /dev/null", as_service_user=False)
    if Path("/dev/vda").exists():
        assert disk.returncode != 0, "the service's cgroup may read the disk"
    save("probe.txt", f"{fine}\n{disk}\n")
