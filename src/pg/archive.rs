//! The header of a pg_dump custom-format archive ("PGDMP", the archive format version, then
//! the pg_dump and server versions that wrote it), and the pg_restore major each format
//! version needs: read from the archive itself, so the choice of pg_restore does not rest on
//! the manifest alone.

use std::fmt;

/// Longest prefix worth decoding to find the header: the fixed part is 12 bytes, then seven
/// integers and three short strings (a database name of at most 63 bytes, two versions), so
/// a header is rarely longer than 200 bytes.
pub const HEADER_PREFIX: usize = 4096;

/// What an archive's header says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHeader {
    /// The archive format version, (major, minor, revision): 1.14 for pg_dump 12–15, 1.15 for
    /// 16, 1.16 for 17 and 18.
    pub format: (u8, u8, u8),
    /// The server the dump was taken from, e.g. `18.1`, when the header records it.
    pub server_version: Option<String>,
    /// The pg_dump that wrote it, e.g. `18.1`, when the header records it.
    pub pg_dump_version: Option<String>,
}

/// Why a prefix is not a custom-format archive header pgkeep can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("it does not start with PGDMP (not a pg_dump custom-format archive)")]
    NotCustom,
    #[error("its header ends early")]
    Short,
    #[error("its header is malformed: {0}")]
    Malformed(&'static str),
}

impl ArchiveHeader {
    /// Reads the header at the start of `bytes` (the decoded archive's first bytes).
    ///
    /// # Errors
    /// `HeaderError` when `bytes` does not begin with a custom-format header.
    pub fn parse(bytes: &[u8]) -> Result<ArchiveHeader, HeaderError> {
        let mut r = Reader {
            bytes,
            at: 0,
            int_size: 4,
        };
        if r.take(5)? != b"PGDMP" {
            return Err(HeaderError::NotCustom);
        }
        let vmaj = r.byte()?;
        let vmin = r.byte()?;
        let vrev = if vmaj > 1 || vmin > 0 { r.byte()? } else { 0 };
        let format = (vmaj, vmin, vrev);
        let mut header = ArchiveHeader {
            format,
            server_version: None,
            pg_dump_version: None,
        };
        // The versions are recorded from 1.10 on; older archives are told by format alone.
        if (vmaj, vmin) < (1, 10) || vmaj > 1 {
            return Ok(header);
        }
        r.int_size = usize::from(r.byte()?);
        if !(1..=8).contains(&r.int_size) {
            return Err(HeaderError::Malformed("integer size"));
        }
        let _offset_size = r.byte()?;
        let _format_code = r.byte()?;
        if vmin >= 15 {
            let _compression_algorithm = r.byte()?;
        } else {
            let _compression_level = r.int()?;
        }
        for _ in 0..7 {
            let _creation_time_field = r.int()?;
        }
        let _database = r.string()?;
        header.server_version = r.string()?;
        header.pg_dump_version = r.string()?;
        Ok(header)
    }

    /// The oldest pg_restore major that reads this archive: the first one that reads its
    /// format version, and never older than the pg_dump that wrote it (a newer pg_dump's
    /// archive may hold entries an older pg_restore does not know, though its format version
    /// is the same: pg_dump 18 writes 1.16 like 17). `None` for a format newer than any this
    /// pgkeep knows, with no readable pg_dump version.
    pub fn needed_pg_restore(&self) -> Option<u32> {
        let by_format = format_needs(self.format);
        let by_dump = self.pg_dump_version.as_deref().and_then(major_of);
        match (by_format, by_dump) {
            (Some(f), Some(d)) => Some(f.max(d)),
            (f, d) => f.or(d),
        }
    }
}

impl fmt::Display for ArchiveHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.format;
        write!(f, "format {a}.{b}.{c}")?;
        if let Some(v) = &self.pg_dump_version {
            write!(f, ", written by pg_dump {v}")?;
        }
        Ok(())
    }
}

/// The first pg_restore major that reads archive format `format`, when it is one this
/// pgkeep knows.
pub fn format_needs(format: (u8, u8, u8)) -> Option<u32> {
    match format {
        (1, 0..=12, _) => Some(9),
        (1, 13, _) => Some(11),
        (1, 14, _) => Some(12),
        (1, 15, _) => Some(16),
        (1, 16, _) => Some(17),
        _ => None,
    }
}

/// `18.1` / `16.9 (Debian ...)` / `19devel` -> the major.
fn major_of(version: &str) -> Option<u32> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
}

/// pg_dump's own encoding: a byte per byte; an integer as a sign byte then `int_size` bytes,
/// least significant first; a string as an integer length (negative: none) then its bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    int_size: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HeaderError> {
        let end = self.at.checked_add(n).ok_or(HeaderError::Short)?;
        let out = self.bytes.get(self.at..end).ok_or(HeaderError::Short)?;
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, HeaderError> {
        Ok(self.take(1)?[0])
    }

    fn int(&mut self) -> Result<i64, HeaderError> {
        let negative = self.byte()? != 0;
        let mut value: i64 = 0;
        for (i, b) in self.take(self.int_size)?.iter().enumerate() {
            value |= i64::from(*b) << (8 * i);
        }
        Ok(if negative { -value } else { value })
    }

    fn string(&mut self) -> Result<Option<String>, HeaderError> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| HeaderError::Malformed("string length"))?;
        if len > 1024 {
            return Err(HeaderError::Malformed("string length"));
        }
        Ok(Some(String::from_utf8_lossy(self.take(len)?).into_owned()))
    }
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
