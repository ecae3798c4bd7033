#!/usr/bin/env bash
# Install live-appliance on Raspberry Pi OS (Bookworm or newer) as a hardened systemd
# service, from the checkout this script lives in. Idempotent: run it again to update;
# it never overwrites /etc/live-appliance/config.toml or the API key file.
# scripts/uninstall-pi.sh sources this file for the paths and helpers they share.
set -euo pipefail

readonly APP=live-appliance
readonly PREFIX=/opt/live-appliance
readonly VENV=$PREFIX/venv
readonly CONF_DIR=/etc/live-appliance
readonly CONFIG=$CONF_DIR/config.toml
readonly KEY_FILE=$CONF_DIR/api-key
readonly STATE_DIR=/var/lib/live-appliance
readonly UNIT_NAME=live-appliance.service
readonly UNIT_FILE=/etc/systemd/system/$UNIT_NAME
readonly COMMAND_LINK=/usr/local/bin/live-appliance
# The system Python: apt's picamera2 and lgpio are built for it (not a pyenv or /usr/local one).
readonly SYSTEM_PYTHON=/usr/bin/python3
# The groups of the device nodes the service opens (its unit's SupplementaryGroups).
readonly DEVICE_GROUPS=(audio video gpio spi)
readonly APT_PACKAGES=(
  python3-venv python3-dev build-essential pkg-config  # the venv, C extensions
  portaudio19-dev                                      # PyAudio builds against PortAudio
  libsystemd-dev                                       # systemd-python (journal, notify)
  python3-picamera2                                    # the camera (libcamera), apt-only
  python3-lgpio                                        # gpiozero's GPIO driver (Pi 5: the only one)
  python3-spidev                                       # APA102 pixel LEDs on HATs
)
SOURCE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly SOURCE_DIR
DRY_RUN=0

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

check_root() {
  ((EUID == 0)) || ((DRY_RUN)) || die "must be run as root (sudo), or with --dry-run"
}

check_python() {
  "$SYSTEM_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$SYSTEM_PYTHON 3.11 or newer is needed (Raspberry Pi OS Bookworm has it)"
}

package_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# apt knows a version to install (not "Candidate: (none)", not unknown).
package_available() {
  [[ $(apt-cache policy "$1" 2>/dev/null) == *"Candidate: "[!\(]* ]]
}

# Store the API key from FILE ("-": standard input) as DEST, mode 0600, root only.
# The key goes through no command line and no environment, and is never printed;
# an existing DEST is never overwritten (noclobber opens it with O_EXCL).
store_key() {
  local source=$1 dest=$2 key
  if [[ $source == - ]]; then
    key=$(</dev/stdin)
  else
    key=$(<"$source")
  fi
  key=${key#"${key%%[![:space:]]*}"}
  key=${key%"${key##*[![:space:]]}"}
  [[ -n $key ]] || die "the API key in ${source/#-/standard input} is empty"
  [[ $key != *[[:space:]]* ]] ||
    die "the API key in ${source/#-/standard input} must be one word on one line"
  (set -o noclobber; umask 077; printf '%s\n' "$key" >"$dest") ||
    die "$dest exists: not replacing the key"
}

# Ask for the key on the terminal without echoing it; empty answer: no key.
prompt_key() {
  local dest=$1 key
  IFS= read -r -s -p "Gemini API key (typing is not shown; Enter to skip): " key </dev/tty
  printf '\n' >&2
  [[ -n $key ]] || return 1
  store_key - "$dest" <<<"$key"
}

usage() {
  cat <<EOF
Usage: sudo scripts/install-pi.sh [--key-file PATH|-] [--dry-run]

Install live-appliance from this checkout as a systemd service on Raspberry Pi
OS (Bookworm or newer):
  - apt packages, the system user $APP, a venv in $VENV
  - the command $COMMAND_LINK
  - a default $CONFIG (never overwritten)
  - the API key in $KEY_FILE, mode 0600 (never overwritten)
  - the service $UNIT_NAME, enabled and started (state in $STATE_DIR)
Run it again to update.

  --key-file PATH  read the Gemini API key from PATH ("-": standard input). Without
                   it the key is asked for on the terminal (not echoed), if any.
  --dry-run        print every step and command, change nothing (no root needed)
  -h, --help       this text
EOF
}

install_packages() {
  step "Debian packages: ${APT_PACKAGES[*]}"
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    package_installed "$pkg" || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    say "  all installed"
    return
  fi
  run apt-get update
  for pkg in "${missing[@]}"; do
    if ! package_available "$pkg"; then
      local problem="$pkg is not in this system's apt sources"
      problem+=": it comes from Raspberry Pi OS's archive"
      ((DRY_RUN)) || die "$problem (archive.raspberrypi.com)"
      say "  note: $problem; a real run would stop here"
    fi
  done
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

create_user() {
  step "system user $APP (device groups ${DEVICE_GROUPS[*]})"
  local group
  for group in "${DEVICE_GROUPS[@]}"; do
    # Raspberry Pi OS has them all; the unit cannot start if one is missing.
    getent group "$group" >/dev/null || run groupadd --system "$group"
  done
  if id -u "$APP" >/dev/null 2>&1; then
    say "  $APP exists"
  else
    run useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "live-appliance voice daemon" "$APP"
  fi
  # The owner who ran sudo may then use `live-appliance ctl` without it.
  if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
    if [[ " $(id -nG "$SUDO_USER") " == *" $APP "* ]]; then
      say "  $SUDO_USER is in group $APP"
    else
      run usermod -a -G "$APP" "$SUDO_USER"
      say "  $SUDO_USER: log in again to use 'live-appliance ctl' without sudo"
    fi
  fi
}

# The major version of the system's numpy: picamera2, simplejpeg and libcamera from
# apt are built against it, and numpy 1 and 2 are not binary compatible.
system_numpy_major() {
  "$SYSTEM_PYTHON" -c 'import numpy; print(numpy.__version__.split(".")[0])' 2>/dev/null || true
}

install_venv() {
  step "Python environment $VENV (sees apt's picamera2 and lgpio)"
  if "$VENV/bin/python" -c '' 2>/dev/null &&
    grep -q '^include-system-site-packages = true' "$VENV/pyvenv.cfg"; then
    say "  $VENV exists"
  else
    run "$SYSTEM_PYTHON" -m venv --clear --system-site-packages "$VENV"
  fi
  local numpy_major constraint=""
  numpy_major=$(system_numpy_major)
  [[ -n $numpy_major ]] && constraint="numpy<$((numpy_major + 1))"
  # pip builds a local directory in place: build from a copy, so that root leaves no
  # files in the owner's checkout.
  if ((DRY_RUN)); then
    say "  copy $SOURCE_DIR (without .git, .venv) to a temporary directory"
    say "  + $VENV/bin/pip install --upgrade ${constraint:+--constraint <file: $constraint> }<copy>"
    return
  fi
  local stage
  stage=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: the trap must remove this directory
  trap "rm -rf '$stage'" EXIT
  mkdir "$stage/src"
  tar -C "$SOURCE_DIR" --exclude=.git --exclude=.venv --exclude=__pycache__ -cf - . |
    tar -C "$stage/src" -xf -
  printf '%s\n' "$constraint" >"$stage/constraints.txt"
  run "$VENV/bin/pip" install --upgrade --constraint "$stage/constraints.txt" "$stage/src"
}

install_command() {
  step "command $COMMAND_LINK"
  run ln -sfn "$VENV/bin/$APP" "$COMMAND_LINK"
}

install_config() {
  step "configuration $CONFIG"
  run install -d -m 0750 -o root -g "$APP" "$CONF_DIR"
  if [[ -e $CONFIG ]]; then
    say "  keeping your $CONFIG"
    # The service reads it as $APP: make sure it still can.
    run chgrp "$APP" "$CONFIG"
    run chmod g+r "$CONFIG"
  else
    run install -m 0640 -o root -g "$APP" "$SOURCE_DIR/systemd/config.toml.example" "$CONFIG"
  fi
}

# Sets KEY_READY=1 when the key is (or, in a dry run, would be) in place.
install_key() {
  local key_source=$1
  step "API key $KEY_FILE (root only; the service gets it as a systemd credential)"
  if [[ -e $KEY_FILE ]]; then
    say "  keeping the key in $KEY_FILE${key_source:+ (--key-file ignored)};" \
      "to change it: sudoedit $KEY_FILE"
    run chown root:root "$KEY_FILE"
    run chmod 0600 "$KEY_FILE"
    KEY_READY=1
  elif [[ -n $key_source ]]; then
    say "  store the key from ${key_source/#-/standard input} as $KEY_FILE, mode 0600"
    ((DRY_RUN)) || store_key "$key_source" "$KEY_FILE"
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
  run install -m 0644 -o root -g root "$SOURCE_DIR/systemd/$UNIT_NAME" "$UNIT_FILE"
  run systemctl daemon-reload
  run systemctl enable "$UNIT_NAME"
}

start_service() {
  step "start $UNIT_NAME"
  if ((!KEY_READY)); then
    say "  not started: no API key yet. Run this script again from a terminal (it asks"
    say "  for the key) or with --key-file PATH; it keeps everything else as it is."
    return
  fi
  if ! run systemctl restart "$UNIT_NAME"; then
    die "the service did not start: journalctl -u $APP -n 50 shows why"
  fi
  ((DRY_RUN)) || say "  running: press the button and talk. Watch it: journalctl -u $APP -f"
}

install_main() {
  local key_source=""
  while (($#)); do
    case $1 in
      --dry-run) DRY_RUN=1 ;;
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
  check_root
  check_python
  if [[ -n $key_source && $key_source != - && ! -r $key_source ]]; then
    die "--key-file $key_source: no such readable file"
  fi
  KEY_READY=0
  install_packages
  create_user
  install_venv
  install_command
  install_config
  install_key "$key_source"
  install_unit
  start_service
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  install_main "$@"
fi
