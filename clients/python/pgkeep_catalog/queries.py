"""The catalog queries: parameterised, explicit column lists, each served by an index of
`migrations/0001_catalog.sql` or `0002_history_indexes.sql` (docs/DATABASE.md shows their
plans)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Optional, Sequence

import psycopg2
import psycopg2.errors
from psycopg2.extensions import connection as Connection

from .errors import QueryError
from .model import Backup, Drill, Failure, JobStatus, Restore, Run, Status, Verification

#: The newest committed backup of every job: a walk down the partial index
#: `backup_run_committed_idx (job, started_at DESC) WHERE status = 'committed'`. The same text
#: as pgkeep's `catalog::LATEST_COMMITTED_SQL` (the test suite compares them).
LATEST_COMMITTED_SQL = (
    "SELECT DISTINCT ON (job) job, backup_id, kind, started_at, finished_at, stored_bytes "
    "FROM pgkeep.backup_run WHERE status = 'committed' ORDER BY job, started_at DESC"
)

#: The newest failed run of every job: a scan of the (small) partial index
#: `backup_run_failed_idx (started_at) WHERE status = 'failed'`, then a sort by job.
LAST_FAILURES_SQL = (
    "SELECT DISTINCT ON (job) job, started_at, finished_at, error "
    "FROM pgkeep.backup_run WHERE status = 'failed' ORDER BY job, started_at DESC"
)

#: One job's runs, newest first: the first `limit` entries of the job's range of
#: `backup_run_job_started_idx (job, started_at DESC, run_id DESC)`, in order (no sort), each
#: run's object count through the primary key `backup_object_pkey (run_id, key)`. The manifest
#: only when asked for.
HISTORY_SQL = (
    "SELECT r.run_id, r.job, r.backup_id, r.kind, r.status, r.started_at, r.finished_at, "
    "r.stored_bytes, r.server_version, r.error, "
    "(SELECT count(*) FROM pgkeep.backup_object o WHERE o.run_id = r.run_id) AS objects, "
    "CASE WHEN %(with_manifest)s THEN r.manifest END AS manifest "
    "FROM pgkeep.backup_run r WHERE r.job = %(job)s "
    "ORDER BY r.started_at DESC, r.run_id DESC LIMIT %(limit)s"
)

#: The newest verification (of one job's backups, or of any): the first entries of
#: `verification_started_idx (started_at DESC, verification_id DESC)`.
LAST_VERIFICATION_SQL = (
    "SELECT r.job, r.backup_id, v.status, v.started_at, v.finished_at, v.damaged_objects, v.error "
    "FROM pgkeep.verification v JOIN pgkeep.backup_run r ON r.run_id = v.run_id "
    "WHERE %(job)s::text IS NULL OR r.job = %(job)s "
    "ORDER BY v.started_at DESC, v.verification_id DESC LIMIT 1"
)

#: The newest restore, an operator's or a drill's (`kind`), of one job's backups or of any: the
#: first entries of
#: `restore_run_started_idx (started_at DESC, restore_id DESC)`.
LAST_RESTORE_SQL = (
    "SELECT r.job, r.backup_id, x.target, x.status, x.started_at, x.finished_at, x.error, x.kind "
    "FROM pgkeep.restore_run x JOIN pgkeep.backup_run r ON r.run_id = x.run_id "
    "WHERE %(job)s::text IS NULL OR r.job = %(job)s "
    "ORDER BY x.started_at DESC, x.restore_id DESC LIMIT 1"
)

#: The transaction's start time on the server's clock: ages are measured against it, so a
#: client with a wrong clock still answers right.
NOW_SQL = "SELECT now()"

_GRANTS_HINT = (
    "the role needs CONNECT on the database, USAGE on schema pgkeep and SELECT on its tables "
    "(docs/DATABASE.md, 'A read-only catalog role')"
)


def _message(e: psycopg2.Error) -> str:
    primary = getattr(getattr(e, "diag", None), "message_primary", None)
    text = primary or str(e)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(e).__name__


def _fetch(conn: Connection, sql: str, params: dict[str, Any], what: str) -> list[tuple[Any, ...]]:
    """Runs one query; every database error becomes a one-line QueryError saying what failed."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            rows: list[tuple[Any, ...]] = cur.fetchall()
            return rows
    except psycopg2.errors.InsufficientPrivilege as e:
        raise QueryError(f"{what}: {_message(e)}: {_GRANTS_HINT}") from None
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.InvalidSchemaName) as e:
        raise QueryError(
            f"{what}: {_message(e)}: this database holds no pgkeep catalog "
            "(create it with `pgkeep migrate --database CONNINFO` or `pgkeep catalog sync`)"
        ) from None
    except psycopg2.errors.QueryCanceled as e:
        raise QueryError(f"{what}: {_message(e)} (the statement timeout)") from None
    except psycopg2.Error as e:
        raise QueryError(f"{what}: {_message(e)}") from None


def _end(conn: Connection) -> None:
    """Ends the read-only transaction; a connection already lost has nothing to end."""
    try:
        conn.rollback()
    except psycopg2.Error:
        pass


def read_status(conn: Connection, jobs: Optional[Sequence[str]] = None) -> Status:
    """Every job's newest committed backup, its age, and its newest failure, by job name.

    The jobs are those the catalog has runs of; `jobs` restricts the answer to those names and
    includes each of them even when the catalog has never heard of it (no backup: stale).
    """
    try:
        ((checked_at,),) = _fetch(conn, NOW_SQL, {}, "reading the server's time")
        latest = {
            row[0]: Backup(*row)
            for row in _fetch(conn, LATEST_COMMITTED_SQL, {}, "reading the latest backups")
        }
        failures = {
            row[0]: Failure(*row)
            for row in _fetch(conn, LAST_FAILURES_SQL, {}, "reading the latest failures")
        }
    finally:
        _end(conn)
    names = sorted(set(jobs) if jobs else set(latest) | set(failures))
    out = []
    for name in names:
        backup = latest.get(name)
        # A backup that finished after the transaction started is 0 s old, not negative.
        age = None if backup is None else max(checked_at - backup.finished_at, timedelta(0))
        out.append(
            JobStatus(job=name, last_backup=backup, last_failure=failures.get(name), age=age)
        )
    return Status(checked_at=checked_at, jobs=out)


def read_history(
    conn: Connection, job: str, limit: int = 20, with_manifest: bool = False
) -> list[Run]:
    """The newest `limit` runs of `job`, newest first, every status included."""
    params = {"job": job, "limit": limit, "with_manifest": with_manifest}
    try:
        rows = _fetch(conn, HISTORY_SQL, params, f"reading the history of job '{job}'")
    finally:
        _end(conn)
    return [Run(*row) for row in rows]


def read_drill(conn: Connection, job: Optional[str] = None) -> Drill:
    """The newest verification and the newest restore recorded, of `job`'s backups or of any."""
    params = {"job": job}
    try:
        ((checked_at,),) = _fetch(conn, NOW_SQL, {}, "reading the server's time")
        verifications = _fetch(conn, LAST_VERIFICATION_SQL, params, "reading the last verification")
        restores = _fetch(conn, LAST_RESTORE_SQL, params, "reading the last restore")
    finally:
        _end(conn)
    verification = None
    if verifications:
        job_, backup_id, status, started, finished, damaged, error = verifications[0]
        verification = Verification(
            job_, backup_id, status, started, finished, list(damaged), error
        )
    restore = Restore(*restores[0]) if restores else None
    return Drill(checked_at=checked_at, verification=verification, restore=restore)
