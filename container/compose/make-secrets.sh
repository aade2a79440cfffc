#!/usr/bin/env bash
# Generates the secrets of container/compose.yaml, each a random value in its own file, into
# DIR (default: the secrets/ directory beside this script, which git ignores). Run it once
# before the first `docker compose up`; it never overwrites: a database initialised with one
# password would refuse a new one.
#
#   container/compose/make-secrets.sh [DIR]
#
# Files and who reads them (modes: the database runs as uid 999 and pgkeep as uid 10001, so
# their files are world-readable, inside a directory only you may enter; Garage refuses a
# readable RPC secret):
#   backup-password, app-password, catalog-password   the database's roles (and pgkeep's)
#   s3-credentials   pgkeep's S3 key, an AWS shared credentials file (AWS_SHARED_CREDENTIALS_FILE)
#   garage-rpc-secret   Garage's RPC secret (GARAGE_RPC_SECRET_FILE)
#   garage.env       Garage's default key and bucket (GARAGE_DEFAULT_*), the same key: Garage
#                    reads them only from its environment
set -euo pipefail
umask 077

dir="${1:-$(dirname "$0")/secrets}"
files=(backup-password app-password catalog-password s3-credentials garage-rpc-secret garage.env)
for f in "${files[@]}"; do
  if [ -e "$dir/$f" ]; then
    echo "make-secrets: $dir/$f exists: not overwriting any secret (remove $dir to start over)" >&2
    exit 1
  fi
done
command -v openssl >/dev/null || { echo "make-secrets: openssl is needed" >&2; exit 1; }

mkdir -p "$dir"
chmod 0700 "$dir"
hex() { openssl rand -hex "$1"; }

for role in backup app catalog; do
  hex 24 >"$dir/$role-password"
  chmod 0644 "$dir/$role-password"
done
hex 32 >"$dir/garage-rpc-secret"
chmod 0600 "$dir/garage-rpc-secret"

key_id="GK$(hex 12)"
secret_key="$(hex 32)"
{
  echo "[default]"
  echo "aws_access_key_id = $key_id"
  echo "aws_secret_access_key = $secret_key"
} >"$dir/s3-credentials"
chmod 0644 "$dir/s3-credentials"
{
  echo "GARAGE_DEFAULT_ACCESS_KEY=$key_id"
  echo "GARAGE_DEFAULT_SECRET_KEY=$secret_key"
  echo "GARAGE_DEFAULT_BUCKET=pgkeep"
} >"$dir/garage.env"
chmod 0600 "$dir/garage.env"

echo "make-secrets: wrote ${files[*]} in $dir"
