#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (idempotent): PostgreSQL 15 server binaries
# and contrib extensions, openssl, and Garage 2.5.0 (a real S3-compatible store, built with cargo).
set -euo pipefail

export PATH="$HOME/.cargo/bin:$PATH"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
[ -f /usr/share/postgresql/15/extension/hstore.control ] || missing+=(postgresql-15)
command -v openssl >/dev/null || missing+=(openssl)
command -v gunzip >/dev/null || missing+=(gzip)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! garage --version 2>/dev/null | grep -q '2\.5\.0'; then
  echo "building garage 2.5.0 (about 10 minutes, once)"
  cargo install garage --locked --version 2.5.0
fi
garage --version | head -1
