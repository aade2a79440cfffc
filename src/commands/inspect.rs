//! `pgkeep list` and `pgkeep show`: committed backups for people and for scripts. A damaged
//! backup is shown, marked, beside the others; it never stops a listing.

use std::fmt::Write as _;

use serde_json::json;

use super::{identities, open_repository, resolve};
use crate::config::Config;
use crate::human;
use crate::manifest::Manifest;
use crate::repository::DamagedBackup;

/// `pgkeep list [--job JOB] [--json] [--verify]`: committed backups, newest first, as a table
/// or a JSON array; damaged ones marked. With `verify`, every object is also checked to be in
/// the store with its recorded size (no download).
///
/// # Errors
/// A usage error for an unknown job; the store cannot be listed.
pub async fn list(
    config: &Config,
    job: Option<&str>,
    as_json: bool,
    verify: bool,
) -> anyhow::Result<String> {
    if let Some(name) = job {
        config.job(Some(name))?;
    }
    let repo = open_repository(config).await?;
    let listing = repo.list(job).await?;
    let mut rows: Vec<Row> = Vec::new();
    let drilled: Vec<bool> = listing
        .backups
        .iter()
        .map(|m| listing.was_drilled(m))
        .collect();
    for (m, drilled) in listing.backups.into_iter().zip(drilled) {
        let problems = if verify {
            repo.check_objects(&m)
                .await?
                .iter()
                .map(ToString::to_string)
                .collect()
        } else {
            Vec::new()
        };
        rows.push(Row::Intact(Box::new(m), problems, drilled));
    }
    rows.extend(listing.damaged.into_iter().map(Row::Damaged));
    rows.sort_by(|a, b| b.id().cmp(a.id()).then_with(|| a.job().cmp(b.job())));
    if as_json {
        let items: Vec<serde_json::Value> = rows.iter().map(Row::json).collect();
        return Ok(serde_json::to_string_pretty(&items)? + "\n");
    }
    if rows.is_empty() {
        return Ok(format!("no backups in {}\n", repo.describe()));
    }
    let mut out = format!(
        "{:<22} {:<16} {:<7} {:<20} {:>9} {:>10}\n",
        "ID", "JOB", "KIND", "STARTED", "DURATION", "SIZE"
    );
    for row in &rows {
        match row {
            Row::Intact(m, problems, drilled) => {
                let databases = match m.databases.len() {
                    0 => String::new(),
                    1 => "  1 database".to_string(),
                    n => format!("  {n} databases"),
                };
                let _ = writeln!(
                    out,
                    "{:<22} {:<16} {:<7} {:<20} {:>8.1}s {:>10}{databases}{}",
                    m.id,
                    m.job,
                    m.kind,
                    human::time(m.started_at),
                    human::seconds_between(m.started_at, m.finished_at),
                    human::bytes(m.stored_bytes()),
                    if *drilled { "  drilled" } else { "" }
                );
                for p in problems {
                    let _ = writeln!(out, "  DAMAGED: {p}");
                }
            }
            Row::Damaged(d) => {
                let _ = writeln!(
                    out,
                    "{:<22} {:<16} DAMAGED {}",
                    d.id,
                    d.job,
                    crate::error::report(&d.error)
                );
            }
        }
    }
    Ok(out)
}

enum Row {
    /// A readable backup, the problems `--verify` found, and whether a drill of it passed.
    Intact(Box<Manifest>, Vec<String>, bool),
    Damaged(DamagedBackup),
}

impl Row {
    fn id(&self) -> &str {
        match self {
            Row::Intact(m, ..) => &m.id,
            Row::Damaged(d) => &d.id,
        }
    }

    fn job(&self) -> &str {
        match self {
            Row::Intact(m, ..) => &m.job,
            Row::Damaged(d) => &d.job,
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Row::Intact(m, problems, drilled) => json!({
                "id": m.id,
                "job": m.job,
                "kind": m.kind,
                "started_at": m.started_at,
                "finished_at": m.finished_at,
                "bytes": m.stored_bytes(),
                "database": m.database,
                "databases": m.database_names(),
                "server_version": m.server_version,
                "objects": m.objects.len(),
                "damaged": !problems.is_empty(),
                "problems": problems,
                "checksum": m.checksum.is_some(),
                "drilled": drilled,
            }),
            Row::Damaged(d) => json!({
                "id": d.id,
                "job": d.job,
                "damaged": true,
                "error": crate::error::report(&d.error),
            }),
        }
    }
}

/// `pgkeep show BACKUP`: one backup's manifest.
///
/// # Errors
/// As `resolve` (a damaged manifest is an error naming what is wrong with it).
pub async fn show(
    config: &Config,
    job: Option<&str>,
    backup: &str,
    as_json: bool,
) -> anyhow::Result<String> {
    let repo = open_repository(config).await?;
    let m = resolve(config, &repo, job, backup).await?;
    if as_json {
        let mut v = serde_json::to_value(&m)?;
        v["bytes"] = json!(m.stored_bytes());
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let mut out = String::new();
    let _ = writeln!(out, "backup:          {}", m.id);
    let _ = writeln!(out, "job:             {} ({})", m.job, m.kind);
    let _ = writeln!(out, "started:         {}", human::time(m.started_at));
    let _ = writeln!(
        out,
        "finished:        {} ({:.1}s)",
        human::time(m.finished_at),
        human::seconds_between(m.started_at, m.finished_at)
    );
    let _ = writeln!(out, "source:          {}", m.source);
    let _ = writeln!(out, "server version:  {}", m.server_version);
    let _ = writeln!(out, "pg_dump version: {}", m.pg_dump_version);
    let _ = writeln!(
        out,
        "wal position:    {}",
        m.wal_lsn.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "compression:     {}", m.compression);
    let globals = match (&m.globals.included, &m.globals.note) {
        (true, None) => "included".to_string(),
        (_, Some(n)) => n.clone(),
        (false, None) => "not included".to_string(),
    };
    let _ = writeln!(out, "globals:         {globals}");
    let _ = writeln!(
        out,
        "integrity:       {}",
        if m.checksum.is_some() {
            "manifest checksum verified"
        } else {
            "manifest written before pgkeep recorded its checksum (not checked)"
        }
    );
    let drill = match repo.drill_record(&m.job, &m.id).await {
        Ok(Some(r)) => format!(
            "passed {} on {} ({} tables, {} rows, {} sequences checked)",
            human::time(r.drilled_at),
            r.server,
            r.tables,
            r.rows,
            r.sequences
        ),
        Ok(None) => "never passed a drill".to_string(),
        Err(e) => format!(
            "the drill record cannot be read: {}",
            crate::error::report(&e)
        ),
    };
    let _ = writeln!(out, "last drill:      {drill}");
    if !m.databases.is_empty() {
        let _ = writeln!(out, "databases:");
        for d in &m.databases {
            let _ = writeln!(
                out,
                "  {:<24} {:>6} tables {:>12} rows  in {}",
                human::name(&d.name),
                d.tables.len(),
                d.tables.iter().map(|t| t.rows).sum::<u64>(),
                d.object
            );
        }
    }
    let _ = writeln!(out, "stored size:     {}", human::bytes(m.stored_bytes()));
    let _ = writeln!(out, "objects:");
    for o in &m.objects {
        let _ = writeln!(
            out,
            "  {:<24} {:<8} {:>10} raw {:>10} stored  sha256 {}",
            o.key,
            o.role,
            human::bytes(o.raw_bytes),
            human::bytes(o.stored_bytes),
            o.sha256
        );
    }
    Ok(out)
}

/// `pgkeep show BACKUP --globals`: the backup's globals SQL (roles, tablespaces), read
/// verified (size, sha256, decoded, decrypted).
///
/// # Errors
/// As `resolve`; a usage error for a backup without globals; damage.
pub async fn show_globals(
    config: &Config,
    job: Option<&str>,
    backup: &str,
    identity: &[std::path::PathBuf],
) -> anyhow::Result<String> {
    let repo = open_repository(config)
        .await?
        .reading_with(identities(config, identity)?);
    let m = resolve(config, &repo, job, backup).await?;
    Ok(crate::restore::globals_sql(&repo, &m).await?)
}
