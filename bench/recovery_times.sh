#!/usr/bin/env bash
# Recovery times of the hardening role's units under faults, measured with
# molecule/resources/chaos.py inside a converged container of the Molecule
# scenario `hardening` (the tests only check the mechanism with wide bounds):
#
#   molecule converge -s hardening
#   bench/recovery_times.sh [CONTAINER] [REPEATS]
#
# Prints Markdown rows: fault, unit, min / median / max seconds from the fault
# to "active again with a new main PID" (after READY=1). Run it on an idle machine.
set -euo pipefail
container=${1:-prodready-hardening-debian12}
repeats=${2:-3}
measure() {  # label unit chaos-args...
  local label=$1 unit=$2; shift 2
  local times=()
  for _ in $(seq "$repeats"); do
    # Wait for the unit to be healthy and out of its start-limit window.
    sleep 3
    times+=("$(docker exec "$container" python3 /usr/local/bin/chaos.py "$unit" "$@" \
      | python3 -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["seconds"])')")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v l="$label" -v u="$unit" \
    '{a[NR]=$1} END {printf "| %s | %s | %.1f | %.1f | %.1f |\n", l, u, a[1], a[int((NR+1)/2)], a[NR]}'
}
echo "| fault | unit | min s | median s | max s |"
echo "|---|---|---|---|---|"
measure 'kill -9 (RestartSec=1)' sample-py kill
measure 'kill -9 (RestartSec=1)' sample-node kill
measure 'SIGSTOP, native watchdog (WatchdogSec=10)' sample-py stop
measure 'SIGSTOP, watchdog helper (WatchdogSec=10)' sample-node stop
measure 'SIGSTOP of the app under the helper' sample-node stop --child
