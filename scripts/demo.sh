#!/usr/bin/env bash
# `make demo`: converge playbooks/site.yml on a long-lived local container
# `prodready-demo` (Debian 12, systemd as PID 1), then report what runs there.
# Run it again: it converges with zero changes. `make demo-clean` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
name=prodready-demo
image=local/prodready-debian:12

# A container from an older recipe (without NET_ADMIN, which the firewall
# needs) is replaced: it only holds the demo.
if docker container inspect "$name" >/dev/null 2>&1 &&
  [[ $(docker container inspect -f '{{.HostConfig.CapAdd}}' "$name") != *DAC_READ_SEARCH* ]]; then
  echo "==> replacing $name (created by an older demo without NET_ADMIN or DAC_READ_SEARCH)"
  docker rm -f "$name" >/dev/null
fi
if ! docker container inspect "$name" >/dev/null 2>&1; then
  echo "==> starting container $name from $image"
  docker run -d --name "$name" --hostname "$name" \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add DAC_READ_SEARCH --cgroupns host \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    "$image" /lib/systemd/systemd >/dev/null
elif [[ $(docker container inspect -f '{{.State.Running}}' "$name") != true ]]; then
  echo "==> starting the stopped container $name"
  docker start "$name" >/dev/null
else
  echo "==> reusing the running container $name"
fi
docker exec "$name" systemctl is-system-running --wait >/dev/null 2>&1 || true

echo "==> installing the sample app (the demo's service) into $name"
docker exec "$name" mkdir -p /opt/prodready-sample
docker cp sample-apps/python/prodready_sample_app.py "$name":/opt/prodready-sample/prodready_sample_app.py

echo "==> converging playbooks/site.yml on $name (inventory/demo)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! ANSIBLE_DISPLAY_SKIPPED_HOSTS=false ansible-playbook -i inventory/demo playbooks/site.yml | tee "$log"; then
  echo "demo: the converge failed; see the output above" >&2
  exit 1
fi
recap=$(grep -E "^$name +:" "$log" | tail -1)
changed=$(sed -E 's/.*changed=([0-9]+).*/\1/' <<<"$recap")

echo
echo "==================== prodready demo: $name ===================="
docker exec "$name" bash -c '
  echo "Managed units:"
  systemctl list-units --all --no-legend --plain "prodready-*" | awk "{printf \"  %-40s %s/%s\n\", \$1, \$3, \$4}"
  echo "Service demo-api: $(systemctl is-active demo-api), $(systemd-analyze security demo-api 2>/dev/null | grep -o "exposure level.*")"
  python3 -c "import urllib.request as u; print(\"  /health:\", u.build_opener(u.ProxyHandler({})).open(\"http://127.0.0.1:8000/health\", timeout=5).read().decode())" || true
  echo "PgBouncer: $(systemctl is-active pgbouncer), $(systemd-analyze security pgbouncer 2>/dev/null | grep -o "exposure level.*")"
  echo "  through 127.0.0.1:6432: $(PGPASSWORD=demo-password-change-me psql -XAtq -h 127.0.0.1 -p 6432 -U demo -d demo -F" " -c "SELECT current_user, current_database(), split_part(version(), chr(32), 2)" 2>&1 | cut -c1-80) (user, database, PostgreSQL)"
  echo "Log rotation (/etc/logrotate.d/prodready-*):"
  for f in /etc/logrotate.d/prodready-*; do [ -e "$f" ] && echo "  $(basename "$f"): $(grep -m1 "{" "$f" | sed "s/ {//")"; done
  echo "logrotate.timer: $(systemctl show -p TimersCalendar --value logrotate.timer | sed "s/.*OnCalendar=\([^;]*\) ;.*/\1/")"
  echo "Disk guard metrics:"
  grep -E "^prodready_filesystem_(used|inodes_used)_ratio" /var/lib/prometheus/node-exporter/prodready_diskguard.prom 2>/dev/null | sed "s/^/  /"
'
echo "Converge: changed=$changed (run make demo again: it converges with changed=0)"
echo "Remove it with: make demo-clean"

# The production readiness checklist of the demo host (docs/checklist.md). It
# reports what a demo leaves out on purpose (no backups configured, no alert
# receiver...), so its failures do not fail the demo.
echo
echo "==> production readiness checklist of $name (playbooks/checklist.yml)"
if ! ANSIBLE_DISPLAY_SKIPPED_HOSTS=false ANSIBLE_CALLBACK_RESULT_FORMAT=yaml \
  ansible-playbook -i inventory/demo playbooks/checklist.yml; then
  echo "The checklist found critical issues on $name (above); on a real host, fix them or run it with -e checklist_fix=true."
fi
