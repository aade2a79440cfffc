//! The pg_dump archive of a backup (a dump's archive, an export's schema): its header peeked
//! from the store, and the pg_restore major that restoring or listing it needs — what the
//! header asks for, and never less than the pg_dump the manifest records.

use std::io::Read as _;

use tokio_util::io::SyncIoBridge;

use super::Repository;
use crate::manifest::{Manifest, ObjectEntry};
use crate::pg::archive::{ArchiveHeader, HEADER_PREFIX, HeaderError};

/// What reading an archive takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveNeeds {
    /// The oldest pg_restore major that may read it.
    pub major: u32,
    /// The archive, for messages: "the archive (format 1.16.0, written by pg_dump 18.1)".
    pub describe: String,
    /// Its header, when it could be read.
    pub header: Option<ArchiveHeader>,
}

impl Repository {
    /// What pg_restore reading `object` of `manifest` must be: the archive's header is read
    /// from the first decoded bytes of the object (unverified: it only picks the tool; the
    /// read that follows verifies every byte). When the header cannot be read, the manifest's
    /// pg_dump version decides alone, and that read reports why.
    pub async fn archive_needs(&self, manifest: &Manifest, object: &ObjectEntry) -> ArchiveNeeds {
        let header = match self.read_header(manifest, object).await {
            Ok(header) => Some(header),
            Err(e) => {
                tracing::warn!(backup = %manifest.id, object = %object.key, error = %e, "the archive's header cannot be read");
                None
            }
        };
        needs(&manifest.pg_dump_version, manifest.pg_dump_major(), header)
    }

    /// The header at the start of `object`, decoded (not checked against the manifest) only
    /// as far as it goes: a stalled read past the first few hundred bytes does not delay it.
    async fn read_header(
        &self,
        manifest: &Manifest,
        object: &ObjectEntry,
    ) -> Result<ArchiveHeader, String> {
        let decoding = self.decoding(manifest, object).map_err(|e| e.to_string())?;
        let reader = self
            .read(manifest, object)
            .await
            .map_err(|e| crate::error::report(&e))?;
        let source = SyncIoBridge::new(reader);
        let raw = object.raw_bytes;
        tokio::task::spawn_blocking(move || {
            let plain = decoding.open(source).map_err(|e| e.to_string())?;
            let mut decoded = decoding.compression.decoder(plain, raw);
            let mut prefix = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                match ArchiveHeader::parse(&prefix) {
                    Err(HeaderError::Short) if prefix.len() < HEADER_PREFIX => {}
                    parsed => return parsed.map_err(|e| e.to_string()),
                }
                match decoded.read(&mut buf) {
                    Ok(0) => return Err(HeaderError::Short.to_string()),
                    Ok(n) => prefix.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// The header's need, raised to the manifest's pg_dump major when that is newer (or when
/// the header says nothing).
fn needs(pg_dump_version: &str, pg_dump_major: u32, header: Option<ArchiveHeader>) -> ArchiveNeeds {
    let by_header = header.as_ref().and_then(ArchiveHeader::needed_pg_restore);
    let major = by_header.unwrap_or(0).max(pg_dump_major);
    let describe = match &header {
        Some(h) => format!("the archive ({h})"),
        None => {
            format!("the archive (written by pg_dump {pg_dump_version}, as its manifest records)")
        }
    };
    ArchiveNeeds {
        major,
        describe,
        header,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_and_the_manifest_both_count() {
        let header = |format, dump: Option<&str>| ArchiveHeader {
            format,
            server_version: Some("18.1".into()),
            pg_dump_version: dump.map(str::to_string),
        };
        let n = needs("18.1", 18, Some(header((1, 16, 0), Some("18.1"))));
        assert_eq!(n.major, 18);
        assert_eq!(
            n.describe,
            "the archive (format 1.16.0, written by pg_dump 18.1)"
        );
        // A manifest that names an older pg_dump than the archive's own header.
        assert_eq!(
            needs("15.2", 15, Some(header((1, 16, 0), Some("17.4")))).major,
            17
        );
        // A header without versions: its format alone, or the manifest when that is newer.
        assert_eq!(needs("", 0, Some(header((1, 15, 0), None))).major, 16);
        assert_eq!(needs("17.0", 17, Some(header((1, 15, 0), None))).major, 17);
        // No header: the manifest alone.
        let n = needs("16.3", 16, None);
        assert_eq!(n.major, 16);
        assert_eq!(
            n.describe,
            "the archive (written by pg_dump 16.3, as its manifest records)"
        );
    }
}
