"""Hardware in the loop: the installed appliance under real systemd, a real kernel and
the kernel's loopback sound card (snd-aloop).

These tests run as root on the machine under test: a Debian 12 VM that scripts/hil
builds and boots (LIVE_APPLIANCE_HIL=vm), or a Raspberry Pi with the appliance
installed (LIVE_APPLIANCE_HIL=here, `sudo scripts/hil --here`). Anywhere else, e.g.
in scripts/test, they are not even collected.

They run in file order, as one story an owner lives through: install, a turn, what
systemd does, the SSH paths of the README, a sound card that goes away, crashes,
a reboot, the update and the uninstall. They change the machine: never run them on
a box that matters without --here's care (it restores what it changed).
"""

from __future__ import annotations

import os

MODE = os.environ.get("LIVE_APPLIANCE_HIL")

if MODE not in ("vm", "here"):
    collect_ignore_glob = ["test_*.py"]
else:
    from hilrig import *  # noqa: F403  (the fixtures)

    def pytest_runtest_logreport(report):  # type: ignore[no-untyped-def]
        """Say why a test failed as soon as it fails: a VM run is long, and its output
        is read as it comes."""
        if report.failed:
            print(f"\n---- {report.nodeid} ({report.when}) ----\n{report.longreprtext}\n",
                  flush=True)
