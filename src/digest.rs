//! The content digest of a table: an order-independent digest of its rows as `COPY ... TO
//! STDOUT` text prints them, recorded by export backups and compared by drills with the
//! restored table.
//!
//! Each row is one line of COPY text (the format escapes newlines and backslashes inside
//! values, so a line never holds part of two rows). The digest is the sum, modulo 2^128, of
//! the XXH3-128 hash of every line without its newline. A sum does not depend on the order rows
//! come in, which no table guarantees, and it counts duplicates (an exclusive-or would let two
//! equal rows cancel out). XXH3 is not a cryptographic hash: the digest proves that a restore
//! holds what the backup read, against damage and bugs; the objects' sha256 and the manifest's
//! checksum are what an edit cannot get past.

use std::fmt;

/// The name recorded before the hex value, so a later scheme can be told apart.
pub const SCHEME: &str = "xxh3-128-sum";

/// A running digest of COPY text, fed in pieces of any size.
#[derive(Debug, Default, Clone)]
pub struct RowDigest {
    sum: u128,
    rows: u64,
    /// The start of a line whose newline has not come yet.
    partial: Vec<u8>,
}

impl RowDigest {
    pub fn new() -> RowDigest {
        RowDigest::default()
    }

    /// Adds the rows of `bytes`, carrying an unfinished last line over to the next call.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while let Some(at) = memchr::memchr(b'\n', bytes) {
            if self.partial.is_empty() {
                self.add_row(&bytes[..at]);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&bytes[..at]);
                self.add_row(&line);
            }
            bytes = &bytes[at + 1..];
        }
        self.partial.extend_from_slice(bytes);
    }

    fn add_row(&mut self, line: &[u8]) {
        self.sum = self.sum.wrapping_add(xxhash_rust::xxh3::xxh3_128(line));
        self.rows += 1;
    }

    /// Rows seen so far (lines ended by a newline).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The digest of everything fed; an unterminated last line counts as a row.
    pub fn finish(mut self) -> TableDigest {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.add_row(&line);
        }
        TableDigest {
            rows: self.rows,
            digest: format!("{SCHEME}:{:032x}", self.sum),
        }
    }
}

/// A table's row count and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    pub rows: u64,
    /// `xxh3-128-sum:<32 hex digits>`.
    pub digest: String,
}

impl fmt::Display for TableDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rows, {}", self.rows, self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(pieces: &[&[u8]]) -> TableDigest {
        let mut d = RowDigest::new();
        for p in pieces {
            d.update(p);
        }
        d.finish()
    }

    #[test]
    fn row_order_and_piece_boundaries_do_not_matter() {
        let a = digest(&[b"1\tone\n2\ttwo\n3\tthree\n"]);
        let b = digest(&[b"3\tthree\n1\tone\n", b"2\ttwo\n"]);
        let c = digest(&[b"2\tt", b"wo\n3\t", b"three\n1", b"\tone", b"\n"]);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.rows, 3);
        assert!(a.digest.starts_with("xxh3-128-sum:"));
        assert_eq!(a.digest.len(), "xxh3-128-sum:".len() + 32);
    }

    #[test]
    fn any_change_of_content_or_multiplicity_shows() {
        let base = digest(&[b"1\tone\n2\ttwo\n"]);
        for other in [
            digest(&[b"1\tone\n2\ttwO\n"]),
            digest(&[b"1\tone\n"]),
            digest(&[b"1\tone\n2\ttwo\n2\ttwo\n"]),
            digest(&[b"1\tone\n2\ttwo\n3\tx\n3\tx\n"]),
            digest(&[b"1\tone2\ttwo\n"]),
        ] {
            assert_ne!(base.digest, other.digest, "{other}");
        }
        // Two equal rows do not cancel out, as they would with an exclusive-or.
        assert_ne!(
            digest(&[b"a\na\n"]).digest,
            digest(&[]).digest,
            "duplicates must count"
        );
    }

    #[test]
    fn an_empty_table_and_an_unterminated_line() {
        let empty = digest(&[]);
        assert_eq!(empty.rows, 0);
        assert_eq!(empty.digest, format!("{SCHEME}:{:032x}", 0));
        assert_eq!(digest(&[b"x"]), digest(&[b"x\n"]));
    }
}
