//! Unit tests of the verify module.

use super::object::decode;
use super::*;
use crate::codec::Compression;
use crate::transfer::{Decoding, Expected};

fn plain(compression: Compression) -> Decoding {
    Decoding {
        compression,
        decryption: None,
    }
}
use sha2::{Digest, Sha256};

fn stored(data: &[u8], c: Compression) -> (Vec<u8>, Expected) {
    let mut e = c.encoder(Vec::new());
    e.write_all(data).unwrap();
    let s = e.finish().unwrap();
    let exp = Expected {
        key: "main/x/t.copy.gz".into(),
        stored_bytes: s.len() as u64,
        sha256: hex::encode(Sha256::digest(&s)),
    };
    (s, exp)
}

fn rows(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("{i}\tname {i}\n").into_bytes())
        .collect()
}

#[test]
fn good_data_decodes_and_counts_rows() {
    let data = rows(100_000);
    let (s, exp) = stored(&data, Compression::Gzip(1));
    let d = decode(
        &s[..],
        exp,
        &plain(Compression::Gzip(1)),
        data.len() as u64,
        true,
        None::<Vec<u8>>,
    )
    .unwrap();
    assert_eq!(d.raw, data.len() as u64);
    assert_eq!(d.lines, 100_000);
}

/// A pipe whose reader has gone.
struct Closed;

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn archive_sink_gets_everything_and_a_closed_sink_is_tolerated() {
    let data = rows(50_000);
    let (s, exp) = stored(&data, Compression::None);
    let mut sink = Vec::new();
    decode(
        &s[..],
        exp.clone(),
        &plain(Compression::None),
        data.len() as u64,
        false,
        Some(&mut sink),
    )
    .unwrap();
    assert_eq!(sink, data);
    let d = decode(
        &s[..],
        exp,
        &plain(Compression::None),
        data.len() as u64,
        false,
        Some(Closed),
    )
    .unwrap();
    assert_eq!(d.raw, data.len() as u64);
}

#[test]
fn a_flipped_byte_is_reported_as_a_checksum_mismatch() {
    let data = rows(100_000);
    let (mut s, exp) = stored(&data, Compression::Gzip(1));
    let mid = s.len() / 2;
    s[mid] ^= 0x40;
    let err = decode(
        &s[..],
        exp,
        &plain(Compression::Gzip(1)),
        data.len() as u64,
        true,
        None::<Vec<u8>>,
    )
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, ObjectDamage::Stored(_)), "{msg}");
    assert!(msg.contains("sha256"), "{msg}");
    assert!(msg.contains("main/x/t.copy.gz"), "{msg}");
}

#[test]
fn truncation_is_reported_as_a_size_mismatch() {
    let data = rows(100_000);
    let (s, exp) = stored(&data, Compression::Gzip(1));
    let err = decode(
        &s[..s.len() / 2],
        exp,
        &plain(Compression::Gzip(1)),
        data.len() as u64,
        false,
        None::<Vec<u8>>,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("bytes"), "{err}");
    assert!(matches!(err, ObjectDamage::Stored(_)), "{err}");
}

#[test]
fn intact_bytes_that_do_not_decode_are_a_decode_error() {
    let data = rows(1000);
    // Stored uncompressed but recorded as gzip.
    let (s, exp) = stored(&data, Compression::None);
    let err = decode(
        &s[..],
        exp,
        &plain(Compression::Gzip(6)),
        data.len() as u64,
        false,
        None::<Vec<u8>>,
    )
    .err()
    .unwrap();
    assert!(matches!(err, ObjectDamage::Decode { .. }), "{err}");
}

#[test]
fn more_decoded_bytes_than_recorded_are_refused() {
    let data = rows(1000);
    let (s, exp) = stored(&data, Compression::Gzip(1));
    let err = decode(
        &s[..],
        exp,
        &plain(Compression::Gzip(1)),
        data.len() as u64 - 1,
        false,
        None::<Vec<u8>>,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("more bytes"), "{err}");
}

#[test]
fn an_empty_table_object_decodes_to_nothing() {
    let (s, exp) = stored(b"", Compression::Gzip(1));
    let d = decode(
        &s[..],
        exp,
        &plain(Compression::Gzip(1)),
        0,
        true,
        None::<Vec<u8>>,
    )
    .unwrap();
    assert_eq!((d.raw, d.lines), (0, 0));
}
