//! The container image (container/Dockerfile, `runtime` target) built with the binary under
//! test and run for real: a backup into a mounted store, then the daemon until the image's
//! HEALTHCHECK passes, then a clean stop.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::podman::{BASE_IMAGE, Podman, stage_binary, unique};
use super::{repo, text};
use crate::common::pg::cluster;
use crate::common::s3::free_port;

/// The uid and gid the image runs as (container/Dockerfile).
const IMAGE_UID: u32 = 10001;

/// The `manifest.json` files under `dir`.
fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            manifests(&path, out);
        } else if path.file_name().is_some_and(|n| n == "manifest.json") {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_image_backs_up_and_reports_healthy() {
    let work = tempfile::tempdir().expect("tempdir");
    let Some(podman) = Podman::find(work.path()) else {
        return;
    };
    let mut timings = String::new();

    let t = Instant::now();
    podman.ensure_base_image().await;
    let _ = write!(timings, "base image {:.1?}", t.elapsed());

    // The runtime target, fed with the binary under test; Debian's own PostgreSQL 15 client
    // (the mirror reachable here has no apt.postgresql.org).
    let context = work.path().join("context");
    stage_binary(&context);
    let image = format!("localhost/{}:test", unique("pgkeep-test"));
    let t = Instant::now();
    let _image = podman
        .build(
            &repo().join("container/Dockerfile"),
            &context,
            &[
                "--target",
                "runtime",
                "--build-arg",
                &format!("BASE_IMAGE={BASE_IMAGE}"),
                "--build-arg",
                "PG_APT_REPO=debian",
                "--build-arg",
                "PG_MAJOR=15",
            ],
            &image,
        )
        .await;
    let _ = write!(timings, ", build {:.1?}", t.elapsed());
    let inspect = podman
        .run_ok(&["image", "inspect", &image], Duration::from_secs(30))
        .await;
    let inspect: serde_json::Value =
        serde_json::from_slice(&inspect.stdout).expect("podman image inspect's JSON");
    let config = &inspect[0]["Config"];
    assert_eq!(
        config["User"],
        format!("{IMAGE_UID}:{IMAGE_UID}"),
        "{config}"
    );
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["pgkeep"]),
        "{config}"
    );
    assert_eq!(config["Cmd"], serde_json::json!(["run"]), "{config}");
    assert!(
        inspect[0]["Healthcheck"]["Test"]
            .to_string()
            .contains("/healthz"),
        "no HEALTHCHECK in the image (built with --format docker?): {inspect}"
    );

    // `pgkeep backup` in the container, against the test cluster on the host's loopback, into
    // a host directory mounted as the local store.
    let c = cluster();
    let db = c.pagila_db("packaging").await;
    let store = work.path().join("store");
    std::fs::create_dir(&store).expect("mkdir store");
    let config_path = work.path().join("pgkeep.toml");
    let backup_config = format!(
        "[storage]\nurl = \"file:///var/lib/pgkeep\"\n\n\
         [jobs.main]\nkind = \"dump\"\ndatabase = \"{}\"\nschedule = \"0 0 3 1 1 *\"\n",
        c.url(&db)
    );
    std::fs::write(&config_path, &backup_config).expect("writing pgkeep.toml");
    let config_mount = format!("{}:/etc/pgkeep/pgkeep.toml:ro", config_path.display());
    // :U gives the mount to the image's user (uid 10001), as `chown 10001` would.
    let store_mount = format!("{}:/var/lib/pgkeep:U", store.display());
    let backup_name = unique("pgkeep-test-backup");
    let _backup = podman.container(&backup_name);
    let t = Instant::now();
    let out = podman
        .run_ok(
            &[
                "run",
                "--rm",
                "--name",
                &backup_name,
                "--network",
                "host",
                "--init",
                "--no-healthcheck",
                "-v",
                &config_mount,
                "-v",
                &store_mount,
                &image,
                "backup",
            ],
            Duration::from_mins(3),
        )
        .await;
    let _ = write!(timings, ", backup run {:.1?}", t.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.lines().last().unwrap_or("").trim().to_string();
    assert!(
        id.starts_with("20"),
        "no backup id from the container:\n{}",
        text(&out)
    );
    let mut found = Vec::new();
    manifests(&store, &mut found);
    assert_eq!(found.len(), 1, "manifests in the store: {found:?}");
    assert!(
        found[0].to_string_lossy().contains(&id),
        "{found:?} is not backup {id}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&found[0]).expect("reading the manifest"))
            .expect("manifest JSON");
    assert_eq!(manifest["job"], "main", "{manifest}");

    // `pgkeep run` (the image's CMD) detached, and the image's HEALTHCHECK against it: on
    // a free port, told to the check through HEALTHCHECK_PORT (the network is the host's).
    let port = free_port();
    std::fs::write(
        &config_path,
        format!("{backup_config}\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .expect("writing pgkeep.toml");
    let daemon_name = unique("pgkeep-test-daemon");
    let _daemon = podman.container(&daemon_name);
    let health_port = format!("HEALTHCHECK_PORT={port}");
    let t = Instant::now();
    podman
        .run_ok(
            &[
                "run",
                "--detach",
                // Killed after 10 minutes even if this process dies before its guard runs.
                "--timeout",
                "600",
                "--name",
                &daemon_name,
                "--network",
                "host",
                "--init",
                "-e",
                &health_port,
                "-v",
                &config_mount,
                "-v",
                &store_mount,
                &image,
            ],
            Duration::from_mins(1),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let check = podman
            .run(
                &["healthcheck", "run", &daemon_name],
                Duration::from_secs(30),
            )
            .await;
        if check.status.success() {
            break;
        }
        if Instant::now() > deadline {
            let logs = podman
                .run(&["logs", &daemon_name], Duration::from_secs(30))
                .await;
            panic!(
                "podman healthcheck run {daemon_name}: still failing after 30 s:\n{}\n--- logs\n{}",
                text(&check),
                text(&logs)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = write!(timings, ", daemon healthy after {:.1?}", t.elapsed());

    let t = Instant::now();
    podman
        .run_ok(
            &["stop", "--time", "30", &daemon_name],
            Duration::from_mins(1),
        )
        .await;
    let stopped_in = t.elapsed();
    let _ = write!(timings, ", stop {stopped_in:.1?}");
    let state = podman
        .run_ok(
            &["inspect", "--format", "{{.State.ExitCode}}", &daemon_name],
            Duration::from_secs(30),
        )
        .await;
    let logs = podman
        .run(&["logs", &daemon_name], Duration::from_secs(30))
        .await;
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "0",
        "pgkeep run did not exit cleanly on SIGTERM:\n{}",
        text(&logs)
    );
    assert!(
        stopped_in < Duration::from_secs(20),
        "podman stop took {stopped_in:?}"
    );
    eprintln!("container image: {timings}");
}
