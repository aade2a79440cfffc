//! A cluster backup's databases, each seen as the dump backup of that database alone: what
//! restores and drills work on.

use super::{BackupKind, Manifest, ObjectRole};

impl Manifest {
    /// The names of a cluster backup's databases, in the manifest's order (empty for others).
    pub fn database_names(&self) -> Vec<&str> {
        self.databases.iter().map(|d| d.name.as_str()).collect()
    }

    /// One database of a cluster backup seen as the dump backup of that database alone: its
    /// archive and the globals, its counts and sequences, `database` and `source` naming it.
    /// Everything that restores or drills a dump backup works on it unchanged. `None` when
    /// this is not a cluster backup or holds no database `name`.
    pub fn database_backup(&self, name: &str) -> Option<Manifest> {
        if self.kind != BackupKind::Cluster {
            return None;
        }
        let entry = self.databases.iter().find(|d| d.name == name)?;
        let mut out = self.clone();
        out.kind = BackupKind::Dump;
        out.source = match self.source.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => self.source.clone(),
        };
        out.database.clone_from(&entry.name);
        out.objects = self
            .objects
            .iter()
            .filter(|o| o.key == entry.object || o.role != ObjectRole::Dump)
            .cloned()
            .collect();
        out.snapshot = Some(entry.snapshot.clone());
        out.wal_lsn = entry.wal_lsn.clone().or_else(|| self.wal_lsn.clone());
        out.tables.clone_from(&entry.tables);
        out.sequences.clone_from(&entry.sequences);
        out.databases = Vec::new();
        // A view of the stored manifest, not a stored one: it has no checksum of its own.
        out.checksum = None;
        Some(out)
    }

    /// What a restore or drill works on: the backup itself, or for a cluster backup each of
    /// its databases as a dump backup ([`Manifest::database_backup`]).
    pub fn database_backups(&self) -> Vec<Manifest> {
        if self.kind == BackupKind::Cluster {
            self.databases
                .iter()
                .filter_map(|d| self.database_backup(&d.name))
                .collect()
        } else {
            vec![self.clone()]
        }
    }
}
