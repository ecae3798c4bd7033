"""The Debian disk image the VM boots, built with debootstrap and cached by its inputs.

Debian 12 (bookworm, Python 3.11: what Raspberry Pi OS Bookworm is built on) by default;
Debian 13 (trixie, Python 3.13: Raspberry Pi OS Trixie's) with ``--release trixie``.

Everything the VM needs goes in at build time, since it has no network: systemd as
PID 1 and Debian's kernel, snd-aloop loaded at boot, the Debian packages the Pi
installer asks for (in a local apt repository, so the installer's own apt step runs
for real), a wheelhouse with every file of the installer's lock (so its pip steps
run for real, hashes checked), and a venv for the tests and the local Live server.
The project's code is not in the image: each run brings the checkout on a disk of
its own, so a change to the code never rebuilds the image.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hil import mirror
from hil.arch import ARCHES, Arch, wheel_platforms
from hil.host import Failed, run, say

ROOT = Path(__file__).resolve().parents[1]
GUEST = Path(__file__).resolve().parent / "guest"
CACHE = Path(os.environ.get("LIVE_APPLIANCE_HIL_CACHE", "/var/cache/live-appliance-hil"))
#: Raised when the way the image is made changes in a way its inputs do not show.
RECIPE = "5"


@dataclass(frozen=True)
class Release:
    codename: str
    python: str  # the system Python's version, as pip takes it: 3.11
    glibc_minor: int  # its glibc is 2.N: the newest manylinux tag it runs

    @property
    def lock(self) -> Path:
        """The installer's lock for this release's Python."""
        return ROOT / "requirements" / f"pi-py{self.python.replace('.', '')}.txt"


RELEASES = {
    "bookworm": Release("bookworm", "3.11", 36),
    "trixie": Release("trixie", "3.13", 41),
}

#: The base system: systemd as PID 1, what the tests and an owner's SSH session use,
#: and what Raspberry Pi OS Lite has already (python3-pip). The kernel comes after it
#: (image-setup.sh), once its initrd is set to be small. The installer's other packages
#: are not here: they go into the local apt repository, for the installer to install.
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "udev", "kmod", "procps", "sudo", "util-linux",
    "python3", "python3-venv", "python3-pip", "alsa-utils", "jq", "e2fsprogs",
    "ca-certificates", "initramfs-tools", "zstd",
)

#: What the tests and the local Live server need beside the appliance's own packages.
TEST_REQUIREMENTS = ROOT / "hil" / "requirements-tests.txt"
INSTALLER = ROOT / "scripts" / "install-pi.sh"


@dataclass(frozen=True)
class Image:
    dir: Path
    arch: Arch
    release: Release

    @property
    def disk(self) -> Path:
        return self.dir / "disk.img"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    def ready(self) -> bool:
        return (self.dir / "ready").exists()


def installer_packages() -> list[str]:
    """The Debian packages scripts/install-pi.sh installs with --no-camera --no-gpio."""
    result = run(["bash", "-c", f'source "{INSTALLER}" && WITH_CAMERA=0 WITH_GPIO=0 apt_packages'])
    return result.stdout.split()


def inputs(arch: Arch, release: Release) -> dict[str, str]:
    """What the image is made from; its hash names the cached image."""
    files = [release.lock, TEST_REQUIREMENTS, Path(__file__), ROOT / "hil" / "arch.py",
             *sorted(GUEST.glob("image-*"))]
    parts = {
        "recipe": RECIPE,
        "arch": arch.debian,
        "codename": release.codename,
        "mirror": mirror.main_mirror(release.codename),
        "base": " ".join(BASE_PACKAGES),
        "installer-packages": " ".join(installer_packages()),
    }
    for path in files:
        parts[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return parts


def key(arch: Arch, release: Release) -> str:
    text = "\n".join(f"{k}={v}" for k, v in sorted(inputs(arch, release).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_for(arch_name: str, release_name: str = "bookworm", rebuild: bool = False) -> Image:
    """The cached image for these inputs, built first when there is none."""
    arch, release = ARCHES[arch_name], RELEASES[release_name]
    name = f"{release.codename}-{arch.debian}"
    image = Image(CACHE / f"{name}-{key(arch, release)}", arch, release)
    if image.ready() and not rebuild:
        say(f"image: cached {image.dir}")
        return image
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob(f"{name}-*"):
        if old != image.dir:  # one image per release and architecture: the newest inputs win
            remove_tree(old)
    remove_tree(image.dir)
    image.dir.mkdir(parents=True)
    Builder(image).build()
    (image.dir / "ready").write_text(
        "\n".join(f"{k}={v}" for k, v in inputs(arch, release).items()))
    return image


class Builder:
    def __init__(self, image: Image) -> None:
        self.image = image
        self.arch = image.arch
        self.release = image.release
        self.log = image.dir / "build.log"
        self.work = Path(tempfile.mkdtemp(prefix="build-", dir=image.dir))
        self.root = self.work / "root"

    def build(self) -> None:
        say(f"image: building Debian {self.release.codename} {self.arch.debian} "
            f"(log: {self.log})")
        try:
            if self.arch.foreign:
                self.enable_binfmt()
            self.debootstrap()
            self.wheelhouse()
            self.chroot_setup()
            self.make_disk()
        finally:
            remove_tree(self.work)

    def enable_binfmt(self) -> None:
        """qemu-user-static runs the arm64 programs of debootstrap's second stage."""
        binfmt = Path("/proc/sys/fs/binfmt_misc")
        if not (binfmt / "register").exists():
            run(["mount", "-t", "binfmt_misc", "binfmt_misc", binfmt], log=self.log)
        if not (binfmt / "qemu-aarch64").exists():
            run(["update-binfmts", "--enable", "qemu-aarch64"], log=self.log)

    def debootstrap(self) -> None:
        mirror_uri = mirror.main_mirror(self.release.codename)
        say(f"image: debootstrap from the host's apt mirror ({len(BASE_PACKAGES)} packages)")
        # In a mount namespace of its own, as chroot() runs: the /proc and /dev it mounts in
        # the tree vanish with it, even when the build is killed half-way.
        run(["unshare", "--mount", "--propagation", "private",
             "debootstrap", "--variant=minbase", f"--arch={self.arch.debian}",
             "--include=" + ",".join(BASE_PACKAGES),
             self.release.codename, self.root, mirror_uri], log=self.log)

    def wheelhouse(self) -> None:
        """Every file of the lock and the test requirements for the image's platform,
        wheels only (the installer compiles nothing), hashes checked."""
        say("image: wheelhouse (the lock's files for this platform, hashes checked)")
        house = self.root / "srv" / "hil" / "wheelhouse"
        house.mkdir(parents=True)
        platforms = wheel_platforms(self.arch, self.release.glibc_minor)
        self.download(self.venv_requirements(), house, "--only-binary=:all:",
                      "--implementation", "cp", "--python-version", self.release.python,
                      *(arg for tag in platforms for arg in ("--platform", tag)))

    def venv_requirements(self) -> list[str]:
        """The lock and what the tests and the local Live server need beside it."""
        return requirements(self.release.lock) + requirements(TEST_REQUIREMENTS)

    def download(self, wanted: list[str], house: Path, *options: str) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
            listing.write("\n".join(wanted) + "\n")
            listing.flush()
            run(["python3", "-m", "pip", "download", "--no-deps", "--require-hashes",
                 "--dest", house, "--requirement", listing.name, *options], log=self.log)

    def chroot_setup(self) -> None:
        say("image: packages for the installer, the test venv, systemd units")
        apt_dir = self.root / "srv" / "hil" / "apt"
        apt_dir.mkdir(parents=True)
        (self.root / "etc" / "apt" / "sources.list").write_text(
            mirror.sources_list(self.release.codename))
        shutil.copy(GUEST / "image-setup.sh", self.root / "srv" / "hil" / "image-setup.sh")
        shutil.copy(GUEST / "image-hil-run", self.root / "usr" / "local" / "sbin" / "hil-run")
        shutil.copy(GUEST / "image-hil-run.service",
                    self.root / "etc" / "systemd" / "system" / "hil-run.service")
        (self.root / "srv" / "hil" / "hil-venv.txt").write_text(
            "\n".join(self.venv_requirements()) + "\n")
        self.chroot(["bash", "/srv/hil/image-setup.sh", *installer_packages()],
                    KERNEL=self.arch.kernel_package)
        # The installer's packages, downloaded by apt in the chroot, become a local
        # repository: the VM's only apt source.
        run(["sh", "-c", 'cd "$1" && dpkg-scanpackages --multiversion . > Packages', "scan",
             apt_dir], log=self.log)
        (self.root / "etc" / "apt" / "sources.list").write_text(
            "# No network in the VM: only what the image was built with.\n"
            "deb [trusted=yes] file:/srv/hil/apt ./\n"
        )
        self.chroot(["apt-get", "update", "-qq"])
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (self.root / cache).glob("*.deb"):
                path.unlink()

    def chroot(self, argv: list[str], **extra_env: str) -> None:
        """Run a command in the image's tree, with /proc, /sys and /dev, in a private
        mount namespace (the mounts vanish with it)."""
        script = (
            'set -e; root="$1"; shift; '
            'mount -t proc proc "$root/proc"; mount -t sysfs sys "$root/sys"; '
            'mount --rbind /dev "$root/dev"; exec chroot "$root" "$@"'
        )
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
               "DEBIAN_FRONTEND": "noninteractive", **extra_env}
        run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "chroot",
             self.root, *argv], log=self.log, env=env)

    def make_disk(self) -> None:
        """The kernel and initrd beside the image, the tree as an ext4 image (no mount)."""
        boot = self.root / "boot"
        kernels = sorted(boot.glob("vmlinuz-*"))
        initrds = sorted(boot.glob("initrd.img-*"))
        if not kernels or not initrds:
            raise Failed(f"no kernel or initrd in the image's /boot: {list(boot.iterdir())}")
        shutil.copy(kernels[-1], self.image.kernel)
        shutil.copy(initrds[-1], self.image.initrd)
        used = int(run(["du", "-sm", self.root]).stdout.split()[0])
        size = used + 3072  # room for the installer's packages, the venv, the journal
        say(f"image: ext4 image of {used} MB of files ({size} MB, sparse)")
        run(["mkfs.ext4", "-q", "-F", "-L", "hil-root", "-d", self.root, self.image.disk,
             f"{size}M"], log=self.log)


def requirements(lock: Path) -> list[str]:
    """A requirements file with hashes, one entry (a name, a version, its hashes) each."""
    text = re.sub(r"\\\n\s*", " ", lock.read_text())
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
            and "--hash=" in line]


def clean() -> None:
    """Remove every cached image."""
    remove_tree(CACHE)


def remove_tree(path: Path) -> None:
    """rmtree, after unmounting what a build killed before this code kept its mounts
    private left mounted in the tree (rmtree would stop at them and leave the tree)."""
    inside = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(inside)), key=len, reverse=True):
        run(["umount", "--lazy", point])
    shutil.rmtree(path, ignore_errors=True)

