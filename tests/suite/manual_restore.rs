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
