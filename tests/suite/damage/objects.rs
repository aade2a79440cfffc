//! Damaged objects: a byte flipped at the start, middle or end, truncated, extended, swapped
//! with the same object of another backup, missing. Each is named by restore, which leaves the
//! target as it was.

use super::{Fixture, expect_refused};

#[derive(Debug, Clone, Copy)]
enum Damage {
    FlipStart,
    FlipMiddle,
    FlipEnd,
    Truncate,
    Append,
    Swap,
    Missing,
}

const EVERY: [Damage; 7] = [
    Damage::FlipStart,
    Damage::FlipMiddle,
    Damage::FlipEnd,
    Damage::Truncate,
    Damage::Append,
    Damage::Swap,
    Damage::Missing,
];

fn damage(f: &Fixture, name: &str, d: Damage) {
    let path = f.dir(&f.newer).join(name);
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    match d {
        Damage::FlipStart => bytes[3] ^= 0x01,
        Damage::FlipMiddle => bytes[len / 2] ^= 0x10,
        Damage::FlipEnd => bytes[len - 2] ^= 0x80,
        Damage::Truncate => bytes.truncate(len - len / 3),
        Damage::Append => bytes.extend_from_slice(b"trailing bytes\n"),
        Damage::Swap => {
            bytes = std::fs::read(f.dir(&f.older).join(name)).unwrap();
            assert_ne!(
                bytes,
                std::fs::read(&path).unwrap(),
                "the older backup's {name} must differ"
            );
        }
        Damage::Missing => {
            std::fs::remove_file(&path).unwrap();
            return;
        }
    }
    std::fs::write(&path, bytes).unwrap();
}

async fn each_damage(kind: &'static str, role: &str, damages: &[Damage], jobs: &str) {
    let f = Fixture::new(kind).await;
    let saved = f.save();
    // The biggest object of the role that the change between the two backups touched (so the
    // older backup's copy differs).
    let name = f
        .objects(&f.newer, role)
        .into_iter()
        .find(|n| {
            std::fs::read(f.dir(&f.older).join(n)).ok()
                != std::fs::read(f.dir(&f.newer).join(n)).ok()
        })
        .expect("an object that differs between the backups");
    let key = format!("main/{}/{name}", f.newer);
    for d in damages {
        damage(&f, &name, *d);
        expect_refused(&f, &f.newer, jobs, 1, &key, &format!("{d:?} of {name}")).await;
        f.restore_pristine(&saved);
    }
    // Put back, the backup restores: the refusals above were about the damage.
    let c = crate::common::pg::cluster();
    let fresh = c.unique_name("damage_intact");
    super::run(
        &f.p,
        &[
            "restore",
            &f.newer,
            "--target",
            &c.url(&fresh),
            "--create",
            "--jobs",
            jobs,
        ],
    )
    .await
    .expect_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_damage_to_a_dump_object_is_named_and_changes_nothing_jobs_1() {
    each_damage("dump", "dump", &EVERY, "1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_damage_to_a_dump_object_is_named_and_changes_nothing_jobs_2() {
    each_damage("dump", "dump", &EVERY, "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_damage_to_a_table_object_is_named_and_changes_nothing_jobs_1() {
    each_damage("export", "table", &EVERY, "1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_damage_to_a_table_object_is_named_and_changes_nothing_jobs_2() {
    each_damage("export", "table", &EVERY, "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_the_schema_object_of_an_export_is_named_and_changes_nothing() {
    each_damage(
        "export",
        "schema",
        &[Damage::FlipMiddle, Damage::Truncate, Damage::Missing],
        "2",
    )
    .await;
}
