//! Test harness: throwaway PostgreSQL clusters and S3 servers on loopback, cleaned up on exit.
#![allow(dead_code)]

pub mod cli;
pub mod config;
pub mod faultproxy;
pub mod pg;
pub mod s3;
pub mod tools;
