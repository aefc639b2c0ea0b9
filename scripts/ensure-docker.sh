#!/usr/bin/env bash
# Make sure a Docker engine answers. A running engine is left alone; otherwise
# install docker.io (Debian/Ubuntu) when it is missing and start dockerd in the
# background, then wait until it answers.
set -euo pipefail

log=/var/log/prodready-dockerd.log
if docker info >/dev/null 2>&1; then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "ensure-docker: the Docker engine does not answer and starting it needs root;" >&2
  echo "  start it yourself (sudo systemctl start docker) or rerun as root." >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-docker: no Docker engine and no apt-get to install one; install Docker and rerun." >&2
    exit 1
  fi
  echo "ensure-docker: installing docker.io from the distribution's packages..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq docker.io >/dev/null
fi

# A systemd host starts it as a service; elsewhere (containers, CI sandboxes)
# run dockerd in the background.
if [[ -d /run/systemd/system ]] && systemctl start docker >/dev/null 2>&1; then
  :
else
  echo "ensure-docker: starting dockerd in the background (log: $log)"
  nohup dockerd >"$log" 2>&1 &
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "ensure-docker: engine is up ($(docker version --format '{{.Server.Version}}'))"
    exit 0
  fi
  sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
