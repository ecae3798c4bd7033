#!/bin/bash
# Runs once in the image's tree while the image is built (chroot, the host's network).
# Arguments: the Debian packages scripts/install-pi.sh installs in the VM; the
# environment's KERNEL: the kernel's package (installed here, not by debootstrap, so
# that its initrd is made as below).
set -euo pipefail
# dpkg in an emulated VM is slow: as Debian's container images do, no fsync per file
# and no manual pages or translations (the man-db trigger alone takes minutes).
printf 'force-unsafe-io\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/locale/*\npath-exclude=/usr/share/doc/*\n' \
  >/etc/dpkg/dpkg.cfg.d/hil-quick
echo 'man-db man-db/auto-update boolean false' | debconf-set-selections
rm -f /var/lib/man-db/auto-update

# The initrd holds only what this VM boots from (a virtio disk with ext4): with Debian's
# MODULES=most each update-initramfs of the build copied hundreds of modules, 14 minutes
# a time under arm64 emulation, and the boot unpacked a 30 MB initrd.
printf 'MODULES=list\n' >/etc/initramfs-tools/conf.d/hil.conf
printf 'virtio_pci\nvirtio_blk\next4\n' >>/etc/initramfs-tools/modules

apt-get update -qq
apt-get upgrade -y -qq
apt-get install -y -qq --no-install-recommends "${KERNEL:?}"
# The installer's packages and what they pull in are downloaded only: they become the
# VM's local apt repository, and the installer's own apt step installs them.
apt-get install -y -qq --download-only --no-install-recommends "$@"
mv /var/cache/apt/archives/*.deb /srv/hil/apt/

# The machine: its name, its disk, the kernel's loopback sound card at boot.
echo hil >/etc/hostname
printf '127.0.1.1 hil\n' >>/etc/hosts
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >/etc/fstab
echo snd-aloop >/etc/modules-load.d/hil-snd-aloop.conf
passwd -d root >/dev/null
# The owner: the user Raspberry Pi Imager makes, who runs the installer with sudo.
useradd --create-home --shell /bin/bash --groups sudo owner
echo 'owner ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/owner
chmod 0440 /etc/sudoers.d/owner
# No network in the VM: the wheelhouse stands in for PyPI, as a mirror would.
printf '[global]\nno-index = true\nfind-links = /srv/hil/wheelhouse\n' >/etc/pip.conf

# The venv of the tests and the local Live server.
python3 -m venv /opt/hil/venv
/opt/hil/venv/bin/pip install -q --no-deps --require-hashes -r /srv/hil/hil-venv.txt

# Nothing that runs on a timer of its own while the tests run.
systemctl mask -q apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
  man-db.timer dpkg-db-backup.timer systemd-timesyncd.service
# Nor at boot what the tests have no use for: e2scrub_reap (LVM snapshots of e2scrub)
# took 8 s of an emulated boot.
systemctl mask -q e2scrub_reap.service
# No login prompt on the virtio console the tests' output comes back on: its getty
# hangs the console up as it starts (Trixie's came after the run script had opened it),
# and the host saw nothing more of the run ("tee: 'standard output': Input/output error"
# in the VM's journal). The serial console keeps its own.
systemctl mask -q serial-getty@hvc0.service
systemctl enable -q hil-run.service
apt-get clean
