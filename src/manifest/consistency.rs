//! The consistency checks a manifest passes before use: it lies in its own job's and id's
//! directory, lists each object once under a plain relative name, has the objects its kind
//! needs, and names each table and sequence once.

use super::{BTreeSet, BackupKind, Manifest, ObjectRole, id_time, valid_object_name};

impl Manifest {
    /// What makes this manifest contradict itself or the place it was read from: everything a
    /// restore would otherwise discover only half-way. Empty when it is consistent.
    pub fn problems(&self, job: &str, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.job != job {
            out.push(format!(
                "it names job '{}' but lies in the directory of job '{job}'",
                self.job
            ));
        }
        if self.id != id {
            out.push(format!(
                "it names backup '{}' but lies in the directory '{id}'",
                self.id
            ));
        }
        if id_time(&self.id).is_none() {
            out.push(format!("'{}' is not a backup id", self.id));
        }
        if self.finished_at < self.started_at {
            out.push("it finished before it started".into());
        }
        if self.objects.is_empty() {
            out.push("it lists no objects".into());
        }
        let mut keys = BTreeSet::new();
        let mut tables = BTreeSet::new();
        for o in &self.objects {
            if !valid_object_name(&o.key) {
                out.push(format!(
                    "object name '{}' is not a plain relative path",
                    o.key
                ));
            }
            if !keys.insert(o.key.as_str()) {
                out.push(format!("object '{}' is listed twice", o.key));
            }
            if o.sha256.len() != 64 || !o.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(format!("object '{}' has no valid sha256", o.key));
            }
            if o.role == ObjectRole::Table {
                match &o.table {
                    Some(t) if !tables.insert(t.as_str()) => {
                        out.push(format!("table {t} has two objects"));
                    }
                    Some(_) => {}
                    None => out.push(format!("table object '{}' names no table", o.key)),
                }
                if o.rows.is_none() {
                    out.push(format!("table object '{}' records no row count", o.key));
                }
            }
        }
        let count = |role: &ObjectRole| self.objects_with_role(role).count();
        match &self.kind {
            BackupKind::Dump if count(&ObjectRole::Dump) != 1 => {
                out.push("a dump backup needs exactly one dump object".into());
            }
            BackupKind::Export if count(&ObjectRole::Schema) != 1 => {
                out.push("an export backup needs exactly one schema object".into());
            }
            BackupKind::Cluster => self.cluster_problems(&mut out),
            _ => {}
        }
        if !self.databases.is_empty() && self.kind != BackupKind::Cluster {
            out.push("only a cluster backup lists databases".into());
        }
        let encrypted = self.objects.iter().any(|o| o.encryption.is_some());
        if encrypted
            && self
                .encryption
                .as_ref()
                .is_none_or(|e| e.recipients.is_empty())
        {
            out.push("objects are encrypted but it names no recipients".into());
        }
        let mut counted = BTreeSet::new();
        for t in &self.tables {
            if !counted.insert(t.name.as_str()) {
                out.push(format!("table {} is counted twice", t.name));
            }
        }
        if !self.tables.is_empty() && self.kind != BackupKind::Dump {
            out.push("only a dump backup lists counted tables".into());
        }
        let mut sequences = BTreeSet::new();
        for s in &self.sequences {
            if !sequences.insert(s.name.as_str()) {
                out.push(format!("sequence {} is listed twice", s.name));
            }
        }
        out
    }

    /// A cluster backup: at least one database, each named once with its own dump object,
    /// every dump object some database's, no export objects, and no counts of its own (each
    /// database has them).
    fn cluster_problems(&self, out: &mut Vec<String>) {
        if self.databases.is_empty() {
            out.push("a cluster backup lists no databases".into());
        }
        let mut names = BTreeSet::new();
        let mut archives = BTreeSet::new();
        for d in &self.databases {
            if !names.insert(d.name.as_str()) {
                out.push(format!("database '{}' is listed twice", d.name));
            }
            if !archives.insert(d.object.as_str()) {
                out.push(format!(
                    "object '{}' is the archive of two databases",
                    d.object
                ));
            }
            let object = self.objects.iter().find(|o| o.key == d.object);
            if object.is_none_or(|o| o.role != ObjectRole::Dump) {
                out.push(format!(
                    "database '{}' names '{}', which is not a dump object of it",
                    d.name, d.object
                ));
            }
            let mut counted = BTreeSet::new();
            for t in &d.tables {
                if !counted.insert(t.name.as_str()) {
                    out.push(format!(
                        "table {} of database '{}' is counted twice",
                        t.name, d.name
                    ));
                }
            }
        }
        for o in &self.objects {
            match o.role {
                ObjectRole::Dump if !archives.contains(o.key.as_str()) => {
                    out.push(format!("dump object '{}' belongs to no database", o.key));
                }
                ObjectRole::Schema | ObjectRole::Table => {
                    out.push(format!("a cluster backup holds no {} objects", o.role));
                }
                _ => {}
            }
        }
        if self.snapshot.is_some() || !self.sequences.is_empty() {
            out.push("a cluster backup records snapshots and sequences per database".into());
        }
    }
}
