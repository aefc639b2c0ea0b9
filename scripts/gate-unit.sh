#!/usr/bin/env bash
# Unit tests (pytest) of module_utils, modules and filters.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q -p no:cacheprovider tests/unit "$@"
