use std::os::unix::fs::PermissionsExt as _;

use super::*;

#[test]
fn versions_are_read() {
    assert_eq!(
        parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
        Some(("15.18".into(), 15))
    );
    assert_eq!(
        parse_version("pg_restore (PostgreSQL) 18.1\n"),
        Some(("18.1".into(), 18))
    );
    assert_eq!(
        parse_version("pg_dump (PostgreSQL) 19devel\n"),
        Some(("19devel".into(), 19))
    );
    assert_eq!(parse_version("something else"), None);
}

/// A `pg_dump` at `dir/pg_dump` that reports `version`.
fn fake(dir: &Path, version: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("pg_dump");
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho 'pg_dump (PostgreSQL) {version}'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A Debian-style root with 13, 16 and 9 (not a directory of programs: `9.6` is no major)
/// and a PATH directory with 18.
struct Layout {
    _dir: tempfile::TempDir,
    root: PathBuf,
    path_dir: PathBuf,
}

fn layout() -> Layout {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("postgresql");
    fake(&root.join("13/bin"), "13.20");
    fake(&root.join("16/bin"), "16.9 (Debian 16.9-1.pgdg120+1)");
    fake(&root.join("9.6/bin"), "9.6.24");
    std::fs::create_dir_all(root.join("17/bin")).unwrap(); // no pg_dump in it
    let path_dir = dir.path().join("path");
    fake(&path_dir, "18.6");
    Layout {
        root,
        path_dir,
        _dir: dir,
    }
}

#[test]
fn candidates_are_the_debian_majors_newest_first_then_path() {
    let l = layout();
    let path = std::env::join_paths([l.path_dir.clone(), l.root.join("13/bin")]).unwrap();
    assert_eq!(
        candidates("pg_dump", &l.root, Some(&path)),
        vec![
            l.root.join("16/bin/pg_dump"),
            l.root.join("13/bin/pg_dump"),
            l.path_dir.join("pg_dump"),
        ]
    );
    assert_eq!(
        candidates("pg_restore", &l.root, None),
        Vec::<PathBuf>::new()
    );
}

#[tokio::test]
async fn the_needed_major_or_the_closest_newer_one_wins() {
    let l = layout();
    let all = candidates(
        "pg_dump",
        &l.root,
        Some(&l.path_dir.clone().into_os_string()),
    );
    // Any will do: the newest Debian one.
    let tool = choose("pg_dump", all.clone(), None).await.unwrap();
    assert_eq!(
        (tool.major, tool.path.clone()),
        (16, l.root.join("16/bin/pg_dump"))
    );
    assert_eq!(tool.version, "16.9");
    // A 13 server: its own major, though newer ones are there.
    let tool = choose("pg_dump", all.clone(), Some(13)).await.unwrap();
    assert_eq!(
        (tool.major, tool.path.clone()),
        (13, l.root.join("13/bin/pg_dump"))
    );
    // A 15 server: none of its own, the closest newer one (16), not the newest (18).
    let tool = choose("pg_dump", all.clone(), Some(15)).await.unwrap();
    assert_eq!(tool.major, 16);
    // An 18 server: the Debian ones are too old, PATH has one.
    let tool = choose("pg_dump", all.clone(), Some(18)).await.unwrap();
    assert_eq!(
        (tool.major, tool.path.clone()),
        (18, l.path_dir.join("pg_dump"))
    );
    // A 19 server: nothing will do; the newest found is returned, and refused.
    let tool = choose("pg_dump", all, Some(19)).await.unwrap();
    assert_eq!(tool.major, 18);
    let err = tool
        .require_at_least(19, "the server (PostgreSQL 19.0)", Hint::PgBinDir)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is version 18.6, older than the server (PostgreSQL 19.0): install the PostgreSQL 19 client programs (Debian: postgresql-client-19) or set the \
             job's pg_bin_dir to their directory",
            l.path_dir.join("pg_dump").display()
        )
    );
}

#[tokio::test]
async fn a_configured_directory_is_the_only_place_looked_at() {
    let l = layout();
    let tool = Tool::locate("pg_dump", Some(&l.root.join("13/bin")), Some(18))
        .await
        .unwrap();
    assert_eq!(
        (tool.major, tool.path.clone()),
        (13, l.root.join("13/bin/pg_dump"))
    );
    let err = Tool::locate("pg_dump", Some(&l.root.join("17/bin")), Some(17))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ChildError::Spawn { program, .. } if program.ends_with("17/bin/pg_dump")),
        "{err}"
    );
}

#[tokio::test]
async fn a_broken_candidate_is_passed_over() {
    let l = layout();
    let broken = l.root.join("20/bin");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("pg_dump"), "#!/bin/sh\necho 'not a version'\n").unwrap();
    std::fs::set_permissions(
        broken.join("pg_dump"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let all = candidates("pg_dump", &l.root, None);
    assert_eq!(all[0], broken.join("pg_dump"));
    let tool = choose("pg_dump", all, Some(15)).await.unwrap();
    assert_eq!(tool.major, 16);
    // Nothing else: the candidate's own failure is the error.
    let err = choose("pg_dump", vec![broken.join("pg_dump")], Some(15))
        .await
        .unwrap_err();
    assert!(matches!(err, ChildError::Version { .. }), "{err}");
}

#[test]
fn hints_name_the_place_to_point_at() {
    assert_eq!(
        Hint::Path.text(18),
        "install the PostgreSQL 18 client programs (Debian: postgresql-client-18) or put their \
         directory first on PATH"
    );
}
