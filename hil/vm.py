"""One run of the HIL tests in a VM: a disk for this run, qemu, the results back.

The cached image is never written: the VM boots a copy-on-write overlay of it.
The checkout (without .git and .venv) and the run script go in on a second small
disk, made without mounting (mkfs.ext4 -d); the tests' output comes back live over
a virtio console, and their reports on that same disk (read with debugfs after the
VM has powered off). The tests may reboot the VM once: the run script notes the
phase on the run disk and goes on after the boot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hil.host import Failed, run, say
from hil.image import GUEST, ROOT, Image

#: What of the checkout goes into the VM.
EXCLUDE = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "demo-out",
           "hil-results"}


#: How long the KVM probe waits for the guest kernel's first line: under KVM it comes
#: in well under a second, and a guest that hangs (as here) prints nothing at all.
KVM_SILENCE_S = 10


def kvm_works(image: Image, log: Path) -> bool:
    """KVM only where a short boot probe reaches user space: under KVM a guest kernel
    hung here once, so plain emulation is what to rely on. The probe's kernel is not
    quiet, so a hung guest is known by its silence, not by a whole boot's wait."""
    if image.arch.debian != "amd64" or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        overlay = Path(tmp) / "probe.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image.disk,
             overlay], log=log)
        console = Path(tmp) / "console.log"
        argv = qemu_argv(image, overlay, None, console, None, kvm=True,
                         append="systemd.unit=emergency.target panic=-1 loglevel=7")
        with log.open("ab") as errors:  # why KVM was refused, if qemu says
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors)
            started = time.monotonic()
            ok = False
            while time.monotonic() < started + 45 and proc.poll() is None:
                text = console.read_text(errors="replace") if console.exists() else ""
                if "Reached target" in text or "emergency" in text.lower():
                    ok = True
                    break
                if not text and time.monotonic() > started + KVM_SILENCE_S:
                    break
                time.sleep(0.5)
            proc.kill()
            proc.wait()
        return ok


#: The guest kernel's options for a quick emulated VM (measured on a cached image, load
#: 2-3: boot to multi-user 41 s instead of 54-67 s, a venv made in 79 s instead of 145):
#: - tsc=reliable: under TCG the kernel finds the TSCs "unsynchronized" and falls back to
#:   the HPET, which makes every clock read a system call and an emulated device access;
#:   TCG's TSCs all come from one virtual clock, so they are in step;
#: - mitigations=off: no retpolines or buffer clearing on every system call and context
#:   switch: nothing in this throw-away VM is an attacker's;
#: - quiet: every kernel message is a byte-by-byte emulated serial port write.
FAST_KERNEL = "tsc=reliable mitigations=off quiet"


def qemu_argv(
    image: Image, overlay: Path, run_disk: Path | None, console: Path, output: Path | None,
    *, kvm: bool, memory_mb: int = 3072, append: str = "",
) -> list[str]:
    arch = image.arch
    kernel_args = f"root=/dev/vda rw console={arch.console} {FAST_KERNEL} {append}".strip()
    argv = [arch.qemu, *arch.machine, "-smp", "2", "-m", str(memory_mb),
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", kernel_args,
            # The overlay is thrown away after the run: the guest's fsyncs need not
            # reach the host's disk.
            "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe",
            "-nic", "none", "-display", "none", "-monitor", "none",
            "-serial", f"file:{console}"]
    if kvm:
        argv[1:1] = ["-accel", "kvm"]
        argv = [a if a != "max" else "host" for a in argv]
    else:
        # One host thread per virtual CPU (MTTCG), not both CPUs on one thread.
        argv[1:1] = ["-accel", "tcg,thread=multi"]
    if run_disk is not None:
        argv += ["-drive", f"file={run_disk},if=virtio,format=raw"]
    if output is not None:
        argv += ["-device", "virtio-serial-pci", "-chardev", f"file,id=hil,path={output}",
                 "-device", "virtconsole,chardev=hil"]
    return argv


def copy_checkout(dest: Path) -> None:
    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if n in EXCLUDE}

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)


def run_in_vm(image: Image, results: Path, *, pytest_args: list[str], timeout_s: float,
              use_kvm: str = "auto") -> int:
    """Boot the image with this checkout, run the HIL tests, return their exit status."""
    results.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hil-run-"))
    log = results / "host.log"
    try:
        overlay = work / "overlay.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image.disk,
             overlay], log=log)
        tree = work / "run"
        (tree / "results").mkdir(parents=True)
        copy_checkout(tree / "src")
        shutil.copy(GUEST / "run.sh", tree / "run.sh")
        (tree / "pytest-args").write_text("".join(f"{arg}\n" for arg in pytest_args))
        (tree / "phase").write_text("1\n")
        run_disk = work / "run.img"
        run(["mkfs.ext4", "-q", "-F", "-L", "hil-run", "-d", tree, run_disk, "1024M"], log=log)

        kvm = use_kvm == "yes" or (use_kvm == "auto" and kvm_works(image, log))
        say(f"vm: booting {image.arch.debian} ({'KVM' if kvm else 'plain emulation, TCG'})")
        console = results / "console.log"
        output = work / "output.log"
        output.touch()
        argv = qemu_argv(image, overlay, run_disk, console, output, kvm=kvm, append="hil.run")
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        shown = 0
        timed_out = False
        try:
            while True:
                shown = stream(output, shown)
                if proc.poll() is not None:
                    break
                if time.monotonic() - started > timeout_s:
                    timed_out = True
                    break
                time.sleep(0.5)
        finally:
            # Also when this process is stopped (SIGTERM from CI's limit, Ctrl-C): no VM
            # left running behind it.
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stream(output, shown)
        if proc.returncode not in (0, None) and not timed_out and proc.stderr is not None:
            say(f"vm: qemu exited with {proc.returncode}: {proc.stderr.read().strip()[-500:]}")
        say(f"vm: off after {time.monotonic() - started:.0f} s")
        fetch_results(run_disk, results, log)
        if timed_out:
            raise Failed(f"the VM did not finish within {timeout_s:.0f} s "
                         f"(its console: {console})")
        status = results / "rc"
        if not status.exists():
            raise Failed(f"the tests left no exit status (the VM's console: {console})")
        return int(status.read_text().strip() or 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def stream(path: Path, shown: int) -> int:
    """Print what the VM wrote since last time; return how much has been shown."""
    with path.open("rb") as f:
        f.seek(shown)
        data = f.read()
    if data:
        os.write(1, data.replace(b"\r\n", b"\n"))
    return shown + len(data)


def fetch_results(run_disk: Path, results: Path, log: Path) -> None:
    """Copy /results from the run disk, without mounting it."""
    with tempfile.TemporaryDirectory() as tmp:
        run(["debugfs", "-R", f"rdump /results {tmp}", run_disk], log=log, check=False)
        got = Path(tmp) / "results"
        if got.exists():
            for item in got.iterdir():
                target = results / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                shutil.move(str(item), target)
