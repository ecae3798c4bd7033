"""scripts/hil: the HIL tests in a VM (amd64 or arm64), or on this Pi (--here)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hil.host import Failed, fail, say

ROOT = Path(__file__).resolve().parents[1]
#: Host tools a VM run needs, and the Debian package of each.
VM_TOOLS = {
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dpkg-scanpackages": "dpkg-dev",
    "qemu-img": "qemu-utils",
    "unshare": "util-linux",
}
QEMU_PACKAGES = {"amd64": "qemu-system-x86", "arm64": "qemu-system-arm qemu-user-static"}



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/hil",
        description="Hardware in the loop: install the appliance as an owner does and test "
        "it under real systemd, a real kernel and the kernel's loopback sound card "
        "(snd-aloop). By default in a Debian VM built here (cached); --here on a "
        "Raspberry Pi.",
        epilog="Examples: scripts/hil; scripts/hil --arch arm64; sudo scripts/hil --here; "
        "scripts/hil -- -k turn",
    )
    parser.add_argument("--arch", choices=("amd64", "arm64"), default="amd64",
                        help="the VM's architecture (arm64: the Pi's, emulated, slower)")
    parser.add_argument("--release", choices=("bookworm", "trixie"), default="bookworm",
                        help="the VM's Debian release: bookworm (12, Python 3.11, default) or "
                        "trixie (13, Python 3.13), what Raspberry Pi OS is built on")
    parser.add_argument("--here", action="store_true",
                        help="run the tests on this machine (a Raspberry Pi with snd-aloop "
                        "loaded and the appliance installed), not in a VM")
    parser.add_argument("--button-jumper", type=int, metavar="PIN",
                        help="with --here: press the button through a wire from this spare "
                        "GPIO output (BCM) to the button's pin, instead of 'ctl press'")
    parser.add_argument("--rebuild", action="store_true", help="build the image even if cached")
    parser.add_argument("--build-only", action="store_true", help="build (or find) the image, "
                        "run nothing")
    parser.add_argument("--check", action="store_true",
                        help="say in one line whether a VM run can work here (exit 0 if so, 3 "
                        "if not), and do nothing else")
    parser.add_argument("--kvm", choices=("auto", "yes", "no"), default="auto",
                        help="auto: KVM only if a short boot probe works (default)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds the whole run may take, a cold image's build included: "
                        "the VM gets what is left (default 4200; arm64 14400)")
    parser.add_argument("--results", type=Path, default=ROOT / "hil-results",
                        help="where the reports go (default: hil-results/)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest in the VM")
    return parser.parse_args(argv)


def missing_packages(arch: str) -> list[str]:
    """The Debian packages of the host tools a VM run needs that are not installed."""
    qemu = "qemu-system-x86_64" if arch == "amd64" else "qemu-system-aarch64"
    tools = {**VM_TOOLS, qemu: QEMU_PACKAGES[arch]}
    missing = {pkg for tool, pkg in tools.items() if shutil.which(tool) is None}
    if arch == "arm64":
        if not Path("/usr/libexec/qemu-binfmt/aarch64-binfmt-P").exists():
            missing.add("qemu-user-static")
        if shutil.which("update-binfmts") is None:
            missing.add("binfmt-support")
    return sorted(" ".join(missing).split())


def cannot_run_vm(arch: str) -> str | None:
    """Why a VM run cannot work on this machine (after installing its host tools), or None."""
    if os.geteuid() != 0:
        return "it needs root (debootstrap, the image's file ownership)"
    if shutil.which("apt-get") is None:
        return "no apt: the image's packages come from the mirror in this machine's apt sources"
    return None


def install_host_tools(arch: str) -> None:
    """apt-get install the host tools a VM run needs, if any is missing (as scripts/setup
    does for the tests)."""
    missing = missing_packages(arch)
    if not missing:
        return
    say(f"host: installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def vm(args: argparse.Namespace) -> int:
    from hil import image, vm

    reason = cannot_run_vm(args.arch)
    if reason is not None:
        fail(f"cannot run the VM: {reason}", 3)
    install_host_tools(args.arch)
    started = time.monotonic()
    img = image.image_for(args.arch, args.release, rebuild=args.rebuild)
    say(f"image: ready in {time.monotonic() - started:.0f} s")
    if args.build_only:
        return 0
    limit = args.timeout or (14400 if args.arch == "arm64" else 4200)
    timeout = limit - (time.monotonic() - started)
    if timeout < 60:
        fail(f"no time left for the VM: the image took {limit - timeout:.0f} s of {limit:.0f}")
    results = args.results / (args.arch if args.release == "bookworm"
                               else f"{args.arch}-{args.release}")
    status = vm.run_in_vm(img, results, pytest_args=args.pytest_args, timeout_s=timeout,
                          use_kvm=args.kvm)
    say(f"{'passed' if status == 0 else 'FAILED'}: reports in {results}")
    return status


def here(args: argparse.Namespace) -> int:
    """The same tests against this machine's installed service (a Raspberry Pi)."""
    if os.geteuid() != 0:
        fail("--here needs root: sudo scripts/hil --here", 2)
    venv = Path("/var/cache/live-appliance-hil/here-venv")
    if not (venv / "bin" / "pytest").exists():
        say(f"here: a venv for the tests in {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        from hil.image import TEST_REQUIREMENTS, requirements

        lock = ROOT / "requirements" / f"pi-py{sys.version_info[0]}{sys.version_info[1]}.txt"
        wanted = requirements(lock) + requirements(TEST_REQUIREMENTS)
        listing = venv / "requirements.txt"
        listing.write_text("\n".join(wanted) + "\n")
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps",
                        "--require-hashes", "-r", str(listing)], check=True)
    results = args.results / "here"
    results.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LIVE_APPLIANCE_HIL": "here", "HIL_RESULTS": str(results)}
    if args.button_jumper is not None:
        env["HIL_BUTTON_JUMPER"] = str(args.button_jumper)
    argv = [str(venv / "bin" / "python"), "-m", "pytest", "-c", "tests/hil/pytest.ini",
            "--rootdir", "tests/hil", "-p", "no:cacheprovider", "-m", "not after_reboot",
            f"--junitxml={results / 'junit.xml'}", *args.pytest_args, "tests/hil"]
    return subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode


def stop_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM (a CI job's time limit, `timeout`) ends the run as Ctrl-C does: the VM is
    killed and the run's files removed on the way out."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    args = parse_args(argv)
    if args.check:
        reason = None if args.here else cannot_run_vm(args.arch)
        if reason is not None:
            print(f"hil: cannot run the {args.arch} VM here: {reason}")
            return 3
        return 0
    try:
        return here(args) if args.here else vm(args)
    except Failed as exc:
        fail(str(exc))
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
