//! The JSON form of a restore plan (`restore --dry-run --json`), one object whose field names
//! are a stable interface, documented field by field in docs/FORMAT.md.

use serde_json::{Value, json};

use super::SchemaFrom;
use super::plan::{Action, Content, RestorePlan};
use super::select::LeftOutKey;
use crate::manifest::ObjectRole;

impl RestorePlan {
    /// The plan as one JSON object (see docs/FORMAT.md, "restore --dry-run --json").
    pub fn to_json(&self) -> Value {
        let m = &self.manifest;
        let objects: Vec<Value> = self
            .objects_read()
            .iter()
            .map(|o| {
                json!({
                    "key": o.key,
                    "role": o.role,
                    "table": o.table,
                    "rows": o.rows,
                    "raw_bytes": o.raw_bytes,
                    "stored_bytes": o.stored_bytes,
                })
            })
            .collect();
        let (action, holds_data, examples, keep_old, target_bytes) = match &self.action {
            Action::Create => ("create", false, Vec::new(), false, None),
            Action::Replace {
                examples,
                keep_old,
                bytes,
                ..
            } => (
                "replace",
                !examples.is_empty(),
                examples.clone(),
                *keep_old,
                *bytes,
            ),
            Action::InPlace => ("in_place", false, Vec::new(), false, None),
        };
        let mut out = json!({
            "backup": {
                "id": m.id,
                "job": m.job,
                "kind": m.kind,
                "started_at": m.started_at,
                "objects": m.objects.len(),
                "stored_bytes": m.stored_bytes(),
            },
            "objects": objects,
            "target": {
                "database": self.target.dbname(),
                "server": self.target.describe(),
                "exists": !matches!(self.action, Action::Create),
                "holds_data": holds_data,
                "examples": examples,
                "bytes": target_bytes,
            },
            "action": action,
            "build_database": self.build,
            "old_database": self.old,
            "keep_old": keep_old,
            "leftovers_dropped": self.leftovers,
            "strays": self.strays,
            "jobs": self.jobs,
            "space": {
                "loaded_bytes": self.loaded_bytes(),
                "loaded_bytes_is_upper_bound": matches!(
                    self.content,
                    Content::Dump { selection: Some(_), .. }
                ),
                "side_by_side": matches!(self.action, Action::Replace { .. }),
                "target_bytes": target_bytes,
                "staged_bytes": self.staged_bytes(),
                "staging_dir": self.staging_dir.display().to_string(),
            },
        });
        let content = match &self.content {
            Content::Dump {
                tables, selection, ..
            } => json!({
                "kind": "dump",
                "schema_from": Value::Null,
                "selective": selection.is_some(),
                "tables_in_backup": tables.len(),
                "tables": selection.as_ref().map_or(tables, |s| &s.tables),
                "foreign_keys_left_out": keys(
                    selection.as_ref().map_or(&[][..], |s| &s.foreign_keys_left_out)
                ),
                "dependents_left_out": selection
                    .as_ref()
                    .map_or(&[][..], |s| &s.dependents_left_out),
                "rows": Value::Null,
                "sequences": Value::Null,
            }),
            Content::Export(e) => json!({
                "kind": "export",
                "schema_from": match e.schema_from {
                    SchemaFrom::Dump => "dump",
                    SchemaFrom::Migrations => "migrations",
                },
                "migration_version": m.migration_version,
                "allow_drift": e.allow_drift,
                "selective": e.selective,
                "tables_in_backup": m.objects_with_role(&ObjectRole::Table).count(),
                "tables": e.tables.iter().filter_map(|o| o.table.clone()).collect::<Vec<_>>(),
                "foreign_keys_left_out": keys(&e.foreign_keys_left_out),
                "dependents_left_out": Vec::<String>::new(),
                "rows": e.tables.iter().filter_map(|o| o.rows).sum::<u64>(),
                "sequences": m.sequences.len(),
            }),
        };
        out["content"] = content;
        out
    }
}

fn keys(keys: &[LeftOutKey]) -> Vec<Value> {
    keys.iter()
        .map(|k| {
            json!({
                "table": k.table,
                "constraint": k.constraint,
                "references": k.references,
            })
        })
        .collect()
}
