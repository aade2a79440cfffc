//! pgkeep's integration tests: one binary, real PostgreSQL and real S3-compatible servers.

mod common;
mod suite;
