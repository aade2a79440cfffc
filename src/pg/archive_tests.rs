use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The first 120 bytes of `pg_dump -Fc` 15.18 (Debian) of a PostgreSQL 15 database.
const PG15_OF_15: &str = "5047444d50010e0004080101010000000008000000001000000000000000000002000000000b000000007e00000000000000000008000000706f737467726573001e00000031352e3138202844656269616e2031352e31382d302b6465623132753129001e00000031352e3138202844656269616e203135";
/// pg_dump 18.6 of a PostgreSQL 15 database.
const PG18_OF_15: &str = "5047444d50011000040801010008000000001000000000000000000002000000000b000000007e00000000000000000008000000706f737467726573001e00000031352e3138202844656269616e2031352e31382d302b6465623132753129000400000031382e36000500000000080d0000000000000000";
/// pg_dump 18.6 of a PostgreSQL 18 database.
const PG18_OF_18: &str = "5047444d50011000040801010008000000001000000000000000000002000000000b000000007e00000000000000000008000000706f737467726573000400000031382e36000400000031382e36000900000000660a000000000000000001000000300001000000300008000000454e434f44494e470008";

#[test]
fn real_headers_are_read() {
    let h = ArchiveHeader::parse(&hex(PG18_OF_18)).unwrap();
    assert_eq!(h.format, (1, 16, 0));
    assert_eq!(h.server_version.as_deref(), Some("18.6"));
    assert_eq!(h.pg_dump_version.as_deref(), Some("18.6"));
    assert_eq!(h.needed_pg_restore(), Some(18));
    assert_eq!(h.to_string(), "format 1.16.0, written by pg_dump 18.6");

    let h = ArchiveHeader::parse(&hex(PG18_OF_15)).unwrap();
    assert_eq!(h.format, (1, 16, 0));
    assert_eq!(
        h.server_version.as_deref(),
        Some("15.18 (Debian 15.18-0+deb12u1)")
    );
    assert_eq!(h.pg_dump_version.as_deref(), Some("18.6"));
    assert_eq!(h.needed_pg_restore(), Some(18));

    // Format 1.14 (before 1.15 the compression is an integer, not a byte); the string is
    // cut off in this prefix, so the pg_dump version is not there: an error, not a guess.
    assert_eq!(
        ArchiveHeader::parse(&hex(PG15_OF_15)),
        Err(HeaderError::Short)
    );
    let mut whole = hex(PG15_OF_15);
    whole.truncate(whole.len() - 16);
    whole.extend_from_slice(b"15.18 (Debian 15.18-0+deb12u1)");
    let h = ArchiveHeader::parse(&whole).unwrap();
    assert_eq!(h.format, (1, 14, 0));
    assert_eq!(
        h.pg_dump_version.as_deref(),
        Some("15.18 (Debian 15.18-0+deb12u1)")
    );
    assert_eq!(h.needed_pg_restore(), Some(15));
}

#[test]
fn format_versions_map_to_the_pg_restore_that_reads_them() {
    assert_eq!(format_needs((1, 12, 0)), Some(9));
    assert_eq!(format_needs((1, 13, 0)), Some(11));
    assert_eq!(format_needs((1, 14, 0)), Some(12));
    assert_eq!(format_needs((1, 15, 0)), Some(16));
    assert_eq!(format_needs((1, 16, 0)), Some(17));
    assert_eq!(format_needs((1, 17, 0)), None);
    assert_eq!(format_needs((2, 0, 0)), None);
}

#[test]
fn a_header_newer_than_known_still_says_what_it_needs() {
    // A future 1.17 archive of pg_dump 19: its own pg_dump version tells.
    let mut bytes = hex(PG18_OF_18);
    bytes[6] = 17;
    let at = bytes.windows(4).rposition(|w| w == b"18.6").unwrap();
    bytes[at..at + 4].copy_from_slice(b"19.0");
    let h = ArchiveHeader::parse(&bytes).unwrap();
    assert_eq!(h.format, (1, 17, 0));
    assert_eq!(h.needed_pg_restore(), Some(19));
    // Without any pg_dump version, nothing is known.
    let h = ArchiveHeader {
        format: (1, 17, 0),
        server_version: None,
        pg_dump_version: None,
    };
    assert_eq!(h.needed_pg_restore(), None);
}

#[test]
fn other_bytes_are_refused() {
    assert_eq!(
        ArchiveHeader::parse(b"--\n-- PostgreSQL database dump\n"),
        Err(HeaderError::NotCustom)
    );
    assert_eq!(ArchiveHeader::parse(b"PGD"), Err(HeaderError::Short));
    assert_eq!(ArchiveHeader::parse(b"PGDMP\x01"), Err(HeaderError::Short));
    let mut bad = hex(PG18_OF_18);
    bad[8] = 0; // integer size
    assert_eq!(
        ArchiveHeader::parse(&bad),
        Err(HeaderError::Malformed("integer size"))
    );
    // A string length that is not plausible.
    let mut long = hex(PG18_OF_18)[..0x2f].to_vec();
    long.extend_from_slice(&[0, 0xff, 0xff, 0, 0]);
    assert_eq!(
        ArchiveHeader::parse(&long),
        Err(HeaderError::Malformed("string length"))
    );
}
