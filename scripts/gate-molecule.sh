#!/usr/bin/env bash
# Run `molecule test` for the given scenarios (default: all under molecule/)
# and record "<scenario>\t<passed|failed>\t<seconds>" lines in
# $MOLECULE_SUMMARY when set. Exit 1 when any scenario failed.
#
# Scenarios run $MOLECULE_JOBS at a time (default 3: they mostly wait on apt,
# systemd and the services under test, and their container names differ),
# longest first; each one's output is kept in a log and printed whole when it
# ends. A scenario that cannot share the machine (molecule/<name>/.run-alone)
# runs afterwards, alone. No test asserts speed: bench/ measures that.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if [[ $# -gt 0 ]]; then
  scenarios=("$@")
else
  # Longest first, so the last one to start does not end long after the others.
  longest_first=(default hardening backup monitoring logrotate rollback pgbouncer)
  mapfile -t found < <(for f in molecule/*/molecule.yml; do basename "$(dirname "$f")"; done | sort)
  scenarios=()
  for s in "${longest_first[@]}"; do [[ " ${found[*]} " == *" $s "* ]] && scenarios+=("$s"); done
  for s in "${found[@]}"; do [[ " ${longest_first[*]} " == *" $s "* ]] || scenarios+=("$s"); done
fi
# Mitogen's strategy (requirements/dev.txt) runs each container's tasks in one
# persistent Python instead of a `docker exec` and a fresh interpreter per
# task: converges several times faster. PRODREADY_MITOGEN=0 turns it off.
if [[ ${PRODREADY_MITOGEN:-1} != 0 ]] && strategy_dir=$(python -c \
    'import os, ansible_mitogen.plugins.strategy as s; print(os.path.dirname(s.__file__))' 2>/dev/null); then
  export ANSIBLE_STRATEGY_PLUGINS=$strategy_dir ANSIBLE_STRATEGY=${ANSIBLE_STRATEGY:-mitogen_linear}
  echo "molecule: Ansible strategy $ANSIBLE_STRATEGY"
fi
summary=${MOLECULE_SUMMARY:-/dev/null}
jobs=${MOLECULE_JOBS:-3}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run_one() {  # scenario [stream] -> exit status; output in $logs/<scenario>.log
  local scenario=$1 stream=${2:-} t0=$SECONDS status=passed
  if [[ -n $stream ]]; then
    molecule test -s "$scenario" 2>&1 | tee "$logs/$scenario.log" || status=failed
  else
    molecule test -s "$scenario" >"$logs/$scenario.log" 2>&1 || status=failed
  fi
  printf '%s\t%s\t%d\n' "$scenario" "$status" $((SECONDS - t0)) >"$logs/$scenario.result"
  [[ $status == passed ]]
}

report() {  # scenario [quiet]: print its log (unless streamed already) and record its result
  local scenario=$1
  if [[ -z ${2:-} ]]; then
    echo "---- molecule test -s $scenario"
    cat "$logs/$scenario.log"
  fi
  cat "$logs/$scenario.result" >>"$summary"
  echo "---- $(cut -f1,2 "$logs/$scenario.result" | tr '\t' ' ') ($(cut -f3 "$logs/$scenario.result") s)"
}

shared=() alone=()
for scenario in "${scenarios[@]}"; do
  if [[ -e molecule/$scenario/.run-alone ]]; then alone+=("$scenario"); else shared+=("$scenario"); fi
done

rc=0
running=()
for scenario in "${shared[@]}"; do
  while [[ ${#running[@]} -ge $jobs ]]; do
    wait -n || true
    still=()
    for s in "${running[@]}"; do
      if [[ -e $logs/$s.result ]]; then report "$s"; grep -q $'\tpassed\t' "$logs/$s.result" || rc=1
      else still+=("$s"); fi
    done
    running=("${still[@]}")
  done
  echo "---- starting molecule test -s $scenario"
  run_one "$scenario" &
  running+=("$scenario")
done
wait
for s in "${running[@]}"; do
  report "$s"; grep -q $'\tpassed\t' "$logs/$s.result" || rc=1
done

for scenario in "${alone[@]}"; do
  echo "---- starting molecule test -s $scenario (alone)"
  run_one "$scenario" stream || true
  report "$scenario" quiet; grep -q $'\tpassed\t' "$logs/$scenario.result" || rc=1
done
exit $rc
