#!/usr/bin/env bash
# Static gates: ansible-lint (production profile, zero findings), role
# argument_specs equal to defaults, changelog fragments.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
rc=0
echo "--- ansible-lint (production profile)"
ansible-lint --profile production --strict || rc=1
echo "--- argument_specs equal to defaults"
python scripts/check_argument_specs.py roles/*/ || rc=1
echo "--- changelog fragments"
antsibull-changelog lint || rc=1
exit $rc
