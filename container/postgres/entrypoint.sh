#!/usr/bin/env bash
# Entrypoint of container/postgres (see docs/DATABASE.md, "The PostgreSQL container").
#
# At first start (an empty PGDATA): initdb (UTF-8, data checksums), the include of
# /etc/pgkeep-postgres/postgresql.conf, pg_stat_statements in the `postgres` database, the
# backup role (pg_read_all_data), optionally an application role and database and pgkeep's
# catalog database and role, then /docker-entrypoint-initdb.d/*.sql and *.sh. At every
# start: the TLS certificate (mounted ones copied into PGDATA, or a self-signed one generated
# once), its public copy in TLS_EXPORT_DIR, then `exec postgres`.
#
# Environment (secrets only ever through files, never in the environment or on a command line):
#   BACKUP_PASSWORD_FILE  required at first start: the backup role's password
#   BACKUP_ROLE           the backup role's name (default pgkeep_backup)
#   POSTGRES_DB           a database to create at first start (optional)
#   APP_ROLE, APP_PASSWORD_FILE  a LOGIN role owning POSTGRES_DB, with CREATEDB (optional)
#   CATALOG_PASSWORD_FILE a file holding the password of pgkeep's catalog role; set, the
#                         catalog database and its owner are created (optional)
#   CATALOG_DB, CATALOG_ROLE     their names (default pgkeep, pgkeep_catalog)
#   TLS_CERT_FILE, TLS_KEY_FILE  a certificate (chain) and its key to use (optional)
#   TLS_HOSTNAMES         names and addresses for a generated certificate
#                         (default "localhost,127.0.0.1"; comma-separated)
#   TLS_EXPORT_DIR        where server.crt is copied for clients (default /var/lib/postgresql/tls)
#   POSTGRES_INITDB_ARGS  more initdb options
set -Eeuo pipefail
umask 077

log() { printf 'pgkeep-postgres: %s\n' "$*" >&2; }
die() { printf 'pgkeep-postgres: error: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" != postgres ]; then
  exec "$@"
fi
[ "$(id -u)" != 0 ] || die "refusing to run as root: run the image as its user postgres (uid 999)"

: "${PGDATA:?PGDATA must be set}"
BACKUP_ROLE="${BACKUP_ROLE:-pgkeep_backup}"
CATALOG_DB="${CATALOG_DB:-pgkeep}"
CATALOG_ROLE="${CATALOG_ROLE:-pgkeep_catalog}"
TLS_EXPORT_DIR="${TLS_EXPORT_DIR:-/var/lib/postgresql/tls}"
export BACKUP_ROLE CATALOG_DB CATALOG_ROLE

# A secret file: it must exist, be readable and hold something besides a trailing newline.
check_secret() {
  local var="$1" path="${!1:-}"
  [ -n "$path" ] || die "$var is not set: name a file holding the password (a Compose or Kubernetes secret)"
  [ -r "$path" ] || die "$var=$path: the file is missing or not readable by uid $(id -u)"
  [ -n "$(tr -d '\r\n' <"$path")" ] || die "$var=$path: the file is empty"
}

valid_role_name() {
  [[ "$1" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "$2='$1' is not a valid name (lower-case letters, digits and _, up to 63)"
}

tls_setup() {
  local cert="$PGDATA/server.crt" key="$PGDATA/server.key"
  if [ -n "${TLS_CERT_FILE:-}" ] || [ -n "${TLS_KEY_FILE:-}" ]; then
    [ -n "${TLS_CERT_FILE:-}" ] && [ -n "${TLS_KEY_FILE:-}" ] \
      || die "TLS_CERT_FILE and TLS_KEY_FILE go together: set both, or neither to generate a certificate"
    [ -r "$TLS_CERT_FILE" ] || die "TLS_CERT_FILE=$TLS_CERT_FILE: missing or not readable by uid $(id -u)"
    [ -r "$TLS_KEY_FILE" ] || die "TLS_KEY_FILE=$TLS_KEY_FILE: missing or not readable by uid $(id -u)"
    local cert_pub key_pub
    cert_pub="$(openssl x509 -in "$TLS_CERT_FILE" -noout -pubkey 2>/dev/null)" \
      || die "TLS_CERT_FILE=$TLS_CERT_FILE: not a PEM certificate"
    key_pub="$(openssl pkey -in "$TLS_KEY_FILE" -pubout 2>/dev/null)" \
      || die "TLS_KEY_FILE=$TLS_KEY_FILE: not an unencrypted PEM private key"
    [ "$cert_pub" = "$key_pub" ] || die "TLS_KEY_FILE=$TLS_KEY_FILE is not the key of TLS_CERT_FILE=$TLS_CERT_FILE"
    # PostgreSQL wants the key private to its owner; mounted secrets rarely are.
    install -m 0600 "$TLS_KEY_FILE" "$key"
    install -m 0644 "$TLS_CERT_FILE" "$cert"
    log "TLS: using the mounted certificate $TLS_CERT_FILE"
  elif [ ! -s "$cert" ] || [ ! -s "$key" ]; then
    local names="${TLS_HOSTNAMES:-localhost,127.0.0.1}" san="" name first=""
    IFS=',' read -r -a list <<<"$names"
    for name in "${list[@]}"; do
      name="${name// /}"
      [ -n "$name" ] || continue
      [[ "$name" =~ ^[A-Za-z0-9.:*-]+$ ]] || die "TLS_HOSTNAMES: '$name' is not a host name or address"
      [ -n "$first" ] || first="$name"
      if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
    done
    [ -n "$san" ] || die "TLS_HOSTNAMES is empty: name the host names clients connect with"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=$first" -addext "subjectAltName=${san%,}" \
      -keyout "$key" -out "$cert" 2>/dev/null || die "openssl could not generate a certificate"
    chmod 0600 "$key"
    chmod 0644 "$cert"
    log "TLS: generated a self-signed certificate for ${san%,}"
  fi
  log "TLS: server certificate $(openssl x509 -in "$cert" -noout -fingerprint -sha256)"
  if [ -d "$TLS_EXPORT_DIR" ] && [ -w "$TLS_EXPORT_DIR" ]; then
    install -m 0644 "$cert" "$TLS_EXPORT_DIR/server.crt.tmp"
    mv -f "$TLS_EXPORT_DIR/server.crt.tmp" "$TLS_EXPORT_DIR/server.crt"
    log "TLS: clients verify the server with sslmode=verify-full sslrootcert=<a copy of $TLS_EXPORT_DIR/server.crt> (if self-signed; else your CA)"
  fi
}

psql_local() {
  psql -X -q -v ON_ERROR_STOP=1 --host="$PGHOST" --username=postgres --no-password "$@"
}

first_start() {
  check_secret BACKUP_PASSWORD_FILE
  valid_role_name "$BACKUP_ROLE" BACKUP_ROLE
  if [ -n "${APP_ROLE:-}" ]; then
    valid_role_name "$APP_ROLE" APP_ROLE
    check_secret APP_PASSWORD_FILE
    [ -n "${POSTGRES_DB:-}" ] || die "APP_ROLE is set without POSTGRES_DB: name the database it owns"
  fi
  if [ -n "${POSTGRES_DB:-}" ]; then
    [[ "$POSTGRES_DB" =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$ ]] || die "POSTGRES_DB='$POSTGRES_DB' is not a database name"
  fi
  if [ -n "${CATALOG_PASSWORD_FILE:-}" ]; then
    check_secret CATALOG_PASSWORD_FILE
    valid_role_name "$CATALOG_ROLE" CATALOG_ROLE
    valid_role_name "$CATALOG_DB" CATALOG_DB
    [ "$CATALOG_DB" != "${POSTGRES_DB:-}" ] || die "CATALOG_DB and POSTGRES_DB are both '$CATALOG_DB': the catalog gets a database of its own"
    for other in "$BACKUP_ROLE" "${APP_ROLE:-}"; do
      [ "$CATALOG_ROLE" != "$other" ] || die "CATALOG_ROLE='$CATALOG_ROLE' is already another role's name"
    done
  fi
  [ "${APP_ROLE:-}" != "$BACKUP_ROLE" ] || die "APP_ROLE and BACKUP_ROLE are both '$BACKUP_ROLE': the backup role must own nothing"

  log "initializing a new cluster in $PGDATA"
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options
  initdb --pgdata="$PGDATA" --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 --data-checksums ${POSTGRES_INITDB_ARGS:-} >/dev/null
  # Removed only once everything below succeeded: a first start that failed half-way (a bad
  # init script, a full disk) is never taken for a finished one at the next start.
  : >"$incomplete"
  {
    echo
    echo "# Added by pgkeep-postgres-entrypoint: the image's settings, then local overrides."
    echo "include = '/etc/pgkeep-postgres/postgresql.conf'"
    echo "include_dir = '/etc/pgkeep-postgres/conf.d'"
  } >>"$PGDATA/postgresql.conf"
  tls_setup

  # A server for the set-up below, on a private socket only: neither clients nor the health
  # check (which asks the usual socket) see it.
  PGHOST="$(mktemp -d)"
  export PGHOST
  pg_ctl --pgdata="$PGDATA" --wait --silent \
    -o "-c listen_addresses='' -c unix_socket_directories=$PGHOST" start
  # Passwords reach psql through its backtick command (never its command line), and the
  # session never logs a statement, even a failing one.
  psql_local --dbname=postgres <<'SQL'
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET log_min_duration_statement = -1;
\getenv backup_role BACKUP_ROLE
\set backup_password `cat -- "$BACKUP_PASSWORD_FILE"`
CREATE ROLE :"backup_role" LOGIN PASSWORD :'backup_password';
GRANT pg_read_all_data TO :"backup_role";
COMMENT ON ROLE :"backup_role" IS 'pgkeep backups: reads all data (pg_read_all_data), owns nothing';
\unset backup_password
SQL
  log "created the backup role $BACKUP_ROLE (LOGIN, pg_read_all_data)"
  # In `postgres`, where monitoring connects: the view shows every database's statements. Not
  # in POSTGRES_DB, whose backups would then need a superuser to restore the extension.
  psql_local --dbname=postgres -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements'
  log "created the extension pg_stat_statements in the database postgres"
  if [ -n "${POSTGRES_DB:-}" ]; then
    export POSTGRES_DB APP_ROLE="${APP_ROLE:-}"
    psql_local --dbname=postgres <<'SQL'
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET log_min_duration_statement = -1;
\getenv db POSTGRES_DB
\getenv app_role APP_ROLE
SELECT :'app_role' <> '' AS has_app_role \gset
\if :has_app_role
\set app_password `cat -- "$APP_PASSWORD_FILE"`
CREATE ROLE :"app_role" LOGIN CREATEDB PASSWORD :'app_password';
\unset app_password
CREATE DATABASE :"db" OWNER :"app_role";
\else
CREATE DATABASE :"db";
\endif
SQL
    log "created the database $POSTGRES_DB${APP_ROLE:+ owned by $APP_ROLE (LOGIN, CREATEDB)}"
  fi
  if [ -n "${CATALOG_PASSWORD_FILE:-}" ]; then
    # pgkeep's [catalog] role: it owns its database, so `pgkeep migrate` (or the first backup
    # recording into it) creates the schema pgkeep and its tables as this role. Nobody else
    # may connect; grant CONNECT to a reader role (docs/DATABASE.md) when one is wanted.
    psql_local --dbname=postgres <<'SQL'
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET log_min_duration_statement = -1;
\getenv catalog_db CATALOG_DB
\getenv catalog_role CATALOG_ROLE
\set catalog_password `cat -- "$CATALOG_PASSWORD_FILE"`
CREATE ROLE :"catalog_role" LOGIN PASSWORD :'catalog_password';
\unset catalog_password
COMMENT ON ROLE :"catalog_role" IS 'pgkeep catalog: owns the catalog database, nothing else';
CREATE DATABASE :"catalog_db" OWNER :"catalog_role";
REVOKE ALL ON DATABASE :"catalog_db" FROM PUBLIC;
COMMENT ON DATABASE :"catalog_db" IS 'pgkeep backup history (schema pgkeep), a mirror of the manifests in storage';
SQL
    log "created the catalog database $CATALOG_DB owned by $CATALOG_ROLE (LOGIN)"
  fi
  local f
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sql) log "running $f"; psql_local --dbname="${POSTGRES_DB:-postgres}" -f "$f" ;;
      *.sh) log "running $f"; bash "$f" ;;
      */\*) ;;
      *) log "ignoring $f (not .sql or .sh)" ;;
    esac
  done
  pg_ctl --pgdata="$PGDATA" --wait --silent -m fast stop
  rmdir "$PGHOST"
  unset PGHOST
  rm -f "$incomplete"
  log "initialized; starting"
}

incomplete="$PGDATA/pgkeep-first-start-incomplete"
if [ -e "$incomplete" ]; then
  die "the first start in $PGDATA did not finish (see its log): empty the data volume and start again"
elif [ ! -s "$PGDATA/PG_VERSION" ]; then
  first_start
else
  tls_setup
fi
exec "$@"
