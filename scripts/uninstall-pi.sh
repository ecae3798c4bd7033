#!/usr/bin/env bash
# Undo scripts/install-pi.sh: stop and remove the service, the venv (and the wheels built
# for it), the command and the system user. Keeps /etc/live-appliance (config, API key),
# the saved state and the owner's drop-ins for the service unless --purge. Keeps the apt
# packages: other software may use them. Idempotent.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=install-pi.sh
source "$(dirname "${BASH_SOURCE[0]}")/install-pi.sh"
# The unit's RuntimeDirectory=, which systemd keeps when it stops (its lock and socket).
readonly RUNTIME_DIR=/run/live-appliance
# After a step that failed: what finishes the uninstall.
readonly AGAIN_GONE="; fix that and run this script again: it removes what is left"

usage() {
  cat <<EOF
Usage: sudo scripts/uninstall-pi.sh [--purge] [--dry-run]

Undo scripts/install-pi.sh: stop and remove
  - the service $UNIT_NAME (and its ${RETRY_UNITS[*]})
  - the command $COMMAND_LINK and the venv in $PREFIX
  - the system user $APP
Kept unless --purge: $CONF_DIR (your config and API key),
$STATE_DIR and your changes to the service ($UNIT_FILE.d).
The apt packages are kept.

  --purge     also remove $CONF_DIR, $STATE_DIR and $UNIT_FILE.d
  --dry-run   print every step and command, change nothing (no root needed)
  -h, --help  this text
EOF
}

remove_service() {
  step "service $UNIT_NAME"
  if [[ -e $UNIT_FILE ]]; then
    # The retry timer first: it must not start the service again while it goes.
    if [[ -e $UNIT_DIR/${RETRY_UNITS[0]} ]]; then
      run systemctl stop "${RETRY_UNITS[@]}" ||
        die "the retry timer could not be stopped: systemctl says why above$AGAIN_GONE"
    fi
    run systemctl disable --now "$UNIT_NAME" ||
      die "$UNIT_NAME could not be stopped: systemctl says why above$AGAIN_GONE"
    run rm -rf "$RUNTIME_DIR"
    run rm -f "$UNIT_FILE" "${RETRY_UNITS[@]/#/$UNIT_DIR/}"
    run systemctl daemon-reload
    # Forget a failed state, so `systemctl --failed` does not list a unit that is gone.
    run systemctl reset-failed "$UNIT_NAME" "${RETRY_UNITS[@]}" 2>/dev/null || true
  else
    say "  not installed"
  fi
}

remove_command() {
  step "command $COMMAND_LINK"
  # Only the link the installer made: never someone else's program of the same name.
  if our_command; then
    run rm -f "$COMMAND_LINK"
  else
    say "  not installed"
  fi
}

remove_venv() {
  step "Python environment $PREFIX"
  if [[ -e $PREFIX || -e $OLD_WHEEL_CACHE ]]; then
    run rm -rf "$PREFIX" "$OLD_WHEEL_CACHE"
  else
    say "  not installed"
  fi
}

remove_user() {
  step "system user $APP"
  # The owners the installer put in the group leave it first: userdel then takes the
  # group with the user, where it said "not removed because it has other members" in
  # the middle of an uninstall that went well.
  if [[ -n $(getent group "$APP" | cut -d: -f4) ]]; then
    run gpasswd -M "" "$APP" ||
      die "the owners could not be taken out of group $APP: gpasswd says why above$AGAIN_GONE"
  fi
  if id -u "$APP" >/dev/null 2>&1; then
    run userdel "$APP" ||
      die "the system user $APP could not be removed: userdel says why above$AGAIN_GONE"
  else
    say "  no user $APP"
  fi
  # And a group userdel leaves (no user of its name, or USERGROUPS_ENAB off).
  if getent group "$APP" >/dev/null; then
    run groupdel "$APP" ||
      die "the group $APP could not be removed: groupdel says why above$AGAIN_GONE"
  fi
}

remove_config() {
  local purge=$1 drop_ins=$UNIT_FILE.d dir
  step "configuration $CONF_DIR and state $STATE_DIR"
  if ((purge)); then
    run rm -rf "$CONF_DIR" "$STATE_DIR"
    # The owner's changes to the service (systemctl edit) go with the rest.
    [[ -e $drop_ins ]] && run rm -rf "$drop_ins"
  else
    say "  keeping $CONF_DIR (config.toml, api-key) and $STATE_DIR; --purge removes them"
    # What the user and group just removed owned would go to the next system user or
    # group made with their numbers, and the config with it: root's now. A reinstall
    # gives the service's group back to what it reads (install_config).
    local kept=()
    for dir in "$CONF_DIR" "$STATE_DIR"; do
      [[ -e $dir ]] && kept+=("$dir")
    done
    if ((${#kept[@]})); then
      run find "${kept[@]}" "(" -nouser -o -nogroup ")" -exec chown -h root:root "{}" +
    fi
    [[ -e $drop_ins ]] && say "  keeping your changes to the service in $drop_ins"
  fi
  return 0
}

uninstall_main() {
  local purge=0
  while (($#)); do
    case $1 in
      --dry-run) DRY_RUN=1 ;;
      --purge) purge=1 ;;
      -h | --help) usage; exit 0 ;;
      *) usage_error "unknown option: $1" ;;
    esac
    shift
  done
  ((DRY_RUN)) && say "dry run: printing what would be done; nothing is changed"
  step "checking this system"
  check_os
  check_root
  check_card
  remove_service
  remove_command
  remove_venv
  remove_user
  remove_config "$purge"
  say "Apt packages are kept (apt remove them by hand if nothing else needs them), and so"
  say "are the device groups (${DEVICE_GROUPS[*]}): other software may use them."
}

uninstall_main "$@"
