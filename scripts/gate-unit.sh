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
# The monitoring role's alert-rule tests (promtool test rules) need promtool,
# which Debian ships in the prometheus package: only the binary is unpacked
# into .build/tools (no daemon installed or started); PROMTOOL points at it.
promtool_local=.build/tools/usr/bin/promtool
if ! command -v promtool >/dev/null 2>&1 && [[ ! -x $promtool_local ]] && command -v apt-get >/dev/null 2>&1; then
  echo "unpacking promtool from Debian's prometheus package for the alert-rule tests"
  (
    mkdir -p .build/tools && cd .build/tools && rm -f prometheus_*.deb \
      && { apt-get download prometheus >/dev/null 2>&1 \
           || { [[ $(id -u) -eq 0 ]] && apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; } \
      && dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool && rm -f prometheus_*.deb
  ) || echo "could not unpack promtool; the promtool rule tests will be skipped"
fi
if command -v promtool >/dev/null 2>&1; then
  PROMTOOL=$(command -v promtool)
  export PROMTOOL
elif [[ -x $promtool_local ]]; then
  export PROMTOOL=$PWD/$promtool_local
fi
python -m pytest -q -p no:cacheprovider tests/unit "$@"
