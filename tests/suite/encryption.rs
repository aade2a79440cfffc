//! Encrypted backups (age): dump and export round trips to a local store and to Garage; the
//! stored objects are age files with no plaintext; without the identity (or with the wrong one)
//! a restore fails before touching the target, naming the recipients it needs; verify checks
//! integrity without the identity and decodes with it; `show --globals` needs it; the by-hand
//! route with the `age` CLI.

use std::path::{Path, PathBuf};

use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::{assert_same, cluster};
use crate::common::s3;
use crate::suite::damage::{populated_target, side_databases};

/// A key pair made by `age-keygen`, as an operator would: (identity file, recipient).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen (Debian package age; scripts/test-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .unwrap();
    let recipient = String::from_utf8(public.stdout).unwrap().trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (path, recipient)
}

fn job(kind: &str, database: &str, url: &str, recipient: &str, compression: &str) -> String {
    Toml::storage(url)
        .table("storage.encryption")
        .set("recipients", &[recipient][..])
        .job("main", kind, database)
        .set("compression", compression)
        .render()
}

fn store_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_hold_no_plaintext_and_restore_only_with_the_identity() {
    let c = cluster();
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = keygen(keys.path(), "key.txt");
    let (wrong, _) = keygen(keys.path(), "other.txt");
    for kind in ["dump", "export"] {
        let db = c.pagila_db(&format!("crypt_{kind}")).await;
        let source = c.snapshot(&db).await;
        let p = Pgkeep::with_config("");
        let url = format!("file://{}", p.store_dir().display());
        // Uncompressed, so any row that were stored in the clear would show.
        p.write_config(&job(kind, &c.url(&db), &url, &recipient, "none"));
        let id = p.backup_ok().await;
        for file in store_files(&p.store_dir()) {
            let bytes = std::fs::read(&file).unwrap();
            if file.ends_with("manifest.json") {
                let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(m["encryption"]["scheme"], "age");
                let needed = m["encryption"]["recipients"][0].as_str().unwrap();
                assert!(needed.starts_with("age:"), "{needed}");
                assert!(!String::from_utf8_lossy(&bytes).contains(&recipient));
                continue;
            }
            assert!(
                file.extension().is_some_and(|e| e == "age"),
                "{}",
                file.display()
            );
            assert!(
                bytes.starts_with(b"age-encryption.org/v1\n"),
                "{}",
                file.display()
            );
            for plaintext in [
                &b"PENELOPE"[..],
                b"GUINESS",
                b"ACADEMY DINOSAUR",
                b"CREATE TABLE",
            ] {
                assert!(
                    !bytes.windows(plaintext.len()).any(|w| w == plaintext),
                    "{} holds plaintext",
                    file.display()
                );
            }
        }
        // Verify without the identity proves integrity and says it did not decode.
        let v = p.run(&["verify", &id]).await.expect_code(0);
        assert!(
            v.stdout.contains("not decoded (no identity given)"),
            "{}",
            v.stdout
        );
        let key = identity.display().to_string();
        let v = p
            .run(&["verify", &id, "--identity", &key])
            .await
            .expect_code(0);
        assert!(
            v.stdout.contains("decoded") && !v.stdout.contains("not decoded"),
            "{}",
            v.stdout
        );
        // The roles' SQL (show --globals) is read only with the identity.
        if kind == "dump" {
            let r = p.run(&["show", &id, "--globals"]).await.expect_code(1);
            assert!(
                r.error_line().contains("is encrypted (to age:") && r.stdout.is_empty(),
                "{}",
                r.stderr
            );
            let r = p
                .run(&["show", &id, "--globals", "--identity", &key])
                .await
                .expect_code(0);
            assert!(r.stdout.contains("CREATE ROLE postgres;"), "{}", r.stdout);
        }

        // No identity, the wrong one: refused before the target is touched.
        let (victim, before) = populated_target(c).await;
        let target = c.url(&victim);
        let r = p
            .run(&["restore", &id, "--target", &target, "--clean"])
            .await
            .expect_code(1);
        assert!(
            r.error_line().contains("is encrypted (to age:"),
            "{}",
            r.stderr
        );
        let r = p
            .run(&[
                "restore",
                &id,
                "--target",
                &target,
                "--clean",
                "--identity",
                &wrong.display().to_string(),
            ])
            .await
            .expect_code(1);
        let line = r.error_line();
        assert!(
            line.contains("cannot be decrypted") && line.contains("age:"),
            "{line}"
        );
        assert!(!line.contains("AGE-SECRET-KEY"), "{line}");
        assert_same(&before, &c.snapshot(&victim).await);
        assert_eq!(side_databases(c, &victim).await, Vec::<String>::new());

        // With it (from the environment, as a service would have it): the source, exactly.
        let p = p.env("PGKEEP_AGE_IDENTITY_FILE", &key);
        p.run(&[
            "restore", &id, "--target", &target, "--clean", "--jobs", "2",
        ])
        .await
        .expect_code(0);
        assert_same(&source, &c.snapshot(&victim).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_torture_export_and_dump_round_trip_through_garage() {
    let Some(target) = s3::garage("encryption") else {
        eprintln!("SKIPPED: garage is not installed (scripts/test-deps.sh)");
        return;
    };
    let c = cluster();
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = keygen(keys.path(), "key.txt");
    let recipients = keys.path().join("recipients.txt");
    std::fs::write(&recipients, format!("# the backup key\n{recipient}\n")).unwrap();
    for kind in ["dump", "export"] {
        let db = c.torture_db(&format!("crypt_torture_{kind}")).await;
        let source = c.snapshot(&db).await;
        let toml = Toml::storage("s3://placeholder")
            .table("storage.encryption")
            .set("recipients_file", recipients.display().to_string())
            .job("main", kind, &c.url(&db))
            .set("compression", "gzip");
        let p = Pgkeep::with_config(&toml.render()).envs(&target.pgkeep_env());
        let id = p.backup_ok().await;
        let fresh = c.unique_name("crypt_torture_new");
        p.run(&[
            "restore",
            &id,
            "--target",
            &c.url(&fresh),
            "--create",
            "--identity",
            &identity.display().to_string(),
        ])
        .await
        .expect_code(0);
        assert_same(&source, &c.snapshot(&fresh).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_restore_by_hand_with_the_age_cli() {
    let c = cluster();
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = keygen(keys.path(), "key.txt");
    let db = c.pagila_db("crypt_by_hand").await;
    let source = c.snapshot(&db).await;

    // A dump: age -d | gunzip | pg_restore.
    let p = Pgkeep::with_config("");
    let url = format!("file://{}", p.store_dir().display());
    p.write_config(&job("dump", &c.url(&db), &url, &recipient, "gzip"));
    let id = p.backup_ok().await;
    let dir = p.store_dir().join("main").join(&id);
    let restored = c.create_db("crypt_by_hand_target").await;
    let script = r#"set -eu
age -d -i "$KEY" "$DIR/dump.pgdump.gz.age" | gunzip > "$WORK/app.pgdump"
"$BIN/pg_restore" --exit-on-error --single-transaction -d "$TARGET" "$WORK/app.pgdump"
"#;
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("KEY", &identity)
        .env("DIR", &dir)
        .env("WORK", work.path())
        .env("BIN", c.bin_dir())
        .env("TARGET", c.url(&restored))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&source, &c.snapshot(&restored).await);

    // An export table: age -d | gunzip | psql \copy, into the schema restored by hand.
    let p = Pgkeep::with_config("");
    let url = format!("file://{}", p.store_dir().display());
    p.write_config(&job("export", &c.url(&db), &url, &recipient, "gzip"));
    let id = p.backup_ok().await;
    let dir = p.store_dir().join("main").join(&id);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let actor = m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["table"] == "\"public\".\"actor\"")
        .unwrap();
    let columns: Vec<String> = actor["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("\"{}\"", c["name"].as_str().unwrap()))
        .collect();
    let target = c.create_db("crypt_by_hand_export").await;
    let script = format!(
        r#"set -eu
age -d -i "$KEY" "$DIR/schema.pgdump.gz.age" | gunzip > "$WORK/schema.pgdump"
"$BIN/pg_restore" --exit-on-error --section=pre-data -d "$TARGET" "$WORK/schema.pgdump"
age -d -i "$KEY" "$DIR/{key}" | gunzip | "$BIN/psql" -X -v ON_ERROR_STOP=1 -d "$TARGET" \
  -c "SET client_encoding = 'UTF8'" -c '\copy "public"."actor" ({columns}) from pstdin'
"#,
        key = actor["key"].as_str().unwrap(),
        columns = columns.join(", ")
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("KEY", &identity)
        .env("DIR", &dir)
        .env("WORK", work.path())
        .env("BIN", c.bin_dir())
        .env("TARGET", c.url(&target))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.table_rows(&target, "public.actor").await,
        c.table_rows(&db, "public.actor").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_encryption_settings_are_config_errors_naming_the_key() {
    let p = Pgkeep::with_config(
        "[storage]\nurl = \"file:///tmp/x\"\n[storage.encryption]\nrecipients = [\"age1notakey\"]\n\n[jobs.main]\nkind = \"dump\"\n",
    );
    let r = p.run(&["backup"]).await.expect_code(2);
    assert!(
        r.error_line().contains("storage.encryption.recipients"),
        "{}",
        r.stderr
    );
    p.write_config(
        "[storage]\nurl = \"file:///tmp/x\"\n[storage.encryption]\nrecipients_file = \"/nonexistent/r.txt\"\n\n[jobs.main]\nkind = \"dump\"\n",
    );
    let r = p.run(&["backup"]).await.expect_code(2);
    assert!(
        r.error_line()
            .contains("storage.encryption.recipients_file"),
        "{}",
        r.stderr
    );
    // An identity file that is not one is named, its content never shown.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("k.txt");
    std::fs::write(&bogus, "AGE-SECRET-KEY-1SECRETSTUFF\n").unwrap();
    let (_, recipient) = keygen(dir.path(), "real.txt");
    p.write_config(&format!(
        "[storage]\nurl = \"file:///tmp/x\"\n[storage.encryption]\nrecipients = [\"{recipient}\"]\n\n[jobs.main]\nkind = \"dump\"\n"
    ));
    let r = p
        .run(&[
            "verify",
            "--all",
            "--identity",
            &bogus.display().to_string(),
        ])
        .await
        .expect_code(2);
    assert!(r.error_line().contains("line 1"), "{}", r.stderr);
    assert!(!r.stderr.contains("SECRETSTUFF"), "{}", r.stderr);
}
