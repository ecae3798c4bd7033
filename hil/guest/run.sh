#!/bin/bash
# On the run disk: started in the VM at every boot by hil-run.service, as root. Runs
# the HIL tests of this phase (1; 2 after the reboot the tests ask for), leaves their
# reports in results/ on the run disk, then reboots or powers the VM off.
set -u
RUN=/srv/hil-run
for _ in $(seq 200); do [[ -e /dev/hvc0 ]] && break; sleep 0.1; done
out=/dev/hvc0
[[ -e $out ]] || out=/dev/console
phase=$(cat "$RUN/phase")
exec > >(tee -a "$RUN/results/output-phase$phase.txt" >"$out") 2>&1

echo "hil: VM up ($(uname -m), $(sed -n "s/^PRETTY_NAME=//p" /etc/os-release), kernel $(uname -r)); phase $phase"
echo "hil: boot: $(systemctl is-system-running --wait), $(cut -d' ' -f1 /proc/uptime) s since the kernel started"
if [[ $phase == 1 ]]; then
  marker="not after_reboot"
else
  marker="after_reboot"
fi
mapfile -t args < <(grep -v '^$' "$RUN/pytest-args")
cd "$RUN/src" || exit 1
export LIVE_APPLIANCE_HIL=vm HIL_RESULTS="$RUN/results" HIL_PHASE=$phase PYTHONUNBUFFERED=1
/opt/hil/venv/bin/python -m pytest -c tests/hil/pytest.ini --rootdir tests/hil \
  -s -p no:cacheprovider -m "$marker" --durations=0 --durations-min=5 \
  --junitxml="$RUN/results/junit-phase$phase.xml" \
  ${args[@]+"${args[@]}"} tests/hil
rc=$?
# No test of this phase selected (pytest's 5) is no failure of this phase.
((rc == 5)) && rc=0
echo "$rc" >"$RUN/results/rc-phase$phase"
journalctl -b --no-pager -o short-monotonic >"$RUN/results/journal-phase$phase.txt" 2>&1
systemd-analyze blame --no-pager >"$RUN/results/boot-blame-phase$phase.txt" 2>&1

if [[ $phase == 1 && -e $RUN/results/reboot-requested ]]; then
  echo 2 >"$RUN/phase"
  echo "hil: phase 1: exit status $rc; rebooting for phase 2"
  sync
  systemctl reboot
  exit 0
fi
total=0
for file in "$RUN"/results/rc-phase*; do
  (($(cat "$file") != 0)) && total=1
done
echo "$total" >"$RUN/results/rc"
echo "hil: done, exit status $total"
sync
systemctl poweroff
