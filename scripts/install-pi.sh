#!/usr/bin/env bash
# Install live-appliance on Raspberry Pi OS (Bookworm or newer) as a hardened systemd
# service, from the checkout this script lives in. Idempotent: run it again to update;
# it never overwrites /etc/live-appliance/config.toml or the API key file.
# scripts/uninstall-pi.sh sources this file for the paths and helpers they share.
set -euo pipefail

readonly APP=live-appliance
readonly PREFIX=/opt/live-appliance
readonly VENV=$PREFIX/venv
# The venv has no pip of its own (making one is most of a minute on a small Pi): its
# Python runs apt's, which it sees with the system's packages.
readonly PIP=("$VENV/bin/python" -m pip)
readonly CONF_DIR=/etc/live-appliance
readonly CONFIG=$CONF_DIR/config.toml
readonly KEY_FILE=$CONF_DIR/api-key
readonly STATE_DIR=/var/lib/live-appliance
readonly UNIT_NAME=live-appliance.service
readonly UNIT_DIR=/etc/systemd/system
readonly UNIT_FILE=$UNIT_DIR/$UNIT_NAME
# A box that failed for good (five crashes in ten minutes) is started again later by
# these two: the service's OnFailure= starts the timer, the timer the retry service.
readonly RETRY_UNITS=(live-appliance-retry.timer live-appliance-retry.service)
readonly COMMAND_LINK=/usr/local/bin/live-appliance
# What the command and the service run: it checks that the venv can run the appliance
# (an OS upgrade under it, an install stopped half-way), then runs the venv's command.
readonly LAUNCHER=$PREFIX/bin/$APP
# The system Python: apt's picamera2 and lgpio are built for it (not a pyenv or /usr/local one).
readonly SYSTEM_PYTHON=/usr/bin/python3
# The groups of the device nodes the service opens (its unit's SupplementaryGroups).
readonly DEVICE_GROUPS=(audio video gpio spi)
# PyAudio and systemd-python come built from apt, as picamera2 and lgpio do: the venv
# sees them, and nothing of the lock is compiled (no compiler or headers on the box).
readonly BASE_PACKAGES=(
  python3-venv     # the venv
  python3-pip      # pip, which the venv's Python runs (Raspberry Pi OS has it)
  python3-pyaudio  # PortAudio over ALSA
  python3-systemd  # the journal, sd_notify
  python3-spidev   # APA102 pixel LEDs on HATs
)
# From Raspberry Pi OS's own archive: a Pi needs them; --no-camera and --no-gpio leave
# them out on a box without a camera or without the Pi's GPIO (plain Debian, a VM).
readonly CAMERA_PACKAGE=python3-picamera2  # the camera (libcamera), apt-only
readonly GPIO_PACKAGE=python3-lgpio        # gpiozero's GPIO driver (Pi 5: the only one)
# dpkg's journal of the changes it has not finished (what apt checks for "dpkg was
# interrupted").
readonly DPKG_UPDATES=/var/lib/dpkg/updates
# The unprivileged identity that downloads the Python packages and builds the appliance's
# wheel: no package's build script runs as root.
readonly BUILD_USER=nobody
# Where installs before PyAudio and systemd-python came from apt kept the wheels they
# compiled: an update removes it, as does the uninstaller.
readonly OLD_WHEEL_CACHE=/var/cache/live-appliance
# After a step that stopped midway (an update's venv half new): what mends it.
readonly AGAIN="; fix that and run this script again: it installs what is still missing"
SOURCE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly SOURCE_DIR
DRY_RUN=0
WITH_CAMERA=1
WITH_GPIO=1

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
usage_error() { usage >&2; printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 2; }

# Print a command, then run it unless this is a dry run.
run() {
  printf '  +'
  printf ' %q' "$@"
  printf '\n'
  ((DRY_RUN)) || "$@"
}

os_release_field() {
  sed -n "s/^$1=//p" /etc/os-release | tr -d '"'
}

# Debian or Raspberry Pi OS, Bookworm (12) or newer; testing/unstable have no VERSION_ID.
check_os() {
  [[ -r /etc/os-release ]] ||
    die "no /etc/os-release: this is for Raspberry Pi OS (Debian 12 or newer)"
  local id version
  id=$(os_release_field ID)
  version=$(os_release_field VERSION_ID)
  if [[ $id != debian && $id != raspbian ]]; then
    die "this is $(os_release_field PRETTY_NAME), not Raspberry Pi OS or Debian"
  fi
  if [[ -n $version && ${version%%.*} -lt 12 ]]; then
    die "this is $(os_release_field PRETTY_NAME): Raspberry Pi OS Bookworm (12) or newer is needed"
  fi
  say "  $(os_release_field PRETTY_NAME)"
}

# A 64-bit system: the lock files hold wheels for arm64 (and amd64) only, and a 32-bit
# Raspberry Pi OS (armhf, even on a 64-bit kernel) has none; refused before any change.
check_arch() {
  local arch
  arch=$(dpkg --print-architecture)
  [[ $arch == arm64 || $arch == amd64 ]] ||
    die "this system is $arch (32-bit): install Raspberry Pi OS 64-bit (arm64)"
}

# The card keeps what is installed: refused on one the kernel remounted read-only (it
# failed half-way, with a tool's error), and under Raspberry Pi OS's overlay file system
# (raspi-config), whose writes stay in memory: the install went well, the box answered,
# and after the next boot nothing of it was left (an uninstall: all of it back).
check_card() {
  local fstype options upper
  read -r fstype options < <(findmnt -n -o FSTYPE,OPTIONS --target "$(dirname "$PREFIX")") ||
    true  # no findmnt, or no answer: nothing known against it
  if [[ ,$options, == *,ro,* ]]; then
    die "$(dirname "$PREFIX") is read-only: the kernel remounts the card so after an" \
      "error (dmesg | grep -i ext4 says which); sudo reboot lets fsck repair it, then run" \
      "this again"
  fi
  [[ $fstype == overlay && ,$options, =~ ,upperdir=([^,]*), ]] || return 0
  upper=${BASH_REMATCH[1]}
  if [[ $(findmnt -n -o FSTYPE --target "$upper") == tmpfs ]]; then
    die "$(dirname "$PREFIX") is on the overlay file system, in memory: what this" \
      "changes is undone at the next boot. Turn it off (sudo raspi-config," \
      "Performance Options, Overlay File System), reboot, run this again, then turn it" \
      "on again"
  fi
}

check_root() {
  ((EUID == 0)) || ((DRY_RUN)) || die "must be run as root (sudo), or with --dry-run"
}

# A dry run without root sees only what anyone may see: an installed box's $CONF_DIR is
# root's and the service group's alone, its key file root's. Taken for absent, the run
# told an owner outside that group that the update installs the default config over
# theirs, that there is no key, and that the service is not started; one in the group,
# that a key file it could not read was a good key (an empty one is none), and that the
# service is restarted. A real run does none of these.
check_sight() {
  [[ -d $CONF_DIR && ! -x $CONF_DIR ]] || [[ -e $CONFIG && ! -r $CONFIG ]] ||
    [[ -e $KEY_FILE && ! -r $KEY_FILE ]] || return 0
  die "this user may not look into $CONF_DIR, so a dry run cannot tell what it would do with" \
    "your config and API key: sudo scripts/install-pi.sh --dry-run (it changes nothing either way)"
}

# COMMAND_LINK is the link an install made (to the launcher, or before it to the venv's
# command): another program of that name is not the installer's to replace or remove.
our_command() {
  [[ -L $COMMAND_LINK && $(readlink "$COMMAND_LINK") == "$PREFIX/"* ]]
}

# Nothing else answers to the command's name: a `sudo pip install` of an old checkout,
# or a script of the owner's, was replaced by the link without a word.
check_command() {
  [[ -e $COMMAND_LINK || -L $COMMAND_LINK ]] && ! our_command || return 0
  die "$COMMAND_LINK is not this installer's (a link into $PREFIX), and would be replaced:" \
    "move it aside (sudo mv $COMMAND_LINK $COMMAND_LINK.old), then run this again"
}

# The system Python's version as the lock files name it: 311 (Bookworm), 313 (Trixie).
python_tag() {
  "$SYSTEM_PYTHON" -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null
}

# A lock file (and so a tested set of packages) exists for the system's Python.
check_python() {
  local tag locks=() lock
  tag=$(python_tag) || die "no $SYSTEM_PYTHON: Raspberry Pi OS (Bookworm or newer) has it"
  [[ -r $(lock_file) ]] && return
  for lock in "$SOURCE_DIR"/requirements/pi-py3*.txt; do
    lock=${lock##*/pi-py}
    lock=${lock%.txt}
    locks+=("${lock:0:1}.${lock:1}")
  done
  die "no lock file for $SYSTEM_PYTHON (${tag:0:1}.${tag:1}): there are locks for ${locks[*]}" \
    "(requirements/pi-py*.txt; scripts/lock makes them)"
}

package_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# The Debian packages this install needs, one a line.
apt_packages() {
  printf '%s\n' "${BASE_PACKAGES[@]}"
  ((WITH_CAMERA)) && printf '%s\n' "$CAMERA_PACKAGE"
  ((WITH_GPIO)) && printf '%s\n' "$GPIO_PACKAGE"
  return 0
}

# apt knows a version to install (not "Candidate: (none)", not unknown).
package_available() {
  [[ $(apt-cache policy "$1" 2>/dev/null) == *"Candidate: "[!\(]* ]]
}

# Why KEY is not an API key, as the daemon judges one (printable ASCII, no spaces: an
# HTTP header carries it; no quotation marks around it, no NAME=); nothing when it is
# one. A key pasted with its quotation marks, its variable's name or an invisible space
# would be stored, and the service refuse it.
key_problem() {
  local LC_ALL=C
  if [[ -z $1 ]]; then
    printf 'is empty'
  elif [[ $1 == *[[:space:]]* ]]; then
    printf 'must be one word on one line'
  elif [[ $1 == [\"\'\`]* || $1 == *[\"\'\`] ]]; then
    printf 'is in quotation marks: give the key without them'
  elif [[ $1 == *=* ]]; then
    printf 'holds NAME=value: give only the key'
  elif [[ $1 == *[^!-~]* ]]; then
    printf 'has a character no key has (a quotation mark or an invisible space copied'
    printf ' with it?): copy the key again'
  fi
}

# KEY with the whitespace around it trimmed, and a byte-order mark before it (an editor
# on Windows saved the file so): the daemon reads the file as utf-8-sig and takes it.
trimmed() {
  local key=${1#$'\xef\xbb\xbf'}
  key=${key#"${key%%[![:space:]]*}"}
  printf '%s' "${key%"${key##*[![:space:]]}"}"
}

# The API key in FILE ("-": standard input), trimmed and checked, on standard output.
# It goes through no command line and no environment, and is never printed elsewhere.
read_key() {
  local source=$1 key problem
  if [[ $source == - && -t 0 ]]; then
    # Typed or pasted at a terminal: asked for, not shown, and Enter ends it.
    IFS= read -r -s -p "Gemini API key (typing is not shown): " key
    printf '\n' >&2
  elif [[ $source == - ]]; then
    key=$(</dev/stdin)
  else
    key=$(<"$source")
  fi
  key=$(trimmed "$key")
  problem=$(key_problem "$key")
  [[ -z $problem ]] || die "the API key in ${source/#-/standard input} $problem"
  printf '%s' "$key"
}

# Users besides FILE's owner may read it: its mode lets its group or others, and each
# directory above lets them through (a home only its owner may enter keeps it theirs).
readable_by_others() {
  local path
  path=$(realpath -e "$1" 2>/dev/null) || return 1
  [[ -n $(find "$path" -maxdepth 0 -perm /044) ]] || return 1
  while [[ $path != / ]]; do
    path=$(dirname "$path")
    [[ -n $(find "$path" -maxdepth 0 -perm /011) ]] || return 1
  done
}

# Store KEY as DEST, mode 0600, root only; an existing DEST is never overwritten
# (noclobber opens it with O_EXCL). A card full or read-only is said as such: "exists"
# sent the owner looking for a key never stored, and the full card left DEST empty.
write_key() {
  local status=0
  (
    set -o noclobber
    umask 077
    exec 3>"$2" || exit 3
    printf '%s\n' "$1" >&3 || { rm -f "$2"; exit 1; }  # ours: made by this open
  ) || status=$?
  ((status == 0)) && return
  [[ $status != 3 || ! -e $2 ]] || die "$2 exists: not replacing the key"
  die "cannot store the key in $2 (the line above says why): a full card shows in" \
    "df -h $(dirname "$2"), one the kernel made read-only in dmesg; then run this again"
}

# Store the API key from FILE ("-": standard input) as DEST. The status says whether it
# was: called in an `if`, set -e does not stop at a key refused.
store_key() {
  local key
  key=$(read_key "$1") || return 1
  write_key "$key" "$2"
}

# Ask for the key on the terminal without echoing it, again after one that cannot be a
# key (its problem said); an empty answer: no key (status 1).
prompt_key() {
  local dest=$1 key
  while true; do
    IFS= read -r -s -p "Gemini API key (typing is not shown; Enter to skip): " key </dev/tty
    printf '\n' >&2
    [[ -n $key ]] || return 1
    store_key - "$dest" <<<"$key" && return 0
  done
}

usage() {
  cat <<EOF
Usage: sudo scripts/install-pi.sh [--key-file PATH|-] [--no-camera] [--no-gpio] [--dry-run]

Install live-appliance from this checkout as a systemd service on Raspberry Pi
OS (Bookworm or newer):
  - apt packages, the system user $APP, a venv in $VENV
  - the command $COMMAND_LINK
  - a default $CONFIG (never overwritten)
  - the API key in $KEY_FILE, mode 0600 (never overwritten)
  - the service $UNIT_NAME, enabled and started (state in $STATE_DIR)
Run it again to update.

  --key-file PATH  read the Gemini API key from PATH ("-": standard input, asked for
                   at a terminal, not echoed). Without it the key is asked for on
                   the terminal (not echoed), if any.
  --no-camera      a box without a camera: $CAMERA_PACKAGE is not installed and a
                   new $CONFIG has the camera off
  --no-gpio        a board without the Pi's GPIO (plain Debian, a VM): $GPIO_PACKAGE
                   is not installed
  --dry-run        print every step and command, change nothing (no root needed,
                   but on an installed box sudo: its config and key are root's)
  -h, --help       this text
EOF
}

# An update (`git pull && sudo scripts/install-pi.sh`, without the first install's
# options) keeps out a Pi package the installed box does not have: the first install was
# given --no-camera or --no-gpio (plain Debian, a VM, a box without a camera). apt
# install it by hand to add it.
# LEFT_OUT: what it says about each.
keep_left_out() {
  LEFT_OUT=()
  [[ -x $VENV/bin/python ]] || return 0
  if ((WITH_CAMERA)) && ! package_installed "$CAMERA_PACKAGE"; then
    WITH_CAMERA=0
    LEFT_OUT+=("$CAMERA_PACKAGE: left out, as at the last install (--no-camera); apt install it to use a camera")
  fi
  if ((WITH_GPIO)) && ! package_installed "$GPIO_PACKAGE"; then
    WITH_GPIO=0
    LEFT_OUT+=("$GPIO_PACKAGE: left out, as at the last install (--no-gpio); apt install it to use the button and LEDs")
  fi
  return 0
}

# What keeps apt from its package lists on a fresh Pi. It keeps no time switched off:
# until the network's time comes its clock is the image's (fake-hwclock), and apt then
# refuses lists "not valid yet" with the network there.
why_apt_failed() {
  if [[ $(timedatectl show -p NTPSynchronized --value 2>/dev/null) == no ]]; then
    echo "no network yet, or the clock is not set yet: see date, and set it with" \
      "sudo date -s 'YYYY-MM-DD HH:MM' if the network's time does not come"
  else
    echo "no network yet?"
  fi
}

install_packages() {
  local wanted=() missing=() pkg note
  keep_left_out
  mapfile -t wanted < <(apt_packages)
  step "Debian packages: ${wanted[*]}"
  for note in "${LEFT_OUT[@]}"; do
    say "  $note"
  done
  for pkg in "${wanted[@]}"; do
    package_installed "$pkg" || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    say "  all installed"
    return
  fi
  # An apt install stopped half-way (Ctrl-C, a power cut) leaves dpkg's journal of
  # changes unfinished, and apt refuses any other install until it is finished: done
  # here, as apt's error asks, so that running this again completes the install.
  if [[ -n $(find "$DPKG_UPDATES" -name '[0-9]*' -print -quit 2>/dev/null) ]]; then
    run dpkg --configure -a ||
      die "dpkg could not finish the install it was stopped in: dpkg says why above$AGAIN"
  fi
  run apt-get update ||
    die "apt could not read its package lists ($(why_apt_failed)): apt says why above$AGAIN"
  for pkg in "${missing[@]}"; do
    if ! package_available "$pkg"; then
      local problem="$pkg is not in this system's apt sources"
      case $pkg in
        "$CAMERA_PACKAGE") problem+=": it comes from Raspberry Pi OS's archive (no camera: --no-camera)" ;;
        "$GPIO_PACKAGE") problem+=": it comes from Raspberry Pi OS's archive (no Pi GPIO: --no-gpio)" ;;
      esac
      ((DRY_RUN)) || die "$problem"
      say "  note: $problem; a real run would stop here"
      [[ -n $WOULD_STOP ]] || WOULD_STOP=$problem  # where a real run stops: the first
    fi
  done
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" ||
    die "apt could not install ${missing[*]}: apt says why above$AGAIN"
}

create_user() {
  step "system user $APP (device groups ${DEVICE_GROUPS[*]})"
  local group
  for group in "${DEVICE_GROUPS[@]}"; do
    # Raspberry Pi OS has them all; the unit cannot start if one is missing.
    getent group "$group" >/dev/null || run groupadd --system "$group" ||
      die "the group $group could not be made: groupadd says why above$AGAIN"
  done
  if id -u "$APP" >/dev/null 2>&1; then
    say "  $APP exists"
  else
    # Its group may have outlived it (an uninstall stopped between userdel and groupdel,
    # a user removed by hand): useradd --user-group refuses to make it again.
    local group_of=(--user-group)
    getent group "$APP" >/dev/null && group_of=(--gid "$APP")
    run useradd --system "${group_of[@]}" --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "live-appliance voice daemon" "$APP" ||
      die "the system user $APP could not be made: useradd says why above$AGAIN"
  fi
  # The owner who ran sudo may then use `live-appliance ctl` without it.
  if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
    if [[ " $(id -nG "$SUDO_USER") " == *" $APP "* ]]; then
      say "  $SUDO_USER is in group $APP"
    else
      run usermod -a -G "$APP" "$SUDO_USER" ||
        die "$SUDO_USER could not be put in group $APP: usermod says why above$AGAIN"
      say "  $SUDO_USER: log in again to use 'live-appliance ctl' without sudo"
    fi
  else
    say "  run from root's own shell: 'usermod -a -G $APP USER' lets USER use 'live-appliance ctl' without sudo"
  fi
}

# The lock file for the system's Python: every package pinned, with its hashes, the
# setuptools and wheel that build the appliance's own wheel among them.
lock_file() {
  printf '%s/requirements/pi-py%s.txt\n' "$SOURCE_DIR" "$(python_tag)"
}

# Run a command in STAGE as BUILD_USER: no privileges, no capabilities, a clean
# environment (proxy settings pass through).
as_builder() {
  local stage=$1 name
  shift
  local env=(HOME="$stage" PATH=/usr/bin:/bin PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1)
  for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    if [[ -n ${!name:-} ]]; then env+=("$name=${!name}"); fi
  done
  run setpriv --reuid="$BUILD_USER" --regid="$(id -g "$BUILD_USER")" --clear-groups --inh-caps=-all \
    env -i "${env[@]}" "$@"
}

install_venv() {
  # Only the Pi packages this box gets (--no-camera, --no-gpio, or left out before).
  local seen="PyAudio, systemd"
  ((WITH_CAMERA)) && seen+=", picamera2"
  ((WITH_GPIO)) && seen+=", lgpio"
  step "Python environment $VENV (sees apt's $seen)"
  local lock
  lock=$(lock_file)
  [[ -r $lock ]] || die "no lock file for this Python: $lock (scripts/lock makes one)"
  lock=${lock#"$SOURCE_DIR/"}
  # Kept only if it runs the system's Python: after an OS upgrade (Bookworm to Trixie)
  # its python links to 3.13 while its packages sit in lib/python3.11, and would be
  # taken as installed.
  if "$VENV/bin/python" -c '' 2>/dev/null &&
    grep -q '^include-system-site-packages = true' "$VENV/pyvenv.cfg" &&
    [[ -d $VENV/lib/$("$SYSTEM_PYTHON" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')/site-packages ]]; then
    say "  $VENV exists"
    # One made under a stricter umask (before install_main set its own) only root may
    # enter: the service could not start from it (203/EXEC).
    if [[ -n $(find "$PREFIX" ! -type l ! -perm -o=r -print -quit) ]]; then
      run chmod -R a+rX "$PREFIX"
    fi
  else
    run "$SYSTEM_PYTHON" -m venv --clear --system-site-packages --without-pip "$VENV"
  fi
  # As BUILD_USER: download exactly the locked files the venv lacks (pip checks every
  # hash), wheels only, which root installs (installing a wheel runs none of its code);
  # then, as BUILD_USER again, build the appliance's own wheel offline from a copy
  # (nothing is written into the owner's checkout) with the lock's setuptools and
  # wheel, now in the venv. Root installs it.
  # What root installs of the lock is checked against root's own list of it (LISTED),
  # outside the stage: BUILD_USER owns the stage and could swap a file there.
  local stage=/tmp/live-appliance-build listed=/tmp/live-appliance-needed.txt
  if ((DRY_RUN)); then
    say "  copy $SOURCE_DIR (without .git, .venv) to $stage, owned by $BUILD_USER"
  else
    stage=$(mktemp -d)
    listed=$(mktemp)
    # shellcheck disable=SC2064  # expand now: the trap must remove these
    trap "rm -rf '$stage' '$listed'" EXIT
    mkdir "$stage/src" "$stage/wheels"
    tar -C "$SOURCE_DIR" --exclude=.git --exclude=.venv --exclude=__pycache__ -cf - . |
      tar -C "$stage/src" -xf -
    chown -R "$BUILD_USER:" "$stage"
  fi
  # An update with the lock of the last install leaves the dependencies as they are and
  # replaces only the appliance: each pip run starts for seconds on a small Pi.
  local stamp=$VENV/.live-appliance-locks digest same_lock=0
  digest=$(sha256sum "$SOURCE_DIR/$lock" | cut -d' ' -f1)
  [[ -r $stamp && $(<"$stamp") == "$digest" ]] && same_lock=1
  if ((same_lock)); then
    say "  the dependencies are as $lock locks them since the last install: kept"
  else
    install_missing "$stage" "$lock" "$listed"
  fi
  as_builder "$stage" "${PIP[@]}" wheel --no-deps --no-index --no-build-isolation \
    --wheel-dir "$stage/wheels" "$stage/src" ||
    die "the appliance could not be built: pip says why above$AGAIN"
  # The appliance keeps its version number from one commit to the next: always replaced.
  run "${PIP[@]}" install --no-index --no-deps --force-reinstall \
    "$stage/wheels/"live_appliance-*.whl ||
    die "the appliance could not be installed into $VENV: pip says why above$AGAIN"
  if ((!same_lock)); then
    remove_unlocked "$SOURCE_DIR/$lock"
    # Recorded only once what pip wrote is on the card: a power cut seconds after it could
    # leave those files empty and the record whole, and the next run would keep them.
    run sync
    say "  the lock's digest, for the next update: $stamp"
    ((DRY_RUN)) || printf '%s\n' "$digest" >"$stamp"
  fi
  if [[ -e $OLD_WHEEL_CACHE ]]; then
    run rm -rf "$OLD_WHEEL_CACHE"
  fi
}

# The packages of the lock file LOCK that the venv does not hold at their locked
# version, listed in LISTED (root's) and STAGE/needed.txt: downloaded into
# STAGE/downloads as BUILD_USER (hashes checked, wheels only: a package with no wheel
# for this system would have to be compiled, which this install never does), then
# installed by root, the hashes checked again against LISTED. An update after a change
# of one package downloads that one, not the lock's 60 MB again.
install_missing() {
  local stage=$1 lock=$2 listed=$3 wheels
  local needed=$stage/needed.txt
  if ((DRY_RUN)); then
    say "  $needed: the packages of $lock not in $VENV at their locked version"
  else
    venv_vs_lock missing "$SOURCE_DIR/$lock" "$VENV" >"$listed"
    install -m 0644 -o "$BUILD_USER" "$listed" "$needed"
    if [[ ! -s $needed ]]; then
      say "  every package of $lock is installed at its locked version"
      return
    fi
  fi
  as_builder "$stage" "${PIP[@]}" download --no-deps --require-hashes \
    --only-binary=:all: --dest "$stage/downloads" --requirement "$needed" ||
    die "the packages of $lock could not be downloaded: pip says why above$AGAIN"
  wheels=("$stage/downloads/"*.whl)
  # None when all that is missing is for other systems (its marker is false here).
  [[ -e ${wheels[0]} ]] || ((DRY_RUN)) || return 0
  run "${PIP[@]}" install --no-index --no-deps --require-hashes \
    --find-links "$stage/downloads" --requirement "$listed" ||
    die "installing into $VENV stopped midway: pip says why above$AGAIN"
}

# Take out of the venv what the lock does not name (a package an earlier version of
# the appliance needed): after an update the venv holds the lock and nothing else.
remove_unlocked() {
  local lock=$1 extra=()
  if ((DRY_RUN)); then
    say "  packages in $VENV that $(basename "$lock") does not name: uninstalled"
    return
  fi
  mapfile -t extra < <(venv_vs_lock extra "$lock" "$VENV")
  if ((${#extra[@]})); then
    run "${PIP[@]}" uninstall --yes "${extra[@]}"
  fi
}

# The venv VENV against the lock file LOCK, read from the venv's own site-packages
# (one Python start: pip takes seconds more on a small Pi). WHAT "missing": the lock's
# entries (name==version, markers, hashes) not installed at that version; "extra":
# the names of installed packages the lock does not name (the appliance aside; pip,
# which a venv made by an older installer has, is one: apt's takes its place).
venv_vs_lock() {
  "$SYSTEM_PYTHON" - "$@" <<'PYTHON'
import glob
import re
import sys
from importlib import metadata

what, lock, venv = sys.argv[1:]

def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()

sites = glob.glob(f"{venv}/lib/python3*/site-packages")
have = {canonical(d.metadata["Name"]): d.version
        for d in metadata.distributions(path=sites) if d.metadata["Name"]}
pins = {}
with open(lock) as text:
    for entry in re.split(r"\n(?=\S)", text.read()):
        pin = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", entry)
        if pin:
            pins[canonical(pin[1])] = (pin[2], entry.rstrip())
if what == "missing":
    for name, (version, entry) in pins.items():
        if have.get(name) != version:
            print(entry)
else:
    for name in sorted(set(have) - set(pins) - {"live-appliance"}):
        print(name)
PYTHON
}

install_command() {
  step "command $COMMAND_LINK"
  run install -D -m 0755 -o root -g root "$SOURCE_DIR/systemd/$APP-launch" "$LAUNCHER" ||
    die "the launcher could not be installed: install says why above$AGAIN"
  run ln -sfn "$LAUNCHER" "$COMMAND_LINK" ||
    die "the command could not be linked: ln says why above$AGAIN"
}

install_config() {
  step "configuration $CONFIG"
  run install -d -m 0750 -o root -g "$APP" "$CONF_DIR"
  if [[ -e $CONFIG ]]; then
    say "  keeping your $CONFIG"
    # The service reads it as $APP: make sure it still can. Root alone may change it:
    # root's doctor and ask read it with the key, and a member of the group who could
    # point [live] base_url at a server of theirs would be sent the key.
    run chgrp "$APP" "$CONFIG"
    run chmod g+r "$CONFIG"
    run chmod go-w "$CONFIG"
    # And the owner's files beside it it may read (a token file, a persona, a directory
    # of them) that an uninstall without --purge left to root's group, as it left all
    # below: the service's group again.
    local file
    while IFS= read -r -d '' file; do
      run chgrp "$APP" "$file"
    done < <(find "$CONF_DIR" -mindepth 1 ! -path "$CONFIG" ! -path "$KEY_FILE" \
      "(" -type f -o -type d ")" -group 0 -perm -g=r -print0)
  else
    run install -m 0640 -o root -g "$APP" "$SOURCE_DIR/systemd/config.toml.example" "$CONFIG"
    if ((!WITH_CAMERA)); then
      say "  no camera (--no-camera): [camera] enabled = false"
      ((DRY_RUN)) || sed -i 's/^# enabled = true$/enabled = false/' "$CONFIG"
    fi
  fi
}

# Whether the configuration takes the service's credentials from elsewhere than the key
# file: Vertex AI, or a file of its own ([live] api_key_file: the README's token set-up).
# Read as TOML by the system's Python; a configuration it cannot read says no.
key_from_config() {
  [[ -r $CONFIG ]] || return 1
  "$SYSTEM_PYTHON" - "$CONFIG" 2>/dev/null <<'PY'
import sys
import tomllib

with open(sys.argv[1], encoding="utf-8-sig") as file:  # as the daemon: a BOM is no fault
    live = tomllib.loads(file.read()).get("live", {})
sys.exit(0 if live.get("backend") == "vertex" or live.get("api_key_file") else 1)
PY
}

# Sets KEY_READY=1 when the key is (or, in a dry run, would be) in place, or the
# configuration needs none. KEY: the one given with --key-file SOURCE, read and checked
# before anything was installed. A kept key file is judged as the daemon judges it; an
# empty one is kept only where the configuration needs no key file, and one this user
# may not read (a dry run without root) is not judged.
# The kept key file root's alone, mode 0600, as the installer writes one: also one the
# service would refuse (a key in quotation marks is a key all the same).
key_root_only() {
  run chown root:root "$KEY_FILE"
  run chmod 0600 "$KEY_FILE"
}

install_key() {
  local key=$1 source=$2 kept="" problem=""
  step "API key $KEY_FILE (root only; the service gets it as a systemd credential)"
  if [[ -r $KEY_FILE ]]; then
    kept=$(trimmed "$(<"$KEY_FILE")")
    if [[ -n $kept ]]; then
      problem=$(key_problem "$kept")
    elif ! key_from_config; then
      problem="is empty"
    fi
  fi
  if [[ -e $KEY_FILE && -z $problem ]]; then
    if [[ -r $KEY_FILE && -z $kept ]]; then
      say "  keeping $KEY_FILE empty: the configuration names [live] api_key_file or Vertex AI"
    else
      say "  keeping the key in $KEY_FILE${key:+ (--key-file ignored)};" \
        "to change it: sudoedit $KEY_FILE"
    fi
    key_root_only
    KEY_READY=1
  elif [[ -n $key ]]; then
    [[ -z $problem ]] || say "  the key in $KEY_FILE $problem: replacing it"
    say "  store the key from ${source/#-/standard input} as $KEY_FILE, mode 0600"
    ((DRY_RUN)) || { rm -f "$KEY_FILE"; write_key "$key" "$KEY_FILE"; }
    KEY_READY=1
    # The copy it came from, written under the usual umask: others may read it.
    if [[ $source != - ]] && readable_by_others "$source"; then
      say "  $source is still there for other users to read: once the box answers, rm $source"
    fi
  elif [[ -n $problem && -t 0 ]] && ((!DRY_RUN)); then
    # The new key goes beside it first: skipping the prompt (or Ctrl-C) keeps the
    # owner's file, a stray quotation mark in it theirs to fix.
    say "  the key in $KEY_FILE $problem: asking for it again"
    rm -f "$KEY_FILE.new"
    if prompt_key "$KEY_FILE.new"; then
      mv -f "$KEY_FILE.new" "$KEY_FILE"
      KEY_READY=1
    else
      say "  no key given: $KEY_FILE kept as it was; sudoedit $KEY_FILE, or run this again with --key-file"
      key_root_only
    fi
  elif [[ -n $problem ]]; then
    say "  the key in $KEY_FILE $problem: sudoedit $KEY_FILE, or run this again with --key-file"
    key_root_only
  elif key_from_config; then
    say "  none needed: the configuration names [live] api_key_file or Vertex AI"
    KEY_READY=1
  elif [[ -t 0 ]]; then
    if ((DRY_RUN)); then
      say "  ask for the key on the terminal (not echoed); with none, the service is not started"
      KEY_READY=1
    elif prompt_key "$KEY_FILE"; then
      KEY_READY=1
    else
      say "  no key given"
    fi
  else
    say "  no key given (use --key-file, or run from a terminal to be asked)"
  fi
}

install_unit() {
  step "systemd unit $UNIT_FILE"
  # An update leaves a service the owner turned off (systemctl disable) off: the
  # installer brings new code, it is not the box's switch. (A query: also in a dry run.)
  if [[ -e $UNIT_FILE ]] && ! systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null; then
    KEPT_DISABLED=1
  fi
  local unit
  for unit in "$UNIT_NAME" "${RETRY_UNITS[@]}"; do
    run install -m 0644 -o root -g root "$SOURCE_DIR/systemd/$unit" "$UNIT_DIR/$unit" ||
      die "$unit could not be installed: install says why above$AGAIN"
  done
  run systemctl daemon-reload ||
    die "systemd could not read the new units: systemctl says why above$AGAIN"
  if ((KEPT_DISABLED)); then
    say "  left disabled, as you set it: it does not start at boot"
  else
    run systemctl enable "$UNIT_NAME" ||
      die "$UNIT_NAME could not be enabled: systemctl says why above$AGAIN"
  fi
}

# Stop, saying why the service did not start (WHAT: how it did not). After an update
# the likeliest is a setting of the kept configuration this version no longer has
# (removed, renamed): the daemon then exits with its configuration error, which the
# doctor's config check says here, with the setting; else the journal says why.
not_started() {
  local checked
  checked=$(env -i PATH=/usr/bin:/bin "$LAUNCHER" doctor config 2>&1) || true
  if [[ $checked == "FAIL  config "* ]]; then
    printf '%s\n' "$checked" >&2
    die "the service $1: $CONFIG does not suit this version (the lines above say" \
      "which setting); sudoedit $CONFIG, then: sudo systemctl restart $APP"
  fi
  die "the service $1: journalctl -u $APP -n 50 shows why"
}

start_service() {
  step "start $UNIT_NAME"
  # Everything written is on the card before the box is said to run: ext4 writes a new
  # file's data up to 30 s later, and a box unplugged then (to move it) came back with
  # an empty unit, launcher, key or venv file.
  run sync
  if ((!KEY_READY)); then
    say "  not started: no API key yet. Run this script again from a terminal (it asks"
    say "  for the key) or with --key-file PATH; it keeps everything else as it is."
    return
  fi
  # A manual start counts against StartLimitBurst too: an install after a crash burst,
  # or a few reinstalls in ten minutes, must not be refused for it.
  run systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
  if ((KEPT_DISABLED)); then
    # Running on the new code if the owner had started it by hand; left stopped if not.
    run systemctl try-restart "$UNIT_NAME" || not_started "did not start again"
    say "  restarted only if it was running; to turn it back on: systemctl enable --now $APP"
    return
  fi
  run systemctl restart "$UNIT_NAME" || not_started "did not start"
  ((DRY_RUN)) || say "  running: press the button and talk. Watch it: journalctl -u $APP -f"
}

install_main() {
  local key_source=""
  # What root makes here the service (and the owner's `live-appliance`) must read: the
  # venv and its packages follow the umask, and sudo keeps the owner's if it is stricter.
  umask 022
  while (($#)); do
    case $1 in
      --dry-run) DRY_RUN=1 ;;
      --no-camera) WITH_CAMERA=0 ;;
      --no-gpio) WITH_GPIO=0 ;;
      --key-file)
        (($# >= 2)) || usage_error "--key-file needs a path (or - for standard input)"
        key_source=$2
        shift
        ;;
      -h | --help) usage; exit 0 ;;
      *) usage_error "unknown option: $1" ;;
    esac
    shift
  done
  ((DRY_RUN)) && say "dry run: printing what would be done; nothing is changed"
  step "checking this system"
  check_os
  check_arch
  check_root
  check_sight
  check_card
  check_command
  check_python
  local key=""
  if [[ -n $key_source ]]; then
    # The key itself given where its file's path goes: not repeated on the screen.
    [[ $key_source == - || -e $key_source || ! $key_source =~ ^(AIza|auth_tokens/) ]] \
      || die "--key-file takes the path of a file holding the key (or - to type it), not the key"
    [[ $key_source == - || -r $key_source ]] || die "--key-file $key_source: no such readable file"
    key=$(read_key "$key_source")  # a key the service would refuse stops the install here
  fi
  KEY_READY=0
  KEPT_DISABLED=0
  WOULD_STOP=""
  install_packages
  create_user
  install_venv
  install_command
  install_config
  install_key "$key" "$key_source"
  install_unit
  start_service
  # The rest was shown all the same; the status is the real run's, which stops there.
  [[ -z $WOULD_STOP ]] || die "a real run would stop at the Debian packages: $WOULD_STOP"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  install_main "$@"
fi
