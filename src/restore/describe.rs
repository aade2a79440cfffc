//! How a restore plan prints itself (`restore --dry-run`): the backup and the objects read,
//! the target and what happens to it, leftovers, the content restored (tables, foreign keys
//! left out) and the space it needs. The JSON form is `json`.

use std::fmt;

use super::SchemaFrom;
use super::plan::{Action, Content, RestorePlan};
use crate::human::bytes;
use crate::manifest::{ObjectEntry, ObjectRole};

/// Objects listed one by one in the text form; the JSON form lists all.
const OBJECTS_SHOWN: usize = 20;

impl RestorePlan {
    /// The objects the restore reads.
    pub fn objects_read(&self) -> Vec<&ObjectEntry> {
        match &self.content {
            Content::Dump { object, .. } => vec![object],
            Content::Export(e) => self
                .manifest
                .object(&ObjectRole::Schema)
                .into_iter()
                .chain(e.tables.iter())
                .collect(),
        }
    }

    /// The decoded size of the data loaded: the dump archive (the whole archive for a
    /// selective restore, an upper bound), or the table objects of an export.
    pub fn loaded_bytes(&self) -> u64 {
        match &self.content {
            Content::Dump { object, .. } => object.raw_bytes,
            Content::Export(e) => e.tables.iter().map(|o| o.raw_bytes).sum(),
        }
    }

    /// What is staged in local temp files while the restore runs: the archive for a
    /// parallel dump restore, the schema archive of an export.
    pub fn staged_bytes(&self) -> u64 {
        match &self.content {
            Content::Dump { object, .. } if self.jobs > 1 => object.raw_bytes,
            Content::Dump {
                object,
                selection: Some(_),
                ..
            } if matches!(self.action, Action::InPlace) => object.raw_bytes,
            Content::Dump { .. } => 0,
            Content::Export(_) => self
                .manifest
                .object(&ObjectRole::Schema)
                .map_or(0, |o| o.raw_bytes),
        }
    }
}

impl fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        writeln!(f, "restore plan")?;
        writeln!(
            f,
            "  backup:     {} of job '{}' ({}, {} objects, {} stored, taken {})",
            m.id,
            m.job,
            m.kind,
            m.objects.len(),
            bytes(m.stored_bytes()),
            crate::human::time(m.started_at)
        )?;
        let read = self.objects_read();
        writeln!(
            f,
            "  reads:      {} objects, {} stored, {} decoded",
            read.len(),
            bytes(read.iter().map(|o| o.stored_bytes).sum()),
            bytes(read.iter().map(|o| o.raw_bytes).sum())
        )?;
        for o in read.iter().take(OBJECTS_SHOWN) {
            writeln!(
                f,
                "    {:<28} {:<7} {:>10} stored {:>10} decoded",
                o.key,
                o.role,
                bytes(o.stored_bytes),
                bytes(o.raw_bytes)
            )?;
        }
        if read.len() > OBJECTS_SHOWN {
            writeln!(
                f,
                "    ... and {} more (--json lists them all)",
                read.len() - OBJECTS_SHOWN
            )?;
        }
        writeln!(f, "  target:     {}", self.target.describe())?;
        self.fmt_action(f)?;
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
            Content::Dump {
                object,
                tables,
                selection,
            } => {
                writeln!(
                    f,
                    "  content:    pg_restore of {} ({} decoded){}",
                    object.key,
                    bytes(object.raw_bytes),
                    if self.jobs > 1 {
                        format!(", staged then --jobs {}", self.jobs)
                    } else {
                        ", streamed into one transaction".into()
                    }
                )?;
                match selection {
                    None => writeln!(f, "  tables:     all {} of the archive", tables.len())?,
                    Some(s) => {
                        writeln!(
                            f,
                            "  tables:     {} of {} (--tables): {}",
                            s.tables.len(),
                            tables.len(),
                            s.tables.join(", ")
                        )?;
                        writeln!(
                            f,
                            "  with them:  their indexes, constraints, triggers, defaults and the foreign keys between them; every schema, type and function that uses no table left out"
                        )?;
                        fmt_keys_left_out(f, &s.foreign_keys_left_out)?;
                        if !s.dependents_left_out.is_empty() {
                            writeln!(
                                f,
                                "  left out:   {} (they use tables not restored)",
                                s.dependents_left_out.join(", ")
                            )?;
                        }
                    }
                }
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
                        "foreign keys between restored tables are recreated and validated; those to tables left out are not"
                    } else {
                        "every foreign key is recreated and validated"
                    }
                )?;
                fmt_keys_left_out(f, &e.foreign_keys_left_out)?;
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
        self.fmt_space(f)
    }
}

impl RestorePlan {
    fn fmt_action(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let db = self.target.dbname();
        match &self.action {
            Action::Create => {
                writeln!(f, "  the target: does not exist; it is created (--create)")?;
                writeln!(
                    f,
                    "  built in:   {}, renamed to '{db}' once complete and checked",
                    self.build
                )
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
                    writeln!(f, "  old data:   kept as '{old}' (--keep-old)")
                } else {
                    writeln!(
                        f,
                        "  old data:   renamed to '{old}' at the swap, then dropped (--keep-old keeps it)"
                    )
                }
            }
            Action::InPlace => writeln!(
                f,
                "  the target: exists and is empty; restored in place (--in-place: not atomic, a failure leaves what was loaded)"
            ),
        }
    }

    fn fmt_space(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loaded = bytes(self.loaded_bytes());
        let bound = match &self.content {
            Content::Dump {
                selection: Some(_), ..
            } => "at most ",
            _ => "",
        };
        let beside = match &self.action {
            Action::Replace { bytes: size, .. } => format!(
                "; the old database{} and the new one exist side by side until the swap",
                size.and_then(|b| u64::try_from(b).ok())
                    .map(|b| format!(" ({} now)", bytes(b)))
                    .unwrap_or_default()
            ),
            Action::Create | Action::InPlace => String::new(),
        };
        writeln!(
            f,
            "  space:      {bound}{loaded} of data loaded (decoded), plus its indexes{beside}"
        )?;
        if self.staged_bytes() > 0 {
            writeln!(
                f,
                "  staging:    {} in temp files in {} while it runs",
                bytes(self.staged_bytes()),
                self.staging_dir.display()
            )?;
        }
        Ok(())
    }
}

fn fmt_keys_left_out(
    f: &mut fmt::Formatter<'_>,
    keys: &[super::select::LeftOutKey],
) -> fmt::Result {
    for k in keys {
        writeln!(
            f,
            "  left out:   foreign key {} of {} (to {}, not restored)",
            k.constraint,
            k.table,
            k.references.join(", ")
        )?;
    }
    Ok(())
}
