"""A read-only psycopg2 client of pgkeep's catalog (docs/CATALOG.md, docs/DATABASE.md).

import pgkeep_catalog as pc

conn = pc.connect("postgres://reader@db:5432/pgkeep?sslrootcert=/etc/pgkeep/ca.pem",
                  password_file=Path("/run/secrets/catalog-reader"))
for job in pc.read_status(conn).jobs:
    print(job.job, job.last_backup and job.last_backup.backup_id, job.age)
"""

__version__ = "0.1.0"

from .connection import connect, connection_parameters, describe, parse_conninfo
from .durations import format_age, parse_duration
from .errors import CatalogError, ConnectError, QueryError, UsageError
from .model import Backup, Drill, Failure, JobStatus, Restore, Run, Status, Verification
from .queries import read_drill, read_history, read_status

__all__ = [
    "Backup",
    "CatalogError",
    "ConnectError",
    "Drill",
    "Failure",
    "JobStatus",
    "QueryError",
    "Restore",
    "Run",
    "Status",
    "UsageError",
    "Verification",
    "connect",
    "connection_parameters",
    "describe",
    "format_age",
    "parse_conninfo",
    "parse_duration",
    "read_drill",
    "read_history",
    "read_status",
]
