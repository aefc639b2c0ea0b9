#!/usr/bin/env bash
# Run every quality gate of `make test`, even after a failure, then print a
# summary and fail when any gate failed. Gates: lint, sanity, unit, then each
# Molecule scenario (scripts/gate-molecule.sh writes per-scenario results).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
start=$SECONDS
# Plain output in logs (CI): no colour codes from ansible, molecule or pytest.
if [[ ! -t 1 ]]; then
  export NO_COLOR=1 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 TERM=dumb
fi
results=()
failed=0
passed=0

gate() {
  local name=$1; shift
  local t0=$SECONDS
  echo
  echo "==================== gate: $name ===================="
  if "$@"; then
    results+=("$name: passed ($((SECONDS - t0)) s)"); passed=$((passed + 1))
  else
    results+=("$name: FAILED ($((SECONDS - t0)) s)"); failed=$((failed + 1))
  fi
}

gate lint scripts/gate-lint.sh
gate sanity scripts/gate-sanity.sh
gate unit scripts/gate-unit.sh

summary_file=$(mktemp)
echo
echo "==================== gate: molecule ===================="
if scripts/ensure-docker.sh && scripts/build-base-image.sh 12 && scripts/build-base-image.sh 13; then
  MOLECULE_SUMMARY="$summary_file" scripts/gate-molecule.sh || true
  while IFS=$'\t' read -r scenario status seconds; do
    if [[ $status == passed ]]; then
      results+=("molecule $scenario: passed ($seconds s)"); passed=$((passed + 1))
    else
      results+=("molecule $scenario: FAILED ($seconds s)"); failed=$((failed + 1))
    fi
  done <"$summary_file"
else
  results+=("molecule: FAILED (no Docker engine or base image)"); failed=$((failed + 1))
fi
rm -f "$summary_file"

total=$((SECONDS - start))
echo
echo "==================== summary ===================="
printf '  %s\n' "${results[@]}"
printf '  total time: %dm%02ds\n' $((total / 60)) $((total % 60))
echo "gates: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
