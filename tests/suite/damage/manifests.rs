//! Damaged and edited manifests: sizes, a sha256, a sequence value, a table removed or
//! renamed, garbage. Caught by the manifest's own checksum before anything else is read; a
//! damaged manifest never hides the other backups of its job.

use super::{Fixture, expect_refused, populated_target, run};
use crate::common::pg::cluster;

/// Edits the newer backup's manifest with `edit`, without resealing it: what a hand edit or
/// storage corruption does.
fn edit(f: &Fixture, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut m = f.manifest(&f.newer);
    edit(&mut m);
    std::fs::write(
        f.dir(&f.newer).join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
}

fn first_table(m: &mut serde_json::Value) -> &mut serde_json::Value {
    m["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|o| o["role"] == "table")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_manifests_are_refused_and_change_nothing() {
    type Edit = fn(&mut serde_json::Value);
    let f = Fixture::new("export").await;
    let saved = f.save();
    let needle = format!("backup {} of job 'main'", f.newer);
    let edits: [(&str, Edit); 5] = [
        ("a stored size", |m| {
            let o = first_table(m);
            o["stored_bytes"] = (o["stored_bytes"].as_u64().unwrap() + 1).into();
        }),
        ("a sha256", |m| {
            first_table(m)["sha256"] = "0".repeat(64).into();
        }),
        ("a sequence value", |m| {
            let s = &mut m["sequences"][0];
            s["last_value"] = (s["last_value"].as_i64().unwrap() + 100).into();
        }),
        ("a table removed", |m| {
            let objects = m["objects"].as_array_mut().unwrap();
            let at = objects.iter().position(|o| o["role"] == "table").unwrap();
            objects.remove(at);
        }),
        ("a table renamed", |m| {
            first_table(m)["table"] = "\"public\".\"not_a_table\"".into();
        }),
    ];
    for (i, (what, change)) in edits.iter().enumerate() {
        edit(&f, change);
        let jobs = if i % 2 == 0 { "1" } else { "2" };
        expect_refused(&f, &f.newer, jobs, 1, &needle, what).await;
        let r = run(&f.p, &["verify", &f.newer]).await.expect_code(1);
        assert!(
            r.stdout.contains("checksum does not match")
                || r.stderr.contains("checksum does not match"),
            "verify must catch {what}:\n{}\n{}",
            r.stdout,
            r.stderr
        );
        f.restore_pristine(&saved);
    }
    std::fs::write(
        f.dir(&f.newer).join("manifest.json"),
        b"{\"format_version\": 1, garbage",
    )
    .unwrap();
    expect_refused(&f, &f.newer, "1", 1, &needle, "garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resealed_manifest_that_contradicts_its_schema_is_refused() {
    // Someone removed a table's entry and recomputed the checksum: the checksum holds, but the
    // schema archive defines the table and the backup holds no data for it.
    let f = Fixture::new("export").await;
    let mut m = f.manifest(&f.newer);
    let objects = m["objects"].as_array_mut().unwrap();
    let at = objects
        .iter()
        .position(|o| o["table"] == "\"public\".\"actor\"")
        .unwrap();
    objects.remove(at);
    pgkeep::manifest::seal(&mut m);
    std::fs::write(
        f.dir(&f.newer).join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    expect_refused(
        &f,
        &f.newer,
        "2",
        1,
        "\"public\".\"actor\", but it holds no object for it",
        "a table's entry removed and resealed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_manifest_never_blocks_the_other_backups() {
    let c = cluster();
    let f = Fixture::new("dump").await;
    // The older backup's manifest is garbage: list, latest, verify and restore go on.
    std::fs::write(f.dir(&f.older).join("manifest.json"), b"\xff\xfe not json").unwrap();
    let list = run(&f.p, &["list"]).await.expect_code(0);
    assert!(list.stdout.contains(&f.newer), "{}", list.stdout);
    let damaged_line = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&f.older))
        .unwrap_or_else(|| panic!("{}", list.stdout));
    assert!(damaged_line.contains("DAMAGED"), "{damaged_line}");
    let json = run(&f.p, &["list", "--json"]).await.expect_code(0);
    let items: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    let by_id = |id: &str| items.iter().find(|i| i["id"] == id).unwrap().clone();
    assert_eq!(by_id(&f.older)["damaged"], true);
    assert_eq!(by_id(&f.newer)["damaged"], false);
    run(&f.p, &["show", "latest"]).await.expect_code(0);
    run(&f.p, &["verify", "latest"]).await.expect_code(0);
    let fresh = c.unique_name("damage_latest");
    let r = run(
        &f.p,
        &["restore", "latest", "--target", &c.url(&fresh), "--create"],
    )
    .await
    .expect_code(0);
    assert!(r.stdout.contains(&f.newer), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_passes_over_a_damaged_newest_backup_with_a_warning() {
    let c = cluster();
    let f = Fixture::new("dump").await;
    let key = f.dir(&f.newer).join("manifest.json");
    let text = std::fs::read_to_string(&key).unwrap();
    std::fs::write(&key, text.replace("\"database\"", "\"database_\"")).unwrap();
    let (victim, _) = populated_target(c).await;
    let r = run(
        &f.p,
        &["restore", "latest", "--target", &c.url(&victim), "--clean"],
    )
    .await
    .expect_code(0);
    assert!(
        r.stderr.contains(&format!(
            "newer backup {} of job 'main' is damaged",
            f.newer
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains(&format!("restored backup {}", f.older)),
        "{}",
        r.stdout
    );
    let client = c.connect(&victim).await;
    let precious: Option<String> = client
        .query_one("SELECT to_regclass('precious')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(precious, None, "the old contents must be gone");
    // Named, the damaged one is refused with exit 1, not mistaken for a missing backup.
    let r = run(
        &f.p,
        &["restore", &f.newer, "--target", &c.url(&victim), "--clean"],
    )
    .await
    .expect_code(1);
    assert!(r.error_line().contains("is damaged"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_written_before_checksums_still_restores() {
    let c = cluster();
    let f = Fixture::new("dump").await;
    let mut m = f.manifest(&f.newer);
    m.as_object_mut().unwrap().remove("checksum");
    std::fs::write(
        f.dir(&f.newer).join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    let show = run(&f.p, &["show", &f.newer]).await.expect_code(0);
    assert!(
        show.stdout.contains("before pgkeep recorded its checksum"),
        "{}",
        show.stdout
    );
    let fresh = c.unique_name("damage_old_format");
    run(
        &f.p,
        &["restore", &f.newer, "--target", &c.url(&fresh), "--create"],
    )
    .await
    .expect_code(0);
}
