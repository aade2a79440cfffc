"""The command line: `python3 -m pgkeep_catalog [--database CONNINFO] COMMAND`.

Exit codes, for scripts and monitoring checks: 0 the answer is good; 1 the check failed (a job
older than --max-age, a failed drill, no runs of the job) or the catalog could not be read;
2 a usage or settings error. Errors are one line on stderr, starting with "error: ".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence, TextIO

from psycopg2.extensions import connection as Connection

from . import __version__
from .connection import connect
from .durations import format_age, parse_duration
from .errors import CatalogError, UsageError
from .model import Drill, Status, iso
from .queries import read_drill, read_history, read_status

#: The connection string when --database is not given; unlike the command line, it may hold
#: a password (the environment is not shown in the process list).
DATABASE_ENV = "PGKEEP_CATALOG_DATABASE"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python3 -m pgkeep_catalog",
        description="Read pgkeep's catalog of backup history (read-only).",
        epilog="Exit codes: 0 ok; 1 check failed or catalog unreadable; 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"pgkeep_catalog {__version__}")
    parser.add_argument(
        "--database",
        metavar="CONNINFO",
        help=f"libpq URL or key=value string, without a password (default: ${DATABASE_ENV}, "
        "then the PG* environment); sslmode defaults to verify-full",
    )
    parser.add_argument(
        "--password-file",
        metavar="PATH",
        type=Path,
        help="a file holding just the password (else PGPASSWORD or ~/.pgpass)",
    )
    parser.add_argument(
        "--connect-timeout",
        metavar="SECONDS",
        type=_positive_int,
        default=10,
        help="give up connecting after this long (default 10)",
    )
    parser.add_argument(
        "--statement-timeout",
        metavar="DURATION",
        type=_duration,
        default=timedelta(seconds=30),
        help="cancel a query after this long (default 30s)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    status = commands.add_parser("status", help="each job's last successful backup and its age")
    status.add_argument(
        "--job",
        action="append",
        metavar="JOB",
        help="only this job (repeatable); a job with "
        "no backup in the catalog is then reported, and is stale",
    )
    status.add_argument(
        "--max-age",
        type=_duration,
        metavar="DURATION",
        help="exit 1 when a job's last successful backup finished longer ago (e.g. 26h)",
    )
    status.add_argument("--json", action="store_true", help="print JSON")

    history = commands.add_parser("history", help="one job's runs, newest first")
    history.add_argument("job", metavar="JOB")
    history.add_argument("--limit", type=_positive_int, default=20, help="at most N runs (20)")
    history.add_argument(
        "--with-manifest", action="store_true", help="include each run's manifest (--json)"
    )
    history.add_argument("--json", action="store_true", help="print JSON")

    drill = commands.add_parser("drill", help="the last drill result: verification and restore")
    drill.add_argument("--job", metavar="JOB", help="only drills of this job's backups")
    drill.add_argument(
        "--max-age",
        type=_duration,
        metavar="DURATION",
        help="exit 1 unless a successful drill finished within this long (e.g. 8d)",
    )
    drill.add_argument("--json", action="store_true", help="print JSON")
    return parser


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, sort_keys=False)
    out.write("\n")


def run_status(args: argparse.Namespace, conn: Connection, out: TextIO) -> Optional[str]:
    """Prints the status; returns the failed check's message, if any."""
    status: Status = read_status(conn, args.job)
    max_age: Optional[timedelta] = args.max_age
    if args.json:
        _print_json(status.to_json(max_age), out)
    elif not status.jobs:
        print("no backups recorded in the catalog", file=out)
    for job in [] if args.json else status.jobs:
        if job.last_backup is None:
            line = f"{job.job}: no committed backup"
        else:
            b = job.last_backup
            line = (
                f"{job.job}: last backup {b.backup_id} ({b.kind}, {human_bytes(b.stored_bytes)}) "
                f"finished {iso(b.finished_at)}, {format_age(job.age or timedelta(0))} ago"
            )
        if job.failing and job.last_failure is not None:
            line += (
                f"; last run failed at {iso(job.last_failure.started_at)}: {job.last_failure.error}"
            )
        if max_age is not None and job.is_stale(max_age):
            line += f" [STALE: older than {format_age(max_age)}]"
        print(line, file=out)
    if max_age is None:
        return None
    if not status.jobs:
        return "no backups recorded in the catalog"
    stale = status.stale(max_age)
    if not stale:
        return None
    described = ", ".join(
        f"{j.job} (no backup)" if j.age is None else f"{j.job} ({format_age(j.age)} ago)"
        for j in stale
    )
    return f"{len(stale)} of {len(status.jobs)} jobs have no backup newer than {format_age(max_age)}: {described}"


def run_history(args: argparse.Namespace, conn: Connection, out: TextIO) -> Optional[str]:
    runs = read_history(conn, args.job, args.limit, args.with_manifest)
    if args.json:
        _print_json([r.to_json() for r in runs], out)
    for r in [] if args.json else runs:
        parts = [iso(r.started_at) or "", r.status, r.backup_id or "-", r.kind]
        if r.status in ("committed", "pruned"):
            parts.append(f"{human_bytes(r.stored_bytes)} in {r.objects} objects")
        if r.duration is not None:
            parts.append(f"took {format_age(r.duration)}")
        if r.error:
            parts.append(f"error: {r.error}")
        print("  ".join(parts), file=out)
    if not runs:
        return f"the catalog has no runs of job '{args.job}'"
    return None


def run_drill(args: argparse.Namespace, conn: Connection, out: TextIO) -> Optional[str]:
    drill: Drill = read_drill(conn, args.job)
    max_age: Optional[timedelta] = args.max_age
    if args.json:
        _print_json(drill.to_json(max_age), out)
    elif not drill.recorded:
        print("no drill recorded", file=out)
    else:
        v, r = drill.verification, drill.restore
        if v is None:
            print("last verification: none recorded", file=out)
        else:
            line = f"last verification: {v.status}, backup {v.job}/{v.backup_id}, started {iso(v.started_at)}"
            if v.damaged_objects:
                line += f"; damaged: {', '.join(v.damaged_objects)}"
            if v.error:
                line += f"; error: {v.error}"
            print(line, file=out)
        if r is None:
            print("last restore: none recorded", file=out)
        else:
            what = "last restore" if r.kind == "restore" else f"last restore ({r.kind})"
            line = f"{what}: {r.status}, backup {r.job}/{r.backup_id} into {r.target}, started {iso(r.started_at)}"
            if r.error:
                line += f"; error: {r.error}"
            print(line, file=out)
    if drill.failed:
        return "the last drill failed"
    if max_age is not None and drill.is_stale(max_age):
        if not drill.recorded:
            return "no drill recorded"
        return f"no successful drill finished within {format_age(max_age)}"
    return None


_COMMANDS: dict[str, Callable[[argparse.Namespace, Connection, TextIO], Optional[str]]] = {
    "status": run_status,
    "history": run_history,
    "drill": run_drill,
}


def main(
    argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Runs one command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        from_argv = args.database is not None
        conninfo = args.database if from_argv else os.environ.get(DATABASE_ENV, "")
        conn = connect(
            conninfo,
            password_file=args.password_file,
            allow_password_in_conninfo=not from_argv,
            connect_timeout_s=args.connect_timeout,
            statement_timeout=args.statement_timeout,
        )
        try:
            failed = _COMMANDS[args.command](args, conn, out)
        finally:
            conn.close()
    except CatalogError as e:
        out.flush()
        print(f"error: {e}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=err)
        return 1
    out.flush()
    if failed:
        print(f"error: {failed}", file=err)
        return 1
    return 0
