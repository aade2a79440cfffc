"""The client's queries on a catalog of realistic size: each uses the index it is written for
(EXPLAIN), and the status query is the one pgkeep itself runs."""

from __future__ import annotations

import json
from typing import Any

from conftest import Populated

from pgkeep_catalog import queries


def indexes(plan: Any) -> list[str]:
    """Every "Index Name" in an EXPLAIN (FORMAT JSON) plan."""
    found: list[str] = []
    if isinstance(plan, dict):
        for k, v in plan.items():
            if k == "Index Name":
                found.append(v)
            found.extend(indexes(v))
    elif isinstance(plan, list):
        for v in plan:
            found.extend(indexes(v))
    return found


def node_types(plan: Any) -> list[str]:
    found: list[str] = []
    if isinstance(plan, dict):
        if "Node Type" in plan:
            found.append(f"{plan['Node Type']} on {plan.get('Relation Name', '-')}")
        for v in plan.values():
            found.extend(node_types(v))
    elif isinstance(plan, list):
        for v in plan:
            found.extend(node_types(v))
    return found


def test_queries_use_their_indexes(populated: Populated, scratch_catalog: str) -> None:
    c = populated.cluster
    c.sql(
        scratch_catalog,
        "INSERT INTO pgkeep.backup_run "
        "  (job, kind, backup_id, status, started_at, finished_at, stored_bytes, manifest) "
        "SELECT 'job' || (g % 20), 'dump', 'b' || g, 'committed', t, t + interval '1 minute', g, "
        "       jsonb_build_object('id', 'b' || g) "
        "  FROM generate_series(1, 20000) g, "
        "       LATERAL (SELECT timestamptz '2024-01-01 00:00Z' + g * interval '1 hour' AS t) x;"
        "INSERT INTO pgkeep.backup_object (run_id, key, role, compression, raw_bytes, stored_bytes, sha256) "
        "SELECT run_id, 'dump.pgdump.gz', 'dump', 'gzip', 10, 5, repeat('a', 64) FROM pgkeep.backup_run "
        "WHERE job ~ '^job[0-9]+$';"
        "INSERT INTO pgkeep.backup_run (job, kind, status, started_at, finished_at, error) "
        "SELECT 'job' || (g % 20), 'dump', 'failed', t, t + interval '1 minute', 'boom ' || g "
        "  FROM generate_series(1, 500) g, "
        "       LATERAL (SELECT timestamptz '2024-01-01 00:30Z' + g * interval '10 hours' AS t) x;"
        "INSERT INTO pgkeep.verification (run_id, status, started_at, finished_at) "
        "SELECT run_id, 'ok', finished_at, finished_at + interval '5 minutes' "
        "  FROM pgkeep.backup_run WHERE job ~ '^job[0-9]+$' AND status = 'committed' "
        "   AND run_id % 10 = 0;"
        "INSERT INTO pgkeep.restore_run (run_id, target, status, started_at, finished_at) "
        "SELECT run_id, 'postgres@scratch:5432/drill', 'succeeded', finished_at, "
        "       finished_at + interval '9 minutes' "
        "  FROM pgkeep.backup_run WHERE job ~ '^job[0-9]+$' AND status = 'committed' "
        "   AND run_id % 40 = 0;"
        "ANALYZE pgkeep.backup_run; ANALYZE pgkeep.backup_object; "
        "ANALYZE pgkeep.verification; ANALYZE pgkeep.restore_run;",
    )
    conn = c.admin(scratch_catalog)
    try:
        with conn.cursor() as cur:
            # As in tests/suite/catalog.rs: a small table may still be read whole, so the
            # question is whether the index can serve the query at all.
            cur.execute("SET enable_seqscan = off")
            cases = {
                "latest committed": (queries.LATEST_COMMITTED_SQL, {}, "backup_run_committed_idx"),
                "latest failures": (queries.LAST_FAILURES_SQL, {}, "backup_run_failed_idx"),
                "history": (
                    queries.HISTORY_SQL,
                    {"job": "job7", "limit": 20, "with_manifest": False},
                    "backup_run_job_started_idx",
                ),
                "last verification": (
                    queries.LAST_VERIFICATION_SQL,
                    {"job": None},
                    "verification_started_idx",
                ),
                "last restore": (
                    queries.LAST_RESTORE_SQL,
                    {"job": None},
                    "restore_run_started_idx",
                ),
            }
            for what, (sql, params, index) in cases.items():
                cur.execute("EXPLAIN (FORMAT JSON) " + sql, params)
                plan = cur.fetchone()[0]
                assert index in indexes(plan), (what, node_types(plan), json.dumps(plan, indent=1))
                assert "Seq Scan on backup_run" not in node_types(plan), (what, node_types(plan))
            # The history's object count walks backup_object's primary key, not the table.
            cur.execute(
                "EXPLAIN (FORMAT JSON) " + queries.HISTORY_SQL,
                {"job": "job7", "limit": 20, "with_manifest": False},
            )
            plan = cur.fetchone()[0]
            assert "backup_object_pkey" in indexes(plan), node_types(plan)
            # Migration 0002's indexes return the rows in the queries' order: no sort.
            for what in ("history", "last verification", "last restore"):
                sql, params, _ = cases[what]
                cur.execute("EXPLAIN (FORMAT JSON) " + sql, params)
                plan = cur.fetchone()[0]
                assert not any(n.startswith("Sort ") for n in node_types(plan)), (
                    what,
                    node_types(plan),
                )
    finally:
        conn.close()


def test_no_query_selects_star() -> None:
    for name in dir(queries):
        if name.endswith("_SQL"):
            sql = getattr(queries, name)
            assert "*" not in sql.replace("count(*)", ""), name
