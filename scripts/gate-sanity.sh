#!/usr/bin/env bash
# ansible-test sanity on the collection. ansible-test needs the collection at
# .../ansible_collections/prodready/vps, so the tracked and new (not ignored)
# files are copied there first.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.build/sanity/ansible_collections/prodready/vps
rm -rf .build/sanity
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard \
  | grep -zv -e '^\.collections/' -e '^\.venv' \
  | while IFS= read -r -d '' f; do [[ -f $f && ! -L $f ]] && printf '%s\0' "$f"; done \
  | xargs -0 cp --parents -t "$dest"
# ansible-test bootstraps pip in its venvs with a script it downloads from a host
# that sandboxed CI cannot reach; give it an offline equivalent.
cache=~/.ansible/test/cache
mkdir -p "$cache"
for v in 24.2 24.3 25.0 25.1 25.2; do  # pip versions ansible-test 2.17-2.20 pin
  cmp -s scripts/offline-get-pip.py "$cache/get_pip_${v//./_}.py" || cp scripts/offline-get-pip.py "$cache/get_pip_${v//./_}.py"
done
# The shellcheck sanity test is skipped silently when shellcheck is missing.
if ! command -v shellcheck >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1; } \
    || echo "could not install shellcheck; ansible-test will skip that test"
fi
cd "$dest"
git init -q && git add -A >/dev/null
ansible-test sanity --venv --python 3.11 --color no "$@"
