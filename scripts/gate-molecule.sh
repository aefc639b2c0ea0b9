#!/usr/bin/env bash
# Run `molecule test` for the given scenarios (default: all under molecule/),
# one after another, and record "<scenario>\t<passed|failed>\t<seconds>" lines
# in $MOLECULE_SUMMARY when set. Exit 1 when any scenario failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if [[ $# -gt 0 ]]; then
  scenarios=("$@")
else
  mapfile -t scenarios < <(for f in molecule/*/molecule.yml; do basename "$(dirname "$f")"; done | sort)
fi
summary=${MOLECULE_SUMMARY:-/dev/null}
rc=0
for scenario in "${scenarios[@]}"; do
  t0=$SECONDS
  echo "---- molecule test -s $scenario"
  if molecule test -s "$scenario"; then
    printf '%s\tpassed\t%d\n' "$scenario" $((SECONDS - t0)) >>"$summary"
  else
    printf '%s\tfailed\t%d\n' "$scenario" $((SECONDS - t0)) >>"$summary"
    rc=1
  fi
done
exit $rc
