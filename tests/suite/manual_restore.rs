//! docs/FORMAT.md's promise: a backup can be restored with standard tools and no pgkeep.

use crate::common::cli::Pgkeep;
use crate::common::pg::{assert_same, cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_backup_restores_with_sha256sum_gunzip_and_pg_restore() {
    let c = cluster();
    let db = c.pagila_db("by_hand_src").await;
    let before = c.snapshot(&db).await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let id = p.backup_ok().await;
    let restored = c.create_db("by_hand_target").await;

    // The procedure from docs/FORMAT.md, "Restoring without pgkeep", step by step in sh.
    let backup_dir = p.store_dir().join("main").join(&id);
    let script = format!(
        r#"set -eu
cd '{dir}'
key=$(sed -n 's/.*"key": "\(dump[^"]*\)".*/\1/p' manifest.json)
sha=$(grep -A 8 "\"key\": \"$key\"" manifest.json | sed -n 's/.*"sha256": "\([0-9a-f]*\)".*/\1/p')
echo "$sha  $key" | sha256sum -c -
gunzip -c "$key" > "$WORK/app.pgdump"
"$BIN/pg_restore" --exit-on-error --single-transaction -d "$TARGET" "$WORK/app.pgdump"
"#,
        dir = backup_dir.display()
    );
    let work = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("WORK", work.path())
        .env("BIN", c.bin_dir())
        .env("TARGET", c.url(&restored))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "manual restore failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&before, &c.snapshot(&restored).await);

    // The manifest's own checksum, checked with jq and sha256sum as docs/FORMAT.md shows; an
    // edited manifest fails the same check.
    let manifest = backup_dir.join("manifest.json");
    let check = r#"set -eu
want=$(jq -r .checksum "$1" | sed 's/^sha256://')
got=$(jq -cS 'del(.checksum)' "$1" | tr -d '\n' | sha256sum | cut -d' ' -f1)
[ "$want" = "$got" ]
"#;
    let by_hand = |path: &std::path::Path| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(check)
            .arg("sh")
            .arg(path)
            .status()
            .unwrap()
            .success()
    };
    assert!(
        by_hand(&manifest),
        "the documented checksum check must pass"
    );
    let edited = work.path().join("edited.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &edited,
        text.replacen("\"raw_bytes\": ", "\"raw_bytes\": 1", 1),
    )
    .unwrap();
    assert!(!by_hand(&edited), "an edited manifest must fail it");

    // The globals object is plain SQL after gunzip.
    let globals = p.store_dir().join(format!("main/{id}/globals.sql.gz"));
    let out = std::process::Command::new("gunzip")
        .arg("-c")
        .arg(&globals)
        .output()
        .unwrap();
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(sql.contains("CREATE ROLE postgres"), "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_backup_restores_with_gunzip_pg_restore_and_psql_copy() {
    let c = cluster();
    let db = c.pagila_db("export_by_hand_src").await;
    let before = c.snapshot(&db).await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "[storage]\nurl = \"file://{}\"\n[jobs.main]\nkind = \"export\"\ndatabase = \"{}\"\n",
        p.store_dir().display(),
        c.url(&db)
    ));
    let id = p.backup_ok().await;
    let dir = p.store_dir().join("main").join(&id);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let target = c.create_db("export_by_hand_target").await;
    let url = c.url(&target);
    let work = tempfile::tempdir().unwrap();

    let sh = |script: String| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .current_dir(&dir)
            .env("BIN", c.bin_dir())
            .env("TARGET", &url)
            .env("WORK", work.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(r#"set -eu
gunzip -c schema.pgdump.gz > "$WORK/schema.pgdump"
"$BIN/pg_restore" --exit-on-error --section=pre-data -d "$TARGET" "$WORK/schema.pgdump""#
        .to_string());
    for o in manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["role"] == "table")
    {
        let columns: Vec<String> = o["columns"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["generated"] != true)
            .map(|c| format!("\"{}\"", c["name"].as_str().unwrap().replace('"', "\"\"")))
            .collect();
        let copy = format!(
            "\\copy {} ({}) from pstdin",
            o["table"].as_str().unwrap(),
            columns.join(", ")
        );
        sh(format!(
            "set -eu\ngunzip -c '{}' | \"$BIN/psql\" -X -q -v ON_ERROR_STOP=1 -d \"$TARGET\" -c \"SET client_encoding = 'UTF8'\" -c '{}'",
            o["key"].as_str().unwrap(),
            copy.replace('\'', "'\\''")
        ));
    }
    sh(r#""$BIN/pg_restore" --exit-on-error --section=post-data -d "$TARGET" "$WORK/schema.pgdump""#.to_string());
    let client = c.connect(&target).await;
    for s in manifest["sequences"].as_array().unwrap() {
        client
            .query_one(
                "SELECT setval($1::text::regclass, $2, $3)",
                &[
                    &s["name"].as_str().unwrap(),
                    &s["last_value"].as_i64().unwrap(),
                    &s["is_called"].as_bool().unwrap(),
                ],
            )
            .await
            .unwrap();
    }
    assert_same(&before, &c.snapshot(&target).await);
}
