"""The client's errors: each carries the exit code the command line maps it to."""

from __future__ import annotations


class CatalogError(Exception):
    """A failure with a one-line message that is safe to print (it never holds a password)."""

    exit_code = 1


class UsageError(CatalogError):
    """Bad arguments or settings: exit code 2."""

    exit_code = 2


class ConnectError(CatalogError):
    """The catalog database could not be reached or refused us: exit code 1."""


class QueryError(CatalogError):
    """A catalog query failed (missing schema, missing privileges, a timeout): exit code 1."""
