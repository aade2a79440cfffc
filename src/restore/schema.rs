//! The schema side of an export restore: the captured schema's pre- and post-data sections
//! through pg_restore, or the application's migrations plus a drift check.

use std::fmt::Write as _;
use std::path::Path;

use tokio_postgres::Client;

use super::RestoreError;
use crate::manifest::{Column, ObjectEntry};
use crate::pg::{PgError, Target, introspect};
use crate::process::{Running, Tool};

/// `maintenance_work_mem` for index builds, during the load and after it.
pub(super) const LOAD_MAINTENANCE_WORK_MEM: &str = "256MB";

/// The staged (verified, decoded) schema archive of an export, and how to apply it.
#[derive(Debug)]
pub(super) struct SchemaArchive {
    pub tool: Tool,
    pub file: tempfile::NamedTempFile,
    pub no_owner: bool,
}

impl SchemaArchive {
    fn path(&self) -> &Path {
        self.file.path()
    }

    /// Runs `pg_restore --section=SECTION` into `target`, optionally through a filtered table
    /// of contents: in one transaction, or with `jobs` > 1 on that many parallel sessions
    /// (post-data: indexes and constraints are then built side by side, as
    /// `pg_restore --jobs` does for a full restore).
    pub async fn restore(
        &self,
        target: &Target,
        section: &str,
        list: Option<&Path>,
        jobs: u32,
    ) -> Result<(), RestoreError> {
        tracing::info!(section, jobs, target = %target.describe(), "restoring the captured schema");
        self.run(target, section, list, jobs).await
    }

    /// Runs exactly the post-data entries `lines` (lines of `pg_restore --list`), in one
    /// transaction.
    pub async fn restore_entries(
        &self,
        target: &Target,
        lines: &[&str],
    ) -> Result<(), RestoreError> {
        let mut list = String::new();
        for line in lines {
            let _ = writeln!(list, "{line}");
        }
        let file = write_list(&list)?;
        tracing::debug!(entries = ?lines, "restoring post-data entries");
        self.run(target, "post-data", Some(file.path()), 1).await
    }

    async fn run(
        &self,
        target: &Target,
        section: &str,
        list: Option<&Path>,
        jobs: u32,
    ) -> Result<(), RestoreError> {
        let mut args = vec![
            "--exit-on-error".to_string(),
            "--no-password".to_string(),
            if jobs > 1 {
                format!("--jobs={jobs}")
            } else {
                "--single-transaction".to_string()
            },
            format!("--section={section}"),
            format!("--dbname={}", dbname_conninfo(target.dbname())),
        ];
        if self.no_owner {
            args.push("--no-owner".to_string());
        }
        if let Some(l) = list {
            args.push(format!("--use-list={}", l.display()));
        }
        args.push(self.path().display().to_string());
        let mut env = target.child_env();
        if section == "post-data" {
            // Index builds sort in memory instead of spilling to disk, as the data load does;
            // the target's own `options` come first and are kept.
            let setting = format!("-c maintenance_work_mem={LOAD_MAINTENANCE_WORK_MEM}");
            match env.iter_mut().find(|(k, _)| k == "PGOPTIONS") {
                Some((_, options)) => *options = format!("{options} {setting}"),
                None => env.push(("PGOPTIONS".to_string(), setting)),
            }
        }
        Running::spawn_plain("pg_restore", self.tool.command(&args, &env))?
            .finish()
            .await?;
        Ok(())
    }

    /// `pg_restore --list` of the archive; with `verbose`, every entry followed by the
    /// entries it depends on; with a section, only that section's entries (not verbose).
    pub async fn list(&self, verbose: bool, section: Option<&str>) -> Result<String, RestoreError> {
        let mut args = vec!["--list".to_string()];
        if verbose {
            args.push("--verbose".to_string());
        }
        if let Some(section) = section {
            args.push(format!("--section={section}"));
        }
        args.push(self.path().display().to_string());
        Ok(self.tool.capture(&args, &[]).await?)
    }

    /// The archive's table of contents with the entries `keep` rejects commented out, written
    /// to a temp file for `--use-list`.
    pub async fn filtered_list(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<tempfile::NamedTempFile, RestoreError> {
        let mut list = String::new();
        for line in self.list(false, None).await?.lines() {
            if line.starts_with(';') || keep(line) {
                let _ = writeln!(list, "{line}");
            } else {
                let _ = writeln!(list, ";{line}");
            }
        }
        write_list(&list)
    }
}

pub(super) fn write_list(list: &str) -> Result<tempfile::NamedTempFile, RestoreError> {
    let fail = |e: std::io::Error| RestoreError::Step(format!("writing a restore list: {e}"));
    let file = tempfile::NamedTempFile::new().map_err(fail)?;
    std::fs::write(file.path(), list).map_err(fail)?;
    Ok(file)
}

/// Applies the job's migrations up to `version` in the target.
pub(super) async fn migrate(
    target: &Target,
    migrations: &crate::config::Migrations,
    version: i64,
) -> Result<(), RestoreError> {
    let files = crate::migrate::discover(&migrations.dir)?;
    let mut client = target.connect().await?;
    let report = crate::migrate::apply(
        &mut client,
        &files,
        &crate::migrate::MigrateOptions {
            table: migrations.table.clone(),
            target_version: Some(version),
        },
    )
    .await?;
    if report.version != Some(version) {
        return Err(RestoreError::Usage(format!(
            "the migrations in {} reach version {:?}, but the backup was taken at version {version}",
            migrations.dir.display(),
            report.version
        )));
    }
    tracing::info!(
        version,
        applied = report.applied.len(),
        "migrations applied to the target"
    );
    Ok(())
}

/// Compares the target's tables with the backup's table objects. Returns the tables the
/// target lacks, and readable lines for every other difference.
pub(super) async fn drift(
    client: &Client,
    tables: &[&ObjectEntry],
) -> Result<(Vec<String>, Vec<String>), RestoreError> {
    let mut missing = Vec::new();
    let mut diff = Vec::new();
    for object in tables {
        let name = object.table.clone().unwrap_or_default();
        let oid: Option<u32> = client
            .query_one("SELECT to_regclass($1)::oid", &[&name])
            .await
            .map_err(|e| PgError::query("looking up a table", "", e))?
            .get(0);
        let Some(oid) = oid else {
            missing.push(name);
            continue;
        };
        let mut found = introspect::table_columns(client, &[oid]).await?;
        let actual: Vec<Column> = found
            .remove(&oid)
            .unwrap_or_default()
            .into_iter()
            .map(|c| Column {
                name: c.name,
                type_name: c.type_name,
                generated: c.generated,
            })
            .collect();
        diff.extend(column_diff(&name, &object.columns, &actual));
    }
    Ok((missing, diff))
}

/// Differences between the backup's columns of a table and the target's, as readable lines.
pub(super) fn column_diff(table: &str, expected: &[Column], actual: &[Column]) -> Vec<String> {
    let mut out = Vec::new();
    for e in expected {
        match actual.iter().find(|a| a.name == e.name) {
            None => out.push(format!(
                "  {table}: column {} {} is missing",
                e.name, e.type_name
            )),
            Some(a) if a.type_name != e.type_name => out.push(format!(
                "  {table}: column {} is {} in the target but {} in the backup",
                e.name, a.type_name, e.type_name
            )),
            Some(a) if a.generated != e.generated => out.push(format!(
                "  {table}: column {} is {}generated in the target but {}generated in the backup",
                e.name,
                if a.generated { "" } else { "not " },
                if e.generated { "" } else { "not " }
            )),
            Some(_) => {}
        }
    }
    for a in actual {
        if !expected.iter().any(|e| e.name == a.name) {
            out.push(format!(
                "  {table}: column {} {} exists only in the target",
                a.name, a.type_name
            ));
        }
    }
    out
}

/// `dbname='...'`: a conninfo naming only the database, so any database name is taken
/// literally and no credential ever appears in pg_restore's argv.
pub(super) fn dbname_conninfo(name: &str) -> String {
    format!(
        "dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbname_conninfo_quotes() {
        assert_eq!(dbname_conninfo("a'b\\c"), "dbname='a\\'b\\\\c'");
    }

    fn col(name: &str, t: &str) -> Column {
        Column {
            name: name.into(),
            type_name: t.into(),
            generated: false,
        }
    }

    #[test]
    fn column_diff_names_each_difference() {
        let expected = vec![
            col("id", "integer"),
            col("name", "text"),
            col("gone", "date"),
        ];
        let actual = vec![
            col("id", "bigint"),
            col("name", "text"),
            col("extra", "jsonb"),
        ];
        let d = column_diff("\"public\".\"t\"", &expected, &actual).join("\n");
        assert!(
            d.contains("column id is bigint in the target but integer in the backup"),
            "{d}"
        );
        assert!(d.contains("column gone date is missing"), "{d}");
        assert!(
            d.contains("column extra jsonb exists only in the target"),
            "{d}"
        );
        assert!(!d.contains("column name"), "{d}");
    }
}
