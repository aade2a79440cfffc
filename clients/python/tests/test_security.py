"""Connection settings on the TLS test cluster: verify-full, wrong CAs, non-TLS refused,
passwords only from files or the environment, the documented read-only role, time limits."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from conftest import Populated, run_client


def only_error(run) -> str:
    lines = run.error_lines()
    assert len(lines) == 1, run
    assert lines[0].startswith("error: "), run
    return lines[0]


def test_verify_full_with_the_right_ca_and_password_sources(populated: Populated) -> None:
    p = populated
    url = p.reader_url(sslmode="verify-full")
    from_file = run_client(
        "--database", url, "--password-file", str(p.password_file), "status", "--json", home=p.home
    )
    assert from_file.code == 0, from_file
    from_env = run_client(
        "--database", url, "status", "--json", home=p.home, env={"PGPASSWORD": p.password}
    )
    assert from_env.code == 0, from_env

    def backups(run) -> list:
        return [(j["job"], j["last_backup"]) for j in json.loads(run.stdout)["jobs"]]

    assert backups(from_env) == backups(from_file)
    assert [job for job, _ in backups(from_file)] == ["broken", "main", "tables"]
    # libpq's passfile: host:port:db:user:password, with ':' and '\' escaped.
    escaped = p.password.replace("\\", "\\\\").replace(":", "\\:")
    passfile = p.home / "pgpass"
    passfile.write_text(f"{p.cluster.host}:{p.cluster.port}:{p.catalog}:{p.reader}:{escaped}\n")
    passfile.chmod(0o600)
    from_passfile = run_client(
        "--database", url, "status", home=p.home, env={"PGPASSFILE": str(passfile)}
    )
    assert from_passfile.code == 0, from_passfile
    # And the whole string, password included, from the environment instead of argv.
    full = p.reader_url().replace(f"{p.reader}@", f"{p.reader}:{_pct(p.password)}@")
    from_env_url = run_client("status", home=p.home, env={"PGKEEP_CATALOG_DATABASE": full})
    assert from_env_url.code == 0, from_env_url


def _pct(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def test_the_session_really_is_encrypted_and_verified(populated: Populated) -> None:
    p = populated
    import pgkeep_catalog as pc

    conn = pc.connect(p.reader_url(), password_file=p.password_file)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ssl, version = cur.fetchone()
        assert ssl is True and version.startswith("TLSv1.")
        assert conn.info.ssl_in_use
        assert dict(conn.get_dsn_parameters())["sslmode"] == "verify-full"
    finally:
        conn.close()


def test_a_wrong_ca_is_one_clear_error(populated: Populated, tmp_path: Path) -> None:
    p = populated
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(tmp_path / "k"),
            "-out",
            str(other_ca),
        ],
        check=True,
        capture_output=True,
    )
    run = run_client(
        *["--database", p.reader_url(sslrootcert=str(other_ca))],
        "--password-file",
        str(p.password_file),
        "status",
        home=p.home,
    )
    assert run.code == 1, run
    line = only_error(run)
    assert line.startswith(f"error: cannot connect to the catalog database {p.reader}@127.0.0.1:")
    assert "certificate verify failed" in line
    assert "sslrootcert must name the CA" in line
    assert run.stdout == ""
    assert p.password not in run.stderr


def test_verify_full_is_the_default_so_a_missing_ca_fails_closed(populated: Populated) -> None:
    p = populated
    # No sslmode, no sslrootcert: libpq looks for ~/.postgresql/root.crt, which is absent.
    url = p.cluster.url(p.reader, p.catalog)
    run = run_client(
        "--database", url, "--password-file", str(p.password_file), "status", home=p.home
    )
    assert run.code == 1, run
    line = only_error(run)
    assert "root certificate file" in line and "does not exist" in line, line


def test_a_connection_without_tls_is_refused(populated: Populated) -> None:
    p = populated
    url = p.cluster.url(p.reader, p.catalog, sslmode="disable")
    run = run_client(
        "--database", url, "--password-file", str(p.password_file), "status", home=p.home
    )
    assert run.code == 1, run
    line = only_error(run)
    # The harness's pg_hba.conf has `hostnossl ... reject` for the role.
    assert "pg_hba.conf rejects connection" in line and "no encryption" in line, line
    assert "the server accepts only TLS" in line


def test_passwords_never_come_from_argv(populated: Populated) -> None:
    p = populated
    with_pw = p.reader_url().replace(f"{p.reader}@", f"{p.reader}:{_pct(p.password)}@")
    run = run_client("--database", with_pw, "status", home=p.home)
    assert run.code == 2, run
    assert "holds a password" in only_error(run)
    assert _pct(p.password) not in run.stderr and p.password not in run.stderr
    missing = run_client("--database", p.reader_url(), "status", home=p.home)
    assert missing.code == 1, missing
    assert "no password supplied" in only_error(missing)
    wrong = p.home / "wrong-pw"
    wrong.write_text("not it\n")
    bad = run_client(
        "--database", p.reader_url(), "--password-file", str(wrong), "status", home=p.home
    )
    assert bad.code == 1, bad
    assert "password authentication failed" in only_error(bad)
    assert "not it" not in bad.stderr


def test_the_documented_reader_role_reads_but_never_writes(populated: Populated) -> None:
    p = populated
    for command in (["status"], ["history", "main"], ["drill"]):
        run = run_client(
            *["--database", p.reader_url()],
            "--password-file",
            str(p.password_file),
            *command,
            home=p.home,
        )
        assert run.code == 0, (command, run)
    conn = psycopg2.connect(p.reader_url(), password=p.password, sslmode="verify-full")
    try:
        conn.autocommit = True
        for sql in (
            "INSERT INTO pgkeep.backup_run (job, kind, status, started_at) VALUES ('x', 'dump', 'running', now())",
            "UPDATE pgkeep.backup_run SET status = 'pruned'",
            "DELETE FROM pgkeep.backup_object",
            "TRUNCATE pgkeep.verification",
            "CREATE TABLE pgkeep.mine (id int)",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                with conn.cursor() as cur:
                    cur.execute(sql)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pgkeep.backup_run WHERE status = 'committed'")
            assert cur.fetchone() == (3,)
            cur.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles "
                "WHERE rolname = current_user"
            )
            assert cur.fetchone() == (False, False, False, False)
    finally:
        conn.close()


def test_a_role_without_the_grants_gets_a_hint(populated: Populated) -> None:
    p, c = populated, populated.cluster
    role = c.name("nogrants")
    c.sql("postgres", f'CREATE ROLE "{role}" LOGIN PASSWORD %s IN ROLE "{c.pw_role}"', ("pw",))
    c.sql("postgres", f'GRANT CONNECT ON DATABASE "{p.catalog}" TO "{role}"')
    pw = p.home / f"{role}.pw"
    pw.write_text("pw")
    url = c.url(role, p.catalog, sslrootcert=str(c.ca))
    run = run_client("--database", url, "--password-file", str(pw), "status", home=p.home)
    assert run.code == 1, run
    line = only_error(run)
    assert line.startswith(
        "error: reading the latest backups: permission denied for schema pgkeep: "
    )
    assert "USAGE on schema pgkeep and SELECT on its tables" in line


def test_a_database_without_a_catalog(populated: Populated) -> None:
    p, c = populated, populated.cluster
    empty = c.create_db("nocatalog")
    c.sql("postgres", f'GRANT CONNECT ON DATABASE "{empty}" TO "{p.reader}"')
    run = run_client(
        *["--database", p.reader_url(empty)],
        "--password-file",
        str(p.password_file),
        "history",
        "main",
        home=p.home,
    )
    assert run.code == 1, run
    line = only_error(run)
    assert 'relation "pgkeep.backup_run" does not exist' in line or "schema" in line, line
    assert "holds no pgkeep catalog" in line and "pgkeep migrate" in line


def test_a_lock_wait_ends_at_the_statement_timeout(
    populated: Populated, scratch_catalog: str
) -> None:
    p, c = populated, populated.cluster
    # pgkeep migrate or a TRUNCATE would take ACCESS EXCLUSIVE; reads queue behind it.
    locker = c.admin(scratch_catalog)
    locker.autocommit = False
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE pgkeep.backup_run IN ACCESS EXCLUSIVE MODE")
        start = time.monotonic()
        run = run_client(
            *["--database", p.reader_url(scratch_catalog)],
            "--password-file",
            str(p.password_file),
            "--statement-timeout",
            "1s",
            "status",
            home=p.home,
        )
        took = time.monotonic() - start
    finally:
        locker.rollback()
        locker.close()
    assert run.code == 1, run
    assert "canceling statement due to statement timeout" in only_error(run)
    assert took < 15, took


def test_a_server_that_never_answers_times_out(populated: Populated) -> None:
    p = populated
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # and never answer
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        run = run_client(
            "--database",
            f"postgres://reader@127.0.0.1:{port}/pgkeep?sslmode=verify-full",
            "--connect-timeout",
            "2",
            "status",
            home=p.home,
            timeout=30,
        )
        took = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
        for s in accepted:
            s.close()
        listener.close()
    assert run.code == 1, run
    line = only_error(run)
    assert line.startswith(
        f"error: cannot connect to the catalog database reader@127.0.0.1:{port}/pgkeep: "
    )
    assert "timeout expired" in line, line
    assert 1.5 < took < 12, took
