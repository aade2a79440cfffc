"""Fixtures for the client's tests: the test cluster that tests/suite/python_client.rs starts
(TLS on, a self-signed CA), and a catalog that the real pgkeep binary populated.

The integration tests need the cluster the Rust suite starts; run them with
`cargo test --test it suite::python_client`. Run alone, they fail (never skip) and say so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import psycopg2
import pytest

CLIENT_DIR = Path(__file__).resolve().parent.parent
REPO = CLIENT_DIR.parent.parent
DATABASE_MD = REPO / "docs" / "DATABASE.md"

_ENV = (
    "PGKEEP_TEST_PG_HOST",
    "PGKEEP_TEST_PG_PORT",
    "PGKEEP_TEST_PG_CA",
    "PGKEEP_TEST_PGKEEP",
    "PGKEEP_TEST_PW_ROLE",
    "PGKEEP_TEST_SSL_ROLE",
    "PGKEEP_TEST_PREFIX",
)


@dataclass
class Cluster:
    """The Rust harness's cluster: superuser `postgres` trusted over TCP without TLS; members
    of `pw_role` need a password (scram) and members of `ssl_role` need TLS."""

    host: str
    port: int
    ca: Path
    pgkeep: Path
    pw_role: str
    ssl_role: str
    prefix: str
    counter: list[int] = field(default_factory=lambda: [0])

    def name(self, what: str) -> str:
        self.counter[0] += 1
        return f"pyc_{what}_{self.counter[0]}_{self.prefix}"

    def admin_url(self, db: str = "postgres") -> str:
        return f"postgres://postgres@{self.host}:{self.port}/{quote(db)}?sslmode=disable"

    def url(self, user: str, db: str, **params: str) -> str:
        """A URL without a password; `params` become its query (sslrootcert=..., sslmode=...)."""
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        return f"postgres://{quote(user)}@{self.host}:{self.port}/{quote(db)}" + (
            f"?{query}" if query else ""
        )

    def admin(self, db: str = "postgres") -> Any:
        conn = psycopg2.connect(self.admin_url(db))
        conn.autocommit = True
        return conn

    def sql(self, db: str, sql: str, params: Optional[Any] = None) -> list[tuple[Any, ...]]:
        conn = self.admin(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_db(self, what: str, template: Optional[str] = None) -> str:
        name = self.name(what)
        clause = f' TEMPLATE "{template}"' if template else ""
        self.sql("postgres", f'CREATE DATABASE "{name}"{clause}')
        return name


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    missing = [v for v in _ENV if not os.environ.get(v)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: these tests need the TLS test cluster that "
            "`cargo test --test it suite::python_client` starts and passes to them",
            pytrace=False,
        )
    env = os.environ
    return Cluster(
        host=env["PGKEEP_TEST_PG_HOST"],
        port=int(env["PGKEEP_TEST_PG_PORT"]),
        ca=Path(env["PGKEEP_TEST_PG_CA"]),
        pgkeep=Path(env["PGKEEP_TEST_PGKEEP"]),
        pw_role=env["PGKEEP_TEST_PW_ROLE"],
        ssl_role=env["PGKEEP_TEST_SSL_ROLE"],
        prefix=env["PGKEEP_TEST_PREFIX"],
    )


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def clean_env(home: Path, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The environment without PG*, AWS* and PGKEEP_* variables, HOME in a scratch dir."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS")) and k != "PYTHONPATH"
    }
    env["HOME"] = str(home)
    env.update(extra or {})
    return env


def run_pgkeep(cluster: Cluster, config: Path, *args: str, home: Path) -> Run:
    out = subprocess.run(
        [str(cluster.pgkeep), "--config", str(config), *args],
        env=clean_env(home, {"PGKEEP_LOG": "pgkeep=warn"}),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    return Run(out.returncode, out.stdout, out.stderr)


def run_client(
    *args: str, home: Path, env: Optional[dict[str, str]] = None, timeout: float = 60
) -> Run:
    """`python3 -m pgkeep_catalog ARGS` as a user runs it, with PYTHONPATH=clients/python."""
    extra = {"PYTHONPATH": str(CLIENT_DIR), **(env or {})}
    out = subprocess.run(
        [sys.executable, "-m", "pgkeep_catalog", *args],
        env=clean_env(home, extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Run(out.returncode, out.stdout, out.stderr)


def documented_reader_grants(role: str, database: str, writer: str) -> list[str]:
    """The GRANT statements of docs/DATABASE.md's read-only catalog role, for `role`."""
    text = DATABASE_MD.read_text(encoding="utf-8")
    section = text.split("### A read-only catalog role", 1)[1]
    block = section.split("```sql", 1)[1].split("```", 1)[0]
    statements = [
        line.strip()
        for line in block.splitlines()
        if line.strip().startswith(("GRANT ", "ALTER DEFAULT PRIVILEGES"))
    ]
    assert statements, "no GRANT statements in docs/DATABASE.md's read-only catalog role"
    out = []
    for s in statements:
        s = re.sub(r"\bpgkeep_reader\b", f'"{role}"', s)
        s = s.replace("ON DATABASE pgkeep ", f'ON DATABASE "{database}" ')
        s = s.replace("FOR ROLE pgkeep_catalog ", f'FOR ROLE "{writer}" ')
        out.append(s)
    return out


@dataclass
class Populated:
    """A catalog that pgkeep itself wrote: jobs `main` (two dumps), `tables` (an export) and
    `broken` (a failed run), and a read-only role `reader` holding the documented grants."""

    cluster: Cluster
    catalog: str
    store: Path
    config: Path
    main_ids: list[str]
    tables_id: str
    listing: list[dict[str, Any]]
    reader: str
    password: str
    password_file: Path
    home: Path

    def reader_url(self, db: Optional[str] = None, **params: str) -> str:
        params.setdefault("sslrootcert", str(self.cluster.ca))
        return self.cluster.url(self.reader, db or self.catalog, **params)

    def manifest(self, job: str, backup_id: str) -> dict[str, Any]:
        return json.loads((self.store / job / backup_id / "manifest.json").read_text())


@pytest.fixture(scope="session")
def populated(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Populated:
    work = tmp_path_factory.mktemp("populated")
    home = work / "home"
    home.mkdir()
    source = cluster.create_db("source")
    cluster.sql(
        source,
        "CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL, tags text[] NOT NULL);"
        "INSERT INTO items SELECT g, 'item ' || g, ARRAY['t' || (g % 3)] "
        "FROM generate_series(1, 500) g;"
        "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body jsonb);"
        "INSERT INTO notes (body) SELECT jsonb_build_object('n', g) FROM generate_series(1, 50) g;",
    )
    catalog = cluster.create_db("catalog")
    store = work / "store"
    config = work / "pgkeep.toml"
    config.write_text(
        f'[storage]\nurl = "file://{store}"\n\n'
        f'[catalog]\ndatabase = "{cluster.admin_url(catalog)}"\n\n'
        f'[jobs.main]\nkind = "dump"\ndatabase = "{cluster.admin_url(source)}"\n'
        'compression = "gzip:1"\n\n'
        f'[jobs.tables]\nkind = "export"\ndatabase = "{cluster.admin_url(source)}"\n'
        'compression = "gzip:1"\nparallel = 2\nglobals = false\n\n'
        f'[jobs.broken]\nkind = "dump"\n'
        f'database = "{cluster.admin_url(cluster.name("no_such_db"))}"\n'
    )
    migrate = run_pgkeep(
        cluster, config, "migrate", "--database", cluster.admin_url(catalog), home=home
    )
    assert migrate.code == 0 and "applied 0001_catalog.sql" in migrate.stdout, migrate

    def backup(job: str) -> str:
        run = run_pgkeep(cluster, config, "backup", job, home=home)
        assert run.code == 0, run
        return run.stdout.strip().splitlines()[-1]

    main_ids = [backup("main"), backup("main")]
    tables_id = backup("tables")
    broken = run_pgkeep(cluster, config, "backup", "broken", home=home)
    assert broken.code == 1, broken
    listing = run_pgkeep(cluster, config, "list", "--json", home=home)
    assert listing.code == 0, listing

    reader = cluster.name("reader")
    password = "reader pw: with spaces & 'quotes'"
    cluster.sql(
        "postgres",
        f'CREATE ROLE "{reader}" LOGIN PASSWORD %s IN ROLE "{cluster.pw_role}", "{cluster.ssl_role}"',
        (password,),
    )
    cluster.sql("postgres", f'REVOKE CONNECT ON DATABASE "{catalog}" FROM PUBLIC')
    for statement in documented_reader_grants(reader, catalog, "postgres"):
        cluster.sql(catalog, statement)
    password_file = work / "reader-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return Populated(
        cluster=cluster,
        catalog=catalog,
        store=store,
        config=config,
        main_ids=main_ids,
        tables_id=tables_id,
        listing=json.loads(listing.stdout),
        reader=reader,
        password=password,
        password_file=password_file,
        home=home,
    )


@pytest.fixture
def scratch_catalog(populated: Populated) -> str:
    """A copy of the populated catalog that a test may change (the reader may connect)."""
    c = populated.cluster
    name = c.create_db("scratch", template=populated.catalog)
    c.sql("postgres", f'GRANT CONNECT ON DATABASE "{name}" TO "{populated.reader}"')
    return name
