#!/usr/bin/env bash
# Makes a Debian 12 base image available to podman without a registry (idempotent; as root):
# `debootstrap --variant=minbase bookworm` from the configured Debian mirror, imported as
# IMAGE (default localhost/debian:bookworm). The root filesystem is cached as a tarball in
# $PGKEEP_CONTAINER_CACHE (default /var/cache/pgkeep-test) and rebuilt when older than
# $PGKEEP_BASE_MAX_AGE_DAYS (default 30) days, so the ~25 s debootstrap runs about once a month
# per machine and a re-import (~3 s) only when the image is missing. Concurrent callers are
# serialized with a lock file. Used by tests/suite/packaging.rs; see docs/INSTALL.md.
#
# Usage: scripts/container-base-image.sh [IMAGE]
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), CONTAINERS_CONF.
set -euo pipefail

image="${1:-localhost/debian:bookworm}"
cache="${PGKEEP_CONTAINER_CACHE:-/var/cache/pgkeep-test}"
max_age_days="${PGKEEP_BASE_MAX_AGE_DAYS:-30}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Bump when the recipe below changes: a new name makes every machine rebuild.
tarball="$cache/debian-bookworm-minbase-v1.tar"

for tool in podman debootstrap flock; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is not installed" >&2; exit 1; }
done
mkdir -p "$cache"
exec 9>"$cache/base-image.lock"
flock 9

fresh=""
if [ -s "$tarball" ] && [ -z "$(find "$tarball" -mtime "+$max_age_days")" ]; then
  fresh=yes
fi

if [ -z "$fresh" ]; then
  rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs" "$tarball.tmp"' EXIT
  start=$SECONDS
  echo "debootstrap bookworm (minbase) from $mirror ..." >&2
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1; then
    tail -n 30 "$cache/debootstrap.log" >&2
    exit 1
  fi
  # What a build step re-downloads anyway.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  trap - EXIT
  echo "debootstrap + tar: $((SECONDS - start)) s" >&2
fi

# Re-import when the tarball is newer than the image (or there is no image).
stamp="$cache/imported-$(printf '%s' "$image" | tr -c 'A-Za-z0-9._-' '_')"
if [ -z "$fresh" ] || ! podman image exists "$image" || [ ! -e "$stamp" ] || [ "$tarball" -nt "$stamp" ]; then
  start=$SECONDS
  podman import --quiet "$tarball" "$image" >/dev/null
  touch "$stamp"
  echo "imported $image: $((SECONDS - start)) s" >&2
fi
echo "$image"
