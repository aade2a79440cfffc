//! How a restore plan prints itself (`restore --dry-run`): the backup, the target and what
//! happens to it, leftovers, and the content restored.

use std::fmt;

use super::SchemaFrom;
use super::plan::{Action, Content, RestorePlan};
use crate::manifest::ObjectRole;

impl fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        let db = self.target.dbname();
        writeln!(f, "restore plan")?;
        writeln!(
            f,
            "  backup:     {} of job '{}' ({}, {} objects, {} stored, taken {})",
            m.id,
            m.job,
            m.kind,
            m.objects.len(),
            crate::human::bytes(m.stored_bytes()),
            crate::human::time(m.started_at)
        )?;
        writeln!(f, "  target:     {}", self.target.describe())?;
        match &self.action {
            Action::Create => {
                writeln!(f, "  the target: does not exist; it is created (--create)")?;
                writeln!(
                    f,
                    "  built in:   {}, renamed to '{db}' once complete and checked",
                    self.build
                )?;
            }
            Action::Replace {
                examples, keep_old, ..
            } => {
                if examples.is_empty() {
                    writeln!(f, "  the target: exists and is empty; it is replaced")?;
                } else {
                    writeln!(
                        f,
                        "  the target: holds data ({}); it is replaced (--clean)",
                        examples.join(", ")
                    )?;
                }
                writeln!(
                    f,
                    "  built in:   {} beside it, with its owner, privileges, settings and comment; swapped in by renaming once complete and checked",
                    self.build
                )?;
                let old = self.old.as_deref().unwrap_or_default();
                if *keep_old {
                    writeln!(f, "  old data:   kept as '{old}' (--keep-old)")?;
                } else {
                    writeln!(
                        f,
                        "  old data:   renamed to '{old}' at the swap, then dropped (--keep-old keeps it)"
                    )?;
                }
                writeln!(
                    f,
                    "  space:      the old and the new database exist side by side until the swap"
                )?;
            }
            Action::InPlace => writeln!(
                f,
                "  the target: exists and is empty; restored in place (--in-place: not atomic, a failure leaves what was loaded)"
            )?,
        }
        for l in &self.leftovers {
            writeln!(
                f,
                "  leftover:   {l} (of a restore that was killed) is dropped first"
            )?;
        }
        for s in &self.strays {
            writeln!(
                f,
                "  note:       database {s} is left from an earlier restore"
            )?;
        }
        match &self.content {
            Content::Dump { object } => {
                writeln!(
                    f,
                    "  content:    pg_restore of {} ({} decoded){}",
                    object.key,
                    crate::human::bytes(object.raw_bytes),
                    if self.jobs > 1 {
                        format!(", staged then --jobs {}", self.jobs)
                    } else {
                        ", streamed into one transaction".into()
                    }
                )?;
            }
            Content::Export(e) => {
                let all = m.objects_with_role(&ObjectRole::Table).count();
                writeln!(
                    f,
                    "  schema:     {}",
                    match e.schema_from {
                        SchemaFrom::Dump =>
                            "the schema captured in the backup's snapshot".to_string(),
                        SchemaFrom::Migrations => format!(
                            "the job's migrations up to version {}, checked against the captured schema{}",
                            m.migration_version.unwrap_or_default(),
                            if e.allow_drift {
                                " (--allow-drift)"
                            } else {
                                ""
                            }
                        ),
                    }
                )?;
                writeln!(
                    f,
                    "  tables:     {} of {all}{}, {} session(s) at once, {} rows",
                    e.tables.len(),
                    if e.selective { " (--tables)" } else { "" },
                    self.jobs,
                    e.tables.iter().filter_map(|o| o.rows).sum::<u64>()
                )?;
                writeln!(
                    f,
                    "  keys:       {}",
                    if e.selective {
                        "foreign keys between restored tables are recreated; those to tables left out are not"
                    } else {
                        "every foreign key is recreated and validated"
                    }
                )?;
                if !e.early.is_empty() {
                    writeln!(
                        f,
                        "  early:      {} index/key builds start as soon as their tables are loaded",
                        e.early.len()
                    )?;
                }
                writeln!(f, "  sequences:  {} set and checked", m.sequences.len())?;
            }
        }
        Ok(())
    }
}
