"""Pure logic: durations, connection settings, argument errors (no database)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

from pgkeep_catalog import UsageError, connection_parameters, describe, format_age, parse_duration
from pgkeep_catalog.cli import main


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("26h", 93600),
        ("30m", 1800),
        ("90s", 90),
        ("1d 12h", 129600),
        ("1w", 604800),
        ("2 days", 172800),
        ("1h30m", 5400),
        (" 5 MIN ", 300),
    ],
)
def test_durations_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("0s", "longer than zero"),
        ("12", "not a duration"),
        ("3x", "unknown unit 'x'"),
        ("h", "not a duration"),
        ("-1h", "not a duration"),
        ("999999w", "too long"),
    ],
)
def test_bad_durations_are_usage_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_duration(text)
    assert fragment in str(e.value)
    assert e.value.exit_code == 2


def test_ages_are_short() -> None:
    assert format_age(timedelta(seconds=45)) == "45s"
    assert format_age(timedelta(minutes=12, seconds=59)) == "12m"
    assert format_age(timedelta(hours=3, minutes=5)) == "3h 5m"
    assert format_age(timedelta(days=2, hours=4, minutes=9)) == "2d 4h"
    assert format_age(timedelta(days=1)) == "1d"
    assert format_age(timedelta(seconds=-5)) == "0s"


def test_a_password_on_the_command_line_is_refused_without_showing_it() -> None:
    for conninfo in (
        "postgres://reader:hunter2@db:5432/pgkeep",
        "host=db dbname=pgkeep user=reader password=hunter2",
    ):
        with pytest.raises(UsageError) as e:
            connection_parameters(conninfo, allow_password_in_conninfo=False, env={})
        assert "holds a password" in str(e.value)
        assert "hunter2" not in str(e.value)
    # From the environment (PGKEEP_CATALOG_DATABASE) it is allowed.
    params, _ = connection_parameters("postgres://reader:hunter2@db/pgkeep", env={})
    assert params["password"] == "hunter2"


def test_an_unparsable_string_is_not_quoted() -> None:
    with pytest.raises(UsageError) as e:
        connection_parameters("host=db password", env={})
    assert "not a connection string libpq can parse" in str(e.value)
    assert "password" not in str(e.value).split("parse", 1)[0]
    with pytest.raises(UsageError) as e:
        connection_parameters(
            "postgres://reader@db/pgkeep?sslmode=verify-full&bogus=s3cret", env={}
        )
    assert "s3cret" not in str(e.value)


def test_fail_closed_defaults_unless_set(tmp_path: Path) -> None:
    _, extra = connection_parameters("host=db dbname=pgkeep", env={})
    assert extra["sslmode"] == "verify-full"
    assert extra["connect_timeout"] == "10"
    assert extra["application_name"] == "pgkeep-catalog"
    assert extra["keepalives_idle"] == "10"
    assert "password" not in extra
    _, extra = connection_parameters("host=db sslmode=require connect_timeout=3", env={})
    assert "sslmode" not in extra and "connect_timeout" not in extra
    _, extra = connection_parameters("host=db", env={"PGSSLMODE": "verify-ca", "PGAPPNAME": "x"})
    assert "sslmode" not in extra and "application_name" not in extra


def test_password_files(tmp_path: Path) -> None:
    good = tmp_path / "pw"
    good.write_text("s3cret with spaces\r\n")
    _, extra = connection_parameters("host=db", password_file=good, env={})
    assert extra["password"] == "s3cret with spaces"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    missing = tmp_path / "missing"
    for path, fragment in ((empty, "the file is empty"), (missing, "No such file or directory")):
        with pytest.raises(UsageError) as e:
            connection_parameters("host=db", password_file=path, env={})
        assert str(path) in str(e.value) and fragment in str(e.value)
    with pytest.raises(UsageError) as e:
        connection_parameters("postgres://u:p@db/x", password_file=good, env={})
    assert "already holds a password" in str(e.value)


def test_targets_are_described_without_secrets() -> None:
    env = {"PGUSER": "envuser", "PGPORT": "6543"}
    assert (
        describe({"host": "db", "dbname": "pgkeep", "password": "x"}, env)
        == "envuser@db:6543/pgkeep"
    )
    assert describe({"user": "r", "host": "/run/pg"}, {}) == "r@/run/pg:5432/r"
    assert describe({"user": "r"}, {}) == "r@local socket:5432/r"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "the following arguments are required: COMMAND"),
        (["status", "--max-age", "soon"], "argument --max-age: 'soon' is not a duration"),
        (["history"], "the following arguments are required: JOB"),
        (["history", "main", "--limit", "0"], "argument --limit: '0' must be at least 1"),
        (["--database", "postgres://u:pw@h/db", "status"], "holds a password"),
        (
            ["--password-file", "/nonexistent/pw", "status"],
            "--password-file /nonexistent/pw: cannot read it",
        ),
        (["drill", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], fragment: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(argv, out, err) == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert out.getvalue() == ""
