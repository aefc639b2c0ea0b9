#!/usr/bin/env bash
# Unit tests (pytest) of module_utils, modules and filters.
set -euo pipefail
cd "$(dirname "$0")/.."
# The age interop tests compare with the reference `age` tool (Debian package).
if ! command -v age >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the reference age tool for the interop tests"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null 2>&1; } \
    || echo "could not install age; its interop tests will be skipped"
fi
python -m pytest -q -p no:cacheprovider tests/unit "$@"
