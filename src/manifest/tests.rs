use chrono::TimeZone;

use super::*;

pub(crate) fn sample() -> Manifest {
    let started = Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap();
    Manifest {
        format_version: FORMAT_VERSION,
        id: new_id(started),
        job: "nightly".into(),
        kind: BackupKind::Export,
        started_at: started,
        finished_at: started + chrono::Duration::seconds(41),
        pgkeep_version: "0.1.0".into(),
        source: "backup@db:5432/app".into(),
        database: "app".into(),
        server_version: "15.18".into(),
        server_version_num: 150_018,
        pg_dump_version: "15.18".into(),
        wal_lsn: Some("0/1A2B3C".into()),
        compression: "gzip:6".into(),
        globals: Globals {
            included: false,
            role_passwords: false,
            note: Some("disabled".into()),
        },
        objects: vec![
            object("schema.pgdump.gz", ObjectRole::Schema, 'a'),
            ObjectEntry {
                table: Some("\"public\".\"film\"".into()),
                rows: Some(1000),
                columns: vec![Column {
                    name: "title".into(),
                    type_name: "text".into(),
                    generated: false,
                }],
                raw_bytes: 5000,
                stored_bytes: 900,
                ..object("tables/00000-public.film.copy.gz", ObjectRole::Table, 'b')
            },
        ],
        snapshot: Some("00000003-0000001B-1".into()),
        encoding: Some("UTF8".into()),
        migration_version: None,
        sequences: vec![SequenceState {
            name: "\"public\".\"film_film_id_seq\"".into(),
            last_value: 1000,
            is_called: true,
            owned_by: Some("\"public\".\"film\"".into()),
        }],
        tables: Vec::new(),
        large_objects: None,
        materialized_views: Vec::new(),
        databases: Vec::new(),
        encryption: None,
        checksum: None,
    }
}

/// A gzip object of 100 raw, 50 stored bytes whose sha256 is `sha` repeated.
fn object(key: &str, role: ObjectRole, sha: char) -> ObjectEntry {
    ObjectEntry {
        key: key.into(),
        role,
        table: None,
        rows: None,
        digest: None,
        columns: Vec::new(),
        compression: ObjectCodec::Gzip,
        encryption: None,
        raw_bytes: 100,
        stored_bytes: 50,
        sha256: sha.to_string().repeat(64),
    }
}

fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    Manifest::from_json(bytes, "nightly", "20261124T030000.000Z")
}

#[test]
fn ids_sort_chronologically_and_read_back() {
    let a = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let b = a + chrono::Duration::milliseconds(1);
    let c = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    assert_eq!(new_id(a), "20260102T030405.000Z");
    assert!(new_id(a) < new_id(b) && new_id(b) < new_id(c));
    assert_eq!(id_time(&new_id(b)), Some(b));
    assert_eq!(id_time("latest"), None);
    assert_eq!(id_time("20260102T030405.0001Z"), None);
}

#[test]
fn written_manifests_read_back_with_their_checksum() {
    let mut m = sample();
    let json = m.to_json();
    let back = parse(&json).unwrap();
    assert_eq!(back, m);
    assert!(m.checksum.as_deref().unwrap().starts_with("sha256:"));
    // Re-indenting keeps it valid: the checksum is of the content, not the formatting.
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(parse(&serde_json::to_vec(&value).unwrap()).unwrap(), m);
}

#[test]
fn any_edit_is_caught_by_the_checksum() {
    let mut m = sample();
    let json = String::from_utf8(m.to_json()).unwrap();
    for (from, to) in [
        ("\"last_value\": 1000", "\"last_value\": 999"),
        ("\"rows\": 1000", "\"rows\": 1001"),
        ("\"stored_bytes\": 900", "\"stored_bytes\": 901"),
        (&"b".repeat(64), &"c".repeat(64)),
        ("public.film.copy", "public.filn.copy"),
        ("\"is_called\": true", "\"is_called\": false"),
    ] {
        assert!(json.contains(from), "{from}");
        let edited = json.replacen(from, to, 1);
        let err = parse(edited.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ManifestError::Checksum { .. }),
            "{from}: {err}"
        );
    }
    // An added member is an edit too.
    let added = json.replacen("\"job\"", "\"extra\": 1, \"job\"", 1);
    assert!(matches!(
        parse(added.as_bytes()).unwrap_err(),
        ManifestError::Checksum { .. }
    ));
}

#[test]
fn manifests_without_a_checksum_still_read() {
    let m = sample();
    let json = serde_json::to_vec_pretty(&m).unwrap();
    let back = parse(&json).unwrap();
    assert_eq!(back.checksum, None);
    assert_eq!(back.objects, m.objects);
}

#[test]
fn inconsistent_manifests_are_refused_with_every_problem() {
    let mut m = sample();
    m.objects[1].rows = None;
    m.objects.push(m.objects[0].clone());
    m.objects[0].key = "../escape".into();
    m.job = "other".into();
    let problems = m.problems("nightly", &m.id.clone());
    let text = problems.join("\n");
    for needle in [
        "job 'other'",
        "not a plain relative path",
        "records no row count",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    let mut m = sample();
    m.objects.retain(|o| o.role != ObjectRole::Schema);
    let err = parse(&m.to_json()).unwrap_err();
    assert!(
        err.to_string().contains("exactly one schema object"),
        "{err}"
    );
}

#[test]
fn unknown_names_are_kept_not_refused() {
    let mut m = sample();
    m.kind = BackupKind::Unknown("wal-archive".into());
    m.objects[0].compression = ObjectCodec::Unknown("brotli".into());
    let back = parse(&m.to_json()).unwrap();
    assert_eq!(back.kind.as_str(), "wal-archive");
    assert_eq!(back.objects[0].compression.compression(), None);
}

#[test]
fn newer_formats_and_garbage_are_errors() {
    let mut m = sample();
    m.format_version = FORMAT_VERSION + 1;
    let json = serde_json::to_vec(&m).unwrap();
    assert!(matches!(
        parse(&json).unwrap_err(),
        ManifestError::TooNew { .. }
    ));
    assert!(matches!(
        parse(b"\x00garbage").unwrap_err(),
        ManifestError::Syntax(_)
    ));
    assert!(matches!(
        parse(b"[1]").unwrap_err(),
        ManifestError::NotAnObject
    ));
}

#[test]
fn object_names() {
    for good in ["dump.pgdump.gz", "tables/00001-public.film.copy.gz"] {
        assert!(valid_object_name(good), "{good}");
    }
    for bad in ["", "/abs", "a//b", "../x", "a/./b", "manifest.json", "a\nb"] {
        assert!(!valid_object_name(bad), "{bad:?}");
    }
}

/// A cluster backup of two databases (`app`, `odd one`) and the globals.
fn cluster_sample() -> Manifest {
    let mut m = sample();
    m.kind = BackupKind::Cluster;
    m.database = "postgres".into();
    m.source = "backup@db:5432/postgres".into();
    m.snapshot = None;
    m.encoding = None;
    m.sequences = Vec::new();
    let dump = |key: &str, sha: char| object(key, ObjectRole::Dump, sha);
    let globals = object("globals.sql.gz", ObjectRole::Globals, 'c');
    m.objects = vec![
        dump("databases/0000-app.pgdump.gz", 'a'),
        dump("databases/0001-odd_one.pgdump.gz", 'b'),
        globals,
    ];
    let entry = |name: &str, key: &str, rows: u64| DatabaseEntry {
        name: name.into(),
        object: key.into(),
        snapshot: format!("snap-{name}"),
        wal_lsn: None,
        tables: vec![TableRows {
            name: "\"public\".\"t\"".into(),
            rows,
        }],
        sequences: Vec::new(),
    };
    m.databases = vec![
        entry("app", "databases/0000-app.pgdump.gz", 10),
        entry("odd one", "databases/0001-odd_one.pgdump.gz", 20),
    ];
    m
}

#[test]
fn a_cluster_backup_round_trips_and_each_database_reads_as_a_dump_backup() {
    let mut m = cluster_sample();
    let back = parse(&m.to_json()).expect("a consistent cluster manifest");
    assert_eq!(back.database_names(), ["app", "odd one"]);

    let odd = back.database_backup("odd one").expect("a database of it");
    assert_eq!(odd.kind, BackupKind::Dump);
    assert_eq!(odd.database, "odd one");
    assert_eq!(odd.source, "backup@db:5432/odd one");
    let keys: Vec<&str> = odd.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["databases/0001-odd_one.pgdump.gz", "globals.sql.gz"]);
    assert_eq!(odd.tables[0].rows, 20);
    assert_eq!(odd.snapshot.as_deref(), Some("snap-odd one"));
    assert!(odd.databases.is_empty());
    assert!(odd.problems(&odd.job, &odd.id).is_empty());
    assert!(back.database_backup("nope").is_none());
    assert_eq!(back.database_backups().len(), 2);
    assert!(sample().database_backup("app").is_none());
}

#[test]
fn a_cluster_backup_that_contradicts_itself_is_refused() {
    type Damage = Box<dyn Fn(&mut Manifest)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("lists no databases", Box::new(|m| m.databases.clear())),
        (
            "database 'app' is listed twice",
            Box::new(|m| m.databases[1].name = "app".into()),
        ),
        (
            "which is not a dump object",
            Box::new(|m| m.databases[0].object = "globals.sql.gz".into()),
        ),
        (
            "is the archive of two databases",
            Box::new(|m| m.databases[1].object = m.databases[0].object.clone()),
        ),
        (
            "belongs to no database",
            Box::new(|m| {
                m.databases.pop();
            }),
        ),
        (
            "records snapshots and sequences per database",
            Box::new(|m| m.snapshot = Some("x".into())),
        ),
        (
            "only a cluster backup lists databases",
            Box::new(|m| {
                m.kind = BackupKind::Dump;
                m.objects.remove(1);
            }),
        ),
    ];
    for (expected, damage) in cases {
        let mut m = cluster_sample();
        damage(&mut m);
        let err = parse(&m.to_json()).unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
}
