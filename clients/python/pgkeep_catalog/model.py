"""What the catalog answers, as typed records, and their JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional


def iso(value: Optional[datetime]) -> Optional[str]:
    """RFC 3339 in UTC with microseconds (what the catalog stores), or None."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def seconds(value: Optional[timedelta]) -> Optional[float]:
    return None if value is None else round(value.total_seconds(), 3)


@dataclass(frozen=True)
class Backup:
    """A committed backup (a row of `pgkeep.backup_run` with status `committed`)."""

    job: str
    backup_id: str
    kind: str
    started_at: datetime
    finished_at: datetime
    stored_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "kind": self.kind,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "stored_bytes": self.stored_bytes,
        }


@dataclass(frozen=True)
class Failure:
    """A failed run: it has no manifest, so only the catalog knows of it."""

    job: str
    started_at: datetime
    finished_at: datetime
    error: str

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "error": self.error,
        }


@dataclass(frozen=True)
class JobStatus:
    """One job: its newest committed backup and its newest failure (either may be missing)."""

    job: str
    last_backup: Optional[Backup]
    last_failure: Optional[Failure]
    #: The time since the last backup finished, by the database server's clock.
    age: Optional[timedelta]

    @property
    def failing(self) -> bool:
        """Whether the newest run recorded is a failure."""
        if self.last_failure is None:
            return False
        return (
            self.last_backup is None or self.last_failure.started_at > self.last_backup.started_at
        )

    def is_stale(self, max_age: timedelta) -> bool:
        """No committed backup, or one that finished longer than `max_age` ago."""
        return self.age is None or self.age > max_age

    def to_json(self, max_age: Optional[timedelta] = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job": self.job,
            "last_backup": self.last_backup.to_json() if self.last_backup else None,
            "age_seconds": seconds(self.age),
            "last_failure": self.last_failure.to_json() if self.last_failure else None,
            "failing": self.failing,
        }
        if max_age is not None:
            out["stale"] = self.is_stale(max_age)
        return out


@dataclass(frozen=True)
class Status:
    """Every job's last successful backup, as of `checked_at` (the server's transaction time)."""

    checked_at: datetime
    jobs: list[JobStatus] = field(default_factory=list)

    def stale(self, max_age: timedelta) -> list[JobStatus]:
        return [j for j in self.jobs if j.is_stale(max_age)]

    def to_json(self, max_age: Optional[timedelta] = None) -> dict[str, Any]:
        out: dict[str, Any] = {"checked_at": iso(self.checked_at)}
        if max_age is not None:
            out["max_age_seconds"] = seconds(max_age)
            out["ok"] = not self.stale(max_age)
        out["jobs"] = [j.to_json(max_age) for j in self.jobs]
        return out


@dataclass(frozen=True)
class Run:
    """One backup run of a job, whatever its status (`running`, `committed`, `failed`, `pruned`)."""

    run_id: int
    job: str
    backup_id: Optional[str]
    kind: str
    status: str
    started_at: datetime
    finished_at: Optional[datetime]
    stored_bytes: int
    server_version: Optional[str]
    error: Optional[str]
    #: How many stored objects the catalog lists for the run.
    objects: int
    #: The manifest document (jsonb), when asked for.
    manifest: Optional[dict[str, Any]] = None

    @property
    def duration(self) -> Optional[timedelta]:
        return None if self.finished_at is None else self.finished_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "job": self.job,
            "backup_id": self.backup_id,
            "kind": self.kind,
            "status": self.status,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_seconds": seconds(self.duration),
            "stored_bytes": self.stored_bytes,
            "server_version": self.server_version,
            "objects": self.objects,
            "error": self.error,
        }
        if self.manifest is not None:
            out["manifest"] = self.manifest
        return out


@dataclass(frozen=True)
class Verification:
    """The re-reading of a backup's objects (`pgkeep.verification`)."""

    job: str
    backup_id: Optional[str]
    status: str
    started_at: datetime
    finished_at: Optional[datetime]
    #: Keys of the objects that failed their checks (text[]).
    damaged_objects: list[str]
    error: Optional[str]

    @property
    def failed(self) -> bool:
        return self.status in ("damaged", "failed")

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "backup_id": self.backup_id,
            "status": self.status,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "damaged_objects": list(self.damaged_objects),
            "error": self.error,
        }


@dataclass(frozen=True)
class Restore:
    """A restore of a backup (`pgkeep.restore_run`); the target never carries a password."""

    job: str
    backup_id: Optional[str]
    target: str
    status: str
    started_at: datetime
    finished_at: Optional[datetime]
    error: Optional[str]
    #: `restore` (an operator's) or `drill` (`pgkeep drill`: into a scratch database, checked).
    kind: str = "restore"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "kind": self.kind,
            "backup_id": self.backup_id,
            "target": self.target,
            "status": self.status,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "error": self.error,
        }


@dataclass(frozen=True)
class Drill:
    """The newest verification and the newest restore recorded (either may be missing)."""

    checked_at: datetime
    verification: Optional[Verification]
    restore: Optional[Restore]

    @property
    def recorded(self) -> bool:
        return self.verification is not None or self.restore is not None

    @property
    def failed(self) -> bool:
        """Whether the newest verification or the newest restore failed."""
        return bool(
            (self.verification and self.verification.failed)
            or (self.restore and self.restore.failed)
        )

    @property
    def last_finished(self) -> Optional[datetime]:
        """When the newest finished, successful check of either kind ended."""
        times = [
            r.finished_at
            for r in (self.verification, self.restore)
            if r is not None and r.finished_at is not None and not r.failed
        ]
        return max(times) if times else None

    def is_stale(self, max_age: timedelta) -> bool:
        last = self.last_finished
        return last is None or self.checked_at - last > max_age

    def to_json(self, max_age: Optional[timedelta] = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "checked_at": iso(self.checked_at),
            "recorded": self.recorded,
            "failed": self.failed,
            "verification": self.verification.to_json() if self.verification else None,
            "restore": self.restore.to_json() if self.restore else None,
        }
        if max_age is not None:
            out["max_age_seconds"] = seconds(max_age)
            out["stale"] = self.is_stale(max_age)
        return out
