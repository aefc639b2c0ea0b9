#!/usr/bin/env bash
# Build the Molecule/demo base image local/prodready-debian:<version> with
# debootstrap (minbase + systemd) and import it into the local Docker engine.
# The image carries a label with the hash of its recipe (this file); it is
# rebuilt only when the recipe changes.
#
# Usage: scripts/build-base-image.sh 12|13 [--force]
set -euo pipefail

version="${1:?usage: $0 12|13 [--force]}"
force="${2:-}"
case "$version" in
  12) suite=bookworm ;;
  13) suite=trixie ;;
  *) echo "build-base-image: unsupported Debian version '$version' (use 12 or 13)" >&2; exit 2 ;;
esac

mirror="${PRODREADY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
image="local/prodready-debian:${version}"
packages="systemd,systemd-sysv,python3,python3-apt,sudo,procps,iproute2,ca-certificates,dbus"
# Everything done to the bootstrapped tree. Its text is part of the recipe hash.
customize() {
  local root=$1
  # Container-friendly systemd: no getty, no units that need real hardware.
  chroot "$root" systemctl mask getty.target console-getty.service \
    systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
    systemd-firstboot.service sys-kernel-config.mount >/dev/null 2>&1 || true
  chroot "$root" systemctl set-default multi-user.target >/dev/null 2>&1 || true
  # apt inside tests uses the same mirror; drop caches and lists to keep the image small.
  echo "deb $mirror $suite main" > "$root/etc/apt/sources.list"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/var/lib/apt/periodic/update-success-stamp
  # Look like a host whose package lists are old, so `cache_valid_time` updates.
  touch -d '2000-01-01' "$root"/var/lib/apt/lists "$root"/var/lib/apt "$root"/var/cache/apt
  : > "$root/etc/machine-id"
}

# The recipe hash covers the suite, mirror, package list and customize():
# any change to them rebuilds the image; other edits to this script do not.
recipe_hash="$( { echo "$suite $mirror $packages"; declare -f customize; } | sha256sum | cut -c1-16)"

current="$(docker image inspect --format '{{ index .Config.Labels "org.prodready.recipe" }}' "$image" 2>/dev/null || true)"
if [[ "$current" == "$recipe_hash" && "$force" != "--force" ]]; then
  echo "base image $image is up to date (recipe $recipe_hash)"
  exit 0
fi

command -v debootstrap >/dev/null || {
  echo "build-base-image: installing debootstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq debootstrap >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq debootstrap >/dev/null; }
}

rootfs="$(mktemp -d /var/tmp/prodready-rootfs.XXXXXX)"
cleanup() { rm -rf --one-file-system "$rootfs"; }
trap cleanup EXIT

echo "building $image from Debian $suite (recipe $recipe_hash), about a minute..."
start=$SECONDS
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
  echo "build-base-image: debootstrap of $suite failed; last lines of $rootfs.log:" >&2
  tail -n 20 "$rootfs.log" >&2
  exit 1
fi
rm -f "$rootfs.log"

customize "$rootfs"

tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=docker' \
  --change "LABEL org.prodready.recipe=$recipe_hash" \
  --change "LABEL org.prodready.suite=$suite" \
  - "$image" >/dev/null
echo "built $image in $((SECONDS - start)) s"
