//! zstd end to end through the real binary: dump and export backups in `zstd` and `zstd:19`
//! restore identically, through pgkeep and by hand with `zstd -dc`; `verify` passes them and
//! names damage, a frame asking for a window too large to decode included.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::common::cli::Pgkeep;
use crate::common::pg::{Cluster, assert_same, cluster};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A job of `kind` backing up `database` in `compression` to the scratch dir's `backups/`.
fn local_job(kind: &str, database: &str, compression: &str) -> Pgkeep {
    let p = Pgkeep::with_config("");
    let parallel = if kind == "export" {
        "parallel = 2\n"
    } else {
        ""
    };
    p.write_config(&format!(
        "[storage]\nurl = \"file://{}\"\n\n[jobs.main]\nkind = \"{kind}\"\ndatabase = \"{database}\"\ncompression = \"{compression}\"\n{parallel}",
        p.store_dir().display()
    ));
    p
}

/// `pgkeep restore ID --target <new database> --create --jobs JOBS`, which must succeed; the
/// new database's name.
async fn restore_into_new(p: &Pgkeep, c: &Cluster, id: &str, jobs: &str) -> String {
    let restored = c.unique_name("zstd_restored");
    let target = c.url(&restored);
    let args = [
        "restore", id, "--target", &target, "--create", "--jobs", jobs,
    ];
    p.run(&args).await.expect_code(0);
    restored
}

fn read_manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Runs `script` with sh -eu in `dir`, with `$BIN` (the PostgreSQL client programs), `$TARGET`
/// and `$WORK` set; panics with its output unless it succeeds.
fn sh(dir: &Path, c: &Cluster, target: &str, work: &Path, script: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-euc")
        .arg(script)
        .current_dir(dir)
        .env("BIN", c.bin_dir())
        .env("TARGET", c.url(target))
        .env("WORK", work)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks what a zstd backup stored: `.zst` objects that are zstd streams, the codec in the
/// manifest, and the level the job asked for.
fn assert_stored_as_zstd(m: &serde_json::Value, dir: &Path, level: &str) {
    assert_eq!(m["compression"], format!("zstd:{level}"));
    let objects = m["objects"].as_array().unwrap();
    assert!(objects.len() >= 2, "{objects:?}");
    for o in objects {
        let key = o["key"].as_str().unwrap();
        assert_eq!(Path::new(key).extension().unwrap(), "zst", "{key}");
        assert_eq!(o["compression"], "zstd", "{key}");
        let bytes = std::fs::read(dir.join(key)).unwrap();
        assert_eq!(bytes[..4], ZSTD_MAGIC, "{key}");
        assert_eq!(bytes.len() as u64, o["stored_bytes"].as_u64().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_backups_in_zstd_restore_identically_through_pgkeep_and_by_hand() {
    let c = cluster();
    let db = c.pagila_db("zstd_dump_src").await;
    let before = c.snapshot(&db).await;
    for (compression, level, jobs) in [("zstd", "3", "1"), ("zstd:19", "19", "2")] {
        let p = local_job("dump", &c.url(&db), compression);
        let id = p.backup_ok().await;
        assert_eq!(
            p.stored_files(),
            vec![
                format!("main/{id}/dump.pgdump.zst"),
                format!("main/{id}/globals.sql.zst"),
                format!("main/{id}/manifest.json"),
            ]
        );
        let dir = p.store_dir().join("main").join(&id);
        let m = read_manifest(&dir);
        assert_stored_as_zstd(&m, &dir, level);
        // The archive spans several 1 MiB blocks, so the object is several frames.
        assert!(m["objects"][0]["raw_bytes"].as_u64().unwrap() > 2 << 20);

        let restored = restore_into_new(&p, c, &id, jobs).await;
        assert_same(&before, &c.snapshot(&restored).await);

        // docs/FORMAT.md's by-hand route, with zstd -dc in place of gunzip -c.
        let by_hand = c.create_db("zstd_dump_by_hand").await;
        let work = tempfile::tempdir().unwrap();
        let roles = sh(
            &dir,
            c,
            &by_hand,
            work.path(),
            r#"jq -r '.objects[] | "\(.sha256)  \(.key)"' manifest.json | sha256sum -c - >&2
zstd -dc dump.pgdump.zst > "$WORK/app.pgdump"
"$BIN/pg_restore" --exit-on-error --single-transaction -d "$TARGET" "$WORK/app.pgdump"
zstd -dc globals.sql.zst"#,
        );
        assert!(roles.contains("CREATE ROLE postgres"), "{roles}");
        assert_same(&before, &c.snapshot(&by_hand).await);
    }
}

/// The by-hand restore of an export from docs/FORMAT.md, every step generated from the
/// manifest with jq: schema, each table through `zstd -dc | psql \copy`, post-data, sequences.
const EXPORT_BY_HAND: &str = r#"jq -r '.objects[] | "\(.sha256)  \(.key)"' manifest.json | sha256sum -c - >&2
zstd -dc schema.pgdump.zst > "$WORK/schema.pgdump"
"$BIN/pg_restore" --exit-on-error --section=pre-data -d "$TARGET" "$WORK/schema.pgdump"
jq -r '.objects[] | select(.role == "table")
  | "\\copy \(.table) (\([.columns[] | select(.generated | not) | "\"\(.name | gsub("\""; "\"\""))\""] | join(", "))) from pstdin" as $copy
  | "zstd -dc \(.key | @sh) | \"$BIN/psql\" -X -q -v ON_ERROR_STOP=1 -d \"$TARGET\" -c \"SET client_encoding = '"'"'UTF8'"'"'\" -c \($copy | @sh)"' \
  manifest.json > "$WORK/load.sh"
sh -eu "$WORK/load.sh"
"$BIN/pg_restore" --exit-on-error --section=post-data -d "$TARGET" "$WORK/schema.pgdump"
jq -r '.sequences[] | "SELECT setval(\u0027\(.name | gsub("\u0027"; "\u0027\u0027"))\u0027, \(.last_value), \(.is_called));"' manifest.json \
  | "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$TARGET" >/dev/null
wc -l < "$WORK/load.sh""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_backups_in_zstd_restore_identically_through_pgkeep_and_by_hand() {
    let c = cluster();
    let db = c.pagila_db("zstd_export_src").await;
    // A table of several MiB of COPY text, so that one table object is several frames.
    c.psql_sql(
        &db,
        "CREATE TABLE public.zstd_rows AS SELECT g AS id, md5(g::text) AS h, g % 7 AS k \
         FROM generate_series(1, 120000) g",
    )
    .await;
    let before = c.snapshot(&db).await;
    for (compression, level) in [("zstd", "3"), ("zstd:19", "19")] {
        let p = local_job("export", &c.url(&db), compression);
        let id = p.backup_ok().await;
        let dir = p.store_dir().join("main").join(&id);
        let m = read_manifest(&dir);
        assert_stored_as_zstd(&m, &dir, level);
        let big = m["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["table"] == "\"public\".\"zstd_rows\"")
            .unwrap();
        assert_eq!(big["rows"], 120_000);
        assert!(big["raw_bytes"].as_u64().unwrap() > 4 << 20, "{big}");

        let restored = restore_into_new(&p, c, &id, "2").await;
        assert_same(&before, &c.snapshot(&restored).await);

        let by_hand = c.create_db("zstd_export_by_hand").await;
        let work = tempfile::tempdir().unwrap();
        let loads = sh(&dir, c, &by_hand, work.path(), EXPORT_BY_HAND);
        let tables = m["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["role"] == "table")
            .count();
        assert_eq!(loads.trim(), tables.to_string(), "one load per table");
        assert_same(&before, &c.snapshot(&by_hand).await);
    }
}

/// Replaces object `index` of the backup in `dir` with `bytes`, and reseals the manifest to
/// match, so that only decoding can find what is wrong.
fn replace_and_reseal(dir: &Path, index: usize, bytes: &[u8]) -> String {
    let mut m = read_manifest(dir);
    let key = m["objects"][index]["key"].as_str().unwrap().to_string();
    std::fs::write(dir.join(&key), bytes).unwrap();
    m["objects"][index]["stored_bytes"] = (bytes.len() as u64).into();
    m["objects"][index]["sha256"] = hex::encode(Sha256::digest(bytes)).into();
    pgkeep::manifest::seal(&mut m);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    key
}

/// `pgkeep verify ID` must fail (exit 1) reporting object `key` damaged for `why`.
async fn assert_verify_finds(p: &Pgkeep, id: &str, key: &str, why: &str) {
    let run = p.run(&["verify", id]).await.expect_code(1);
    assert!(run.error_line().contains(key), "{}", run.stderr);
    let line = format!("DAMAGED  {key} (dump): ");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with(&line) && l.contains(why)),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_zstd_backups_and_names_damage_and_hostile_windows() {
    let c = cluster();
    let db = c.pagila_db("zstd_verify").await;
    let p = local_job("dump", &c.url(&db), "zstd");
    let id = p.backup_ok().await;
    let dir = p.store_dir().join("main").join(&id);
    let run = p.run(&["verify", &id]).await.expect_code(0);
    assert!(
        run.stdout.contains("dump.pgdump.zst (dump:") && run.stdout.contains("all intact"),
        "{}",
        run.stdout
    );

    // A flipped byte: the manifest's sha256 names it.
    let dump = dir.join("dump.pgdump.zst");
    let good = std::fs::read(&dump).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    std::fs::write(&dump, &flipped).unwrap();
    let dump_key = format!("main/{id}/dump.pgdump.zst");
    assert_verify_finds(&p, &id, &dump_key, "sha256").await;

    // The same flip behind a manifest resealed to match: zstd itself (a block, or the frame's
    // checksum) finds it.
    replace_and_reseal(&dir, 0, &flipped);
    assert_verify_finds(&p, &id, &dump_key, "zstd stream is damaged").await;
    replace_and_reseal(&dir, 0, &good);
    p.run(&["verify", &id]).await.expect_code(0);

    // A frame whose header asks for a 2 GiB window: refused before anything is allocated
    // for it, with the reason, by verify and by restore (which leaves no database behind).
    let mut hostile = ZSTD_MAGIC.to_vec();
    hostile.extend_from_slice(&[0x00, (31 - 10) << 3]);
    hostile.extend_from_slice(&[0x01 | (5 << 3), 0, 0]);
    hostile.extend_from_slice(b"tiny!");
    let key = replace_and_reseal(&dir, 0, &hostile);
    assert_eq!(format!("main/{id}/{key}"), dump_key);
    let why = "asks for a 2.0 GiB window, more than the 8.0 MiB";
    assert_verify_finds(&p, &id, &dump_key, why).await;
    let target = c.unique_name("zstd_hostile");
    let run = p
        .run(&["restore", &id, "--target", &c.url(&target), "--create"])
        .await
        .expect_code(1);
    assert!(run.error_line().contains("window"), "{}", run.stderr);
    let left = c
        .connect("postgres")
        .await
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&target])
        .await
        .unwrap();
    assert!(left.is_none(), "restore left {target} behind");
}
