"""Connecting to the catalog database: libpq settings, the password, TLS and time limits.

The connection string is anything libpq accepts (a `postgres://` URL or `key=value` words),
completed by the standard PG* environment variables. What this module adds:

- no password in a connection string given on the command line: it comes from a password
  file, `PGPASSWORD`, or the passfile (`PGPASSFILE`, `~/.pgpass`);
- `sslmode=verify-full` unless the string or `PGSSLMODE` says otherwise (fail closed);
- limits so that nothing hangs: `connect_timeout`, TCP keepalives, a `statement_timeout`;
- a read-only, repeatable-read session: the client never writes, and each command reads one
  consistent snapshot.
"""

from __future__ import annotations

import getpass
import os
from datetime import timedelta
from pathlib import Path
from typing import Mapping

import psycopg2
import psycopg2.extensions
from psycopg2.extensions import connection as Connection

from .errors import ConnectError, UsageError

#: Defaults added when neither the connection string nor the environment sets them.
DEFAULT_CONNECT_TIMEOUT_S = 10
DEFAULT_STATEMENT_TIMEOUT = timedelta(seconds=30)
APPLICATION_NAME = "pgkeep-catalog"

# libpq parameter -> the environment variables that set it instead (libpq's own list).
_ENV_FOR = {
    "sslmode": ("PGSSLMODE", "PGREQUIRESSL"),
    "connect_timeout": ("PGCONNECT_TIMEOUT",),
    "application_name": ("PGAPPNAME",),
}
# Dead peers are noticed after about 10 + 3 * 5 s instead of the kernel's two hours.
_KEEPALIVES = {"keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3"}


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """The parameters of a connection string, parsed by libpq itself.

    Raises UsageError (without quoting the string, which may hold a password) when libpq
    cannot parse it.
    """
    try:
        return psycopg2.extensions.parse_dsn(conninfo)
    except psycopg2.ProgrammingError:
        raise UsageError(
            "--database: not a connection string libpq can parse; write e.g. "
            "'postgres://reader@db:5432/pgkeep?sslmode=verify-full&sslrootcert=/etc/pgkeep/ca.pem' "
            "or 'host=db dbname=pgkeep user=reader' (percent-encode '@', ':' and '/' in URL parts)"
        ) from None


def describe(params: Mapping[str, str], env: Mapping[str, str] | None = None) -> str:
    """`user@host:port/dbname` as libpq would resolve it: safe to print (no password)."""
    env = os.environ if env is None else env

    def pick(key: str, var: str, default: str) -> str:
        return params.get(key) or env.get(var) or default

    user = pick("user", "PGUSER", "")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "?"
    host = pick("host", "PGHOST", "") or pick("hostaddr", "PGHOSTADDR", "") or "local socket"
    port = pick("port", "PGPORT", "5432")
    dbname = pick("dbname", "PGDATABASE", user)
    return f"{user}@{host}:{port}/{dbname}"


def read_password_file(path: Path) -> str:
    """The password in `path`: its content without the trailing newline (as pgkeep reads it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise UsageError(f"--password-file {path}: cannot read it: {reason}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise UsageError(f"--password-file {path}: the file is empty")
    return password


def connection_parameters(
    conninfo: str,
    *,
    password_file: Path | None = None,
    allow_password_in_conninfo: bool = True,
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """The parsed connection string and the parameters this client adds to it.

    Raises UsageError for an unparsable string, a password in it when that is not allowed
    (a command line), a password given twice, or an unreadable password file.
    """
    env = os.environ if env is None else env
    params = parse_conninfo(conninfo)
    if "password" in params and not allow_password_in_conninfo:
        raise UsageError(
            "--database: the connection string holds a password, which would be visible to "
            "every user in the process list; remove it and use --password-file, PGPASSWORD "
            "or ~/.pgpass"
        )
    extra: dict[str, str] = {}
    if password_file is not None:
        if "password" in params:
            raise UsageError(
                "--password-file: the connection string already holds a password; give one of them"
            )
        extra["password"] = read_password_file(password_file)
    defaults = {
        "sslmode": "verify-full",
        "connect_timeout": str(connect_timeout_s),
        "application_name": APPLICATION_NAME,
        **_KEEPALIVES,
    }
    for key, value in defaults.items():
        if key not in params and not any(env.get(var) for var in _ENV_FOR.get(key, ())):
            extra[key] = value
    return params, extra


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def _hint(message: str) -> str:
    if "no password supplied" in message or "password authentication failed" in message:
        return " (the password comes from --password-file, PGPASSWORD or ~/.pgpass)"
    if "certificate verify failed" in message or "root certificate file" in message:
        return " (sslrootcert must name the CA that signed the server's certificate)"
    if "does not match host name" in message:
        return " (connect with a host name the server's certificate names, or fix the certificate)"
    if "no encryption" in message:
        return " (the server accepts only TLS: use sslmode=verify-full)"
    return ""


def connect(
    conninfo: str,
    *,
    password_file: Path | None = None,
    allow_password_in_conninfo: bool = True,
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
    statement_timeout: timedelta = DEFAULT_STATEMENT_TIMEOUT,
) -> Connection:
    """Opens a read-only, repeatable-read psycopg2 connection to the catalog database.

    Raises UsageError for bad settings (see `connection_parameters`) and ConnectError, with
    libpq's reason on one line, when the server cannot be reached, refuses TLS or the
    certificate, or rejects the login.
    """
    params, extra = connection_parameters(
        conninfo,
        password_file=password_file,
        allow_password_in_conninfo=allow_password_in_conninfo,
        connect_timeout_s=connect_timeout_s,
    )
    target = describe(params)
    try:
        # make_dsn merges in memory: nothing reaches a command line or the environment.
        conn = psycopg2.connect(psycopg2.extensions.make_dsn(conninfo, **extra))
    except psycopg2.Error as e:
        reason = _one_line(e)
        raise ConnectError(
            f"cannot connect to the catalog database {target}: {reason}{_hint(reason)}"
        ) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            millis = max(1, int(statement_timeout.total_seconds() * 1000))
            cur.execute("SELECT set_config('statement_timeout', %s, false)", (str(millis),))
        conn.set_session(
            isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
            readonly=True,
            autocommit=False,
        )
    except psycopg2.Error as e:
        conn.close()
        raise ConnectError(
            f"setting up the session on the catalog database {target}: {_one_line(e)}"
        ) from None
    return conn
