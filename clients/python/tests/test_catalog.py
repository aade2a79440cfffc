"""The client against a catalog the real pgkeep wrote: status, history and drills, as text
and JSON, with the exit codes a monitoring check relies on."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from conftest import Populated, run_client

import pgkeep_catalog as pc


def reader(p: Populated, *args: str, db: str | None = None, **kw: object) -> list[str]:
    """The connection options for the read-only role, password from its file."""
    return ["--database", p.reader_url(db), "--password-file", str(p.password_file), *args]


def by_job(listing: list[dict], job: str) -> list[dict]:
    return sorted((b for b in listing if b["job"] == job), key=lambda b: b["id"])


def test_status_json_agrees_with_pgkeep_list(populated: Populated) -> None:
    p = populated
    run = run_client(*reader(p, "status", "--json"), home=p.home)
    assert run.code == 0, run
    assert run.stderr == ""
    status = json.loads(run.stdout)
    jobs = {j["job"]: j for j in status["jobs"]}
    assert sorted(jobs) == ["broken", "main", "tables"]
    for job in ("main", "tables"):
        newest = by_job(p.listing, job)[-1]
        last = jobs[job]["last_backup"]
        assert last["backup_id"] == newest["id"]
        assert last["kind"] == newest["kind"]
        assert last["stored_bytes"] == newest["bytes"]
        # Microseconds survive: the catalog's timestamptz equals the manifest's time.
        assert datetime.fromisoformat(
            last["finished_at"].replace("Z", "+00:00")
        ) == datetime.fromisoformat(newest["finished_at"].replace("Z", "+00:00"))
        assert 0 <= jobs[job]["age_seconds"] < 600
        assert jobs[job]["last_failure"] is None and jobs[job]["failing"] is False
    assert jobs["main"]["last_backup"]["backup_id"] == p.main_ids[1]
    assert jobs["tables"]["last_backup"]["backup_id"] == p.tables_id
    broken = jobs["broken"]
    assert broken["last_backup"] is None and broken["age_seconds"] is None and broken["failing"]
    assert "does not exist" in broken["last_failure"]["error"]
    assert "ok" not in status and "stale" not in jobs["main"]


def test_status_text_names_each_job_and_its_age(populated: Populated) -> None:
    p = populated
    run = run_client(*reader(p, "status"), home=p.home)
    assert run.code == 0, run
    lines = run.stdout.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("broken: no committed backup; last run failed at ")
    assert "does not exist" in lines[0]
    assert lines[1].startswith(f"main: last backup {p.main_ids[1]} (dump, ")
    assert lines[2].startswith(f"tables: last backup {p.tables_id} (export, ")
    assert lines[1].endswith(" ago")


def test_max_age_is_a_monitoring_check(populated: Populated) -> None:
    p = populated
    fresh = run_client(
        *reader(p, "status", "--job", "main", "--job", "tables", "--max-age", "1h"), home=p.home
    )
    assert fresh.code == 0, fresh
    assert "STALE" not in fresh.stdout and fresh.stderr == ""

    # `broken` never succeeded, and a job the catalog has never heard of has no backup either.
    stale = run_client(
        *reader(
            p,
            "status",
            "--max-age",
            "1h",
            "--job",
            "main",
            "--job",
            "broken",
            "--job",
            "nightly-typo",
            "--json",
        ),
        home=p.home,
    )
    assert stale.code == 1, stale
    doc = json.loads(stale.stdout)
    assert doc["ok"] is False and doc["max_age_seconds"] == 3600
    assert {j["job"]: j["stale"] for j in doc["jobs"]} == {
        "broken": True,
        "main": False,
        "nightly-typo": True,
    }
    assert stale.error_lines() == [
        "error: 2 of 3 jobs have no backup newer than 1h: broken (no backup), nightly-typo (no backup)"
    ]

    # Everything is stale once the newest backup is older than the limit.
    newest = max(datetime.fromisoformat(b["finished_at"].replace("Z", "+00:00")) for b in p.listing)
    wait = (newest + timedelta(seconds=2.2) - datetime.now(timezone.utc)).total_seconds()
    time.sleep(max(0.0, wait))
    old = run_client(*reader(p, "status", "--job", "main", "--max-age", "2s"), home=p.home)
    assert old.code == 1, old
    assert "[STALE: older than 2s]" in old.stdout
    assert old.error_lines()[0].startswith(
        "error: 1 of 1 jobs have no backup newer than 2s: main ("
    )


def test_history_lists_every_run_newest_first(populated: Populated) -> None:
    p = populated
    run = run_client(*reader(p, "history", "main", "--json"), home=p.home)
    assert run.code == 0, run
    runs = json.loads(run.stdout)
    assert [r["backup_id"] for r in runs] == list(reversed(p.main_ids))
    for r in runs:
        manifest = p.manifest("main", r["backup_id"])
        assert r["status"] == "committed" and r["kind"] == "dump" and r["error"] is None
        assert r["objects"] == len(manifest["objects"])
        assert r["stored_bytes"] == sum(o["stored_bytes"] for o in manifest["objects"])
        assert r["server_version"] == manifest["server_version"]
        assert r["duration_seconds"] >= 0
        assert "manifest" not in r

    # jsonb comes back as a dict equal to the stored manifest.json.
    run = run_client(*reader(p, "history", "tables", "--with-manifest", "--json"), home=p.home)
    assert run.code == 0, run
    (only,) = json.loads(run.stdout)
    assert only["manifest"] == p.manifest("tables", p.tables_id)
    tables = sorted(o["table"] for o in only["manifest"]["objects"] if o["role"] == "table")
    assert tables == ['"public"."items"', '"public"."notes"']

    run = run_client(*reader(p, "history", "broken"), home=p.home)
    assert run.code == 0, run
    (line,) = run.stdout.splitlines()
    assert "  failed  -  dump  " in line and "error: " in line and "does not exist" in line

    text = run_client(*reader(p, "history", "main", "--limit", "1"), home=p.home)
    assert text.code == 0, text
    (line,) = text.stdout.splitlines()
    assert f"  committed  {p.main_ids[1]}  dump  " in line and " objects" in line


def test_history_of_an_unknown_job_fails(populated: Populated) -> None:
    p = populated
    run = run_client(*reader(p, "history", "nightly-typo", "--json"), home=p.home)
    assert run.code == 1, run
    assert json.loads(run.stdout) == []
    assert run.error_lines() == ["error: the catalog has no runs of job 'nightly-typo'"]


def test_drill_results_are_read_and_judged(populated: Populated, scratch_catalog: str) -> None:
    p, c = populated, populated.cluster
    run = run_client(*reader(p, "drill", db=scratch_catalog), home=p.home)
    assert (run.code, run.stdout, run.stderr) == (0, "no drill recorded\n", "")
    run = run_client(
        *reader(p, "drill", "--max-age", "7d", "--json", db=scratch_catalog), home=p.home
    )
    assert run.code == 1, run
    doc = json.loads(run.stdout)
    assert doc["recorded"] is False and doc["stale"] is True
    assert doc["verification"] is None and doc["restore"] is None
    assert run.error_lines() == ["error: no drill recorded"]

    # A verification that found damage, and a failed restore (nothing in pgkeep writes these
    # yet; the schema's constraints say what a row looks like).
    damaged = [f"main/{p.main_ids[1]}/dump.pgdump.gz", f"main/{p.main_ids[1]}/globals.sql.gz"]
    c.sql(
        scratch_catalog,
        "INSERT INTO pgkeep.verification (run_id, status, started_at, finished_at, damaged_objects) "
        "SELECT run_id, 'damaged', now() - interval '2 hours', now() - interval '119 minutes', %s "
        "FROM pgkeep.backup_run WHERE job = 'main' AND backup_id = %s",
        (damaged, p.main_ids[1]),
    )
    c.sql(
        scratch_catalog,
        "INSERT INTO pgkeep.restore_run (run_id, kind, target, status, started_at, finished_at, error) "
        "SELECT run_id, 'drill', 'pgkeep@127.0.0.1:5432/drill_main', 'failed', now() - interval '1 hour', "
        "now() - interval '59 minutes', 'pg_restore failed (exit code 1)' "
        "FROM pgkeep.backup_run WHERE job = 'main' AND backup_id = %s",
        (p.main_ids[0],),
    )
    run = run_client(*reader(p, "drill", "--json", db=scratch_catalog), home=p.home)
    assert run.code == 1, run
    doc = json.loads(run.stdout)
    assert doc["failed"] is True
    # text[] comes back as a list.
    assert doc["verification"]["damaged_objects"] == damaged
    assert doc["verification"]["status"] == "damaged"
    assert doc["verification"]["backup_id"] == p.main_ids[1]
    assert doc["restore"]["target"] == "pgkeep@127.0.0.1:5432/drill_main"
    assert doc["restore"]["error"] == "pg_restore failed (exit code 1)"
    assert doc["restore"]["kind"] == "drill"
    assert run.error_lines() == ["error: the last drill failed"]
    text = run_client(*reader(p, "drill", db=scratch_catalog), home=p.home)
    assert text.stdout.splitlines()[0].startswith(
        f"last verification: damaged, backup main/{p.main_ids[1]}"
    )
    assert "; damaged: " + ", ".join(damaged) in text.stdout
    assert text.stdout.splitlines()[1].startswith(
        f"last restore (drill): failed, backup main/{p.main_ids[0]}"
    )

    # Newer good results make it pass, within the age limit; another job has none.
    c.sql(
        scratch_catalog,
        "INSERT INTO pgkeep.verification (run_id, status, started_at, finished_at) "
        "SELECT run_id, 'ok', now() - interval '10 minutes', now() - interval '9 minutes' "
        "FROM pgkeep.backup_run WHERE job = 'main' AND backup_id = %s;"
        "INSERT INTO pgkeep.restore_run (run_id, target, status, started_at, finished_at) "
        "SELECT run_id, 'pgkeep@127.0.0.1:5432/drill_main', 'succeeded', now() - interval '8 minutes', "
        "now() - interval '5 minutes' FROM pgkeep.backup_run WHERE job = 'main' AND backup_id = %s",
        (p.main_ids[1], p.main_ids[1]),
    )
    run = run_client(*reader(p, "drill", "--max-age", "1h", db=scratch_catalog), home=p.home)
    assert run.code == 0, run
    assert run.stdout.splitlines() == [
        f"last verification: ok, backup main/{p.main_ids[1]}, started "
        + run.stdout.split("started ", 1)[1].splitlines()[0],
        f"last restore: succeeded, backup main/{p.main_ids[1]} into pgkeep@127.0.0.1:5432/drill_main, started "
        + run.stdout.split("started ", 2)[2].splitlines()[0],
    ]
    assert (
        run_client(*reader(p, "drill", "--max-age", "2m", db=scratch_catalog), home=p.home).code
        == 1
    )
    other = run_client(*reader(p, "drill", "--job", "tables", db=scratch_catalog), home=p.home)
    assert (other.code, other.stdout) == (0, "no drill recorded\n")


def test_the_library_returns_typed_records(populated: Populated) -> None:
    p = populated
    conn = pc.connect(p.reader_url(), password_file=p.password_file)
    try:
        status = pc.read_status(conn)
        assert status.checked_at.tzinfo is not None
        main = next(j for j in status.jobs if j.job == "main")
        assert isinstance(main.last_backup, pc.Backup)
        assert main.last_backup.backup_id == p.main_ids[1]
        assert isinstance(main.last_backup.stored_bytes, int)
        assert main.age is not None and timedelta(0) <= main.age < timedelta(minutes=10)
        runs = pc.read_history(conn, "tables", with_manifest=True)
        assert isinstance(runs[0].manifest, dict) and runs[0].manifest["kind"] == "export"
        assert isinstance(runs[0].manifest["objects"], list)
        # The session is read-only: even a role that could write cannot through it.
        with conn.cursor() as cur:
            cur.execute("SHOW transaction_read_only")
            assert cur.fetchone() == ("on",)
        conn.rollback()
        assert pc.read_drill(conn).recorded is False
    finally:
        conn.close()
