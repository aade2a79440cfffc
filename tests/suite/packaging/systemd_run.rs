//! The systemd unit run by a real systemd (PID 1 of a podman container): installed the way
//! docs/INSTALL.md says, it must reach READY under its whole sandbox, take scheduled backups
//! (pg_dump and pg_dumpall included) with its config readable and its env file applied, and
//! stop cleanly.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::podman::{BASE_IMAGE, Podman, stage_binary, unique};
use super::{repo, text};
use crate::common::pg::cluster;
use crate::common::s3::free_port;

const CONTAINERFILE: &str = r#"ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      systemd systemd-sysv postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/*
COPY pgkeep /usr/local/bin/pgkeep
COPY pgkeep.service /etc/systemd/system/pgkeep.service
COPY pgkeep.sysusers.conf /usr/lib/sysusers.d/pgkeep.conf
COPY pgkeep.tmpfiles.conf /usr/lib/tmpfiles.d/pgkeep.conf
RUN systemd-sysusers pgkeep.conf && systemd-tmpfiles --create pgkeep.conf \
 && systemctl enable pgkeep.service
COPY pgkeep.toml pgkeep.env /etc/pgkeep/
RUN chown root:pgkeep /etc/pgkeep/pgkeep.toml && chmod 0640 /etc/pgkeep/pgkeep.toml \
 && chown root:root /etc/pgkeep/pgkeep.env && chmod 0600 /etc/pgkeep/pgkeep.env
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
"#;

/// `systemctl show pgkeep -p ...` in the container as `(property, value)` pairs.
async fn show(podman: &Podman, name: &str, props: &str) -> Vec<(String, String)> {
    let out = podman
        .run(
            &["exec", name, "systemctl", "show", "pgkeep", "-p", props],
            Duration::from_secs(30),
        )
        .await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn prop<'a>(props: &'a [(String, String)], key: &str) -> &'a str {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

async fn journal(podman: &Podman, name: &str) -> String {
    let out = podman
        .run(
            &[
                "exec",
                name,
                "journalctl",
                "--no-pager",
                "-n",
                "40",
                "-u",
                "pgkeep",
            ],
            Duration::from_secs(30),
        )
        .await;
    text(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unit_runs_sandboxed_under_systemd() {
    let work = tempfile::tempdir().expect("tempdir");
    let Some(podman) = Podman::find(work.path()) else {
        return;
    };
    let mut timings = String::new();
    podman.ensure_base_image().await;

    // The unit, its snippets and the binary under test, installed as docs/INSTALL.md says; the
    // job's database comes from the env file, so a backup proves systemd applied it.
    let context = work.path().join("context");
    stage_binary(&context);
    for file in [
        "pgkeep.service",
        "pgkeep.sysusers.conf",
        "pgkeep.tmpfiles.conf",
    ] {
        std::fs::copy(repo().join("systemd").join(file), context.join(file)).expect(file);
    }
    let c = cluster();
    let db = c.create_db("packaging_systemd").await;
    let port = free_port();
    std::fs::write(
        context.join("pgkeep.toml"),
        format!(
            "[storage]\nurl = \"file:///var/lib/pgkeep\"\n\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [jobs.main]\nkind = \"dump\"\ndatabase = \"host=/nonexistent\"\nschedule = \"*/2 * * * * *\"\n"
        ),
    )
    .expect("writing pgkeep.toml");
    std::fs::write(
        context.join("pgkeep.env"),
        format!("PGKEEP_JOBS__MAIN__DATABASE={}\n", c.url(&db)),
    )
    .expect("writing pgkeep.env");
    std::fs::write(context.join("Containerfile"), CONTAINERFILE).expect("writing Containerfile");

    let image = format!("localhost/{}:test", unique("pgkeep-test-systemd"));
    let t = Instant::now();
    let _image = podman
        .build(
            &context.join("Containerfile"),
            &context,
            &["--build-arg", &format!("BASE_IMAGE={BASE_IMAGE}")],
            &image,
        )
        .await;
    let _ = write!(timings, "build {:.1?}", t.elapsed());

    let name = unique("pgkeep-test-systemd");
    let _container = podman.container(&name);
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
                &name,
                "--systemd=always",
                "--network",
                "host",
                &image,
            ],
            Duration::from_mins(1),
        )
        .await;

    // Type=notify: active only once pgkeep said READY=1, with its STATUS= line.
    let deadline = Instant::now() + Duration::from_secs(30);
    let props = loop {
        let props = show(&podman, &name, "ActiveState,SubState,StatusText,MainPID").await;
        if prop(&props, "ActiveState") == "active" && !prop(&props, "StatusText").is_empty() {
            break props;
        }
        assert!(
            Instant::now() < deadline,
            "pgkeep.service not active after 30 s: {props:?}\n{}",
            journal(&podman, &name).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = write!(timings, ", active after {:.1?}", t.elapsed());

    // The sandbox is in force on the running daemon.
    let pid = prop(&props, "MainPID").to_string();
    let status = podman
        .run_ok(
            &["exec", &name, "cat", &format!("/proc/{pid}/status")],
            Duration::from_secs(30),
        )
        .await;
    let status = String::from_utf8_lossy(&status.stdout);
    for wanted in ["NoNewPrivs:\t1", "Seccomp:\t2", "CapEff:\t0000000000000000"] {
        assert!(status.contains(wanted), "no {wanted:?} in:\n{status}");
    }
    assert!(
        !status.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "pgkeep runs as root:\n{status}"
    );

    // A scheduled backup (every 2 s) committed in the state directory.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = podman
            .run(
                &[
                    "exec",
                    &name,
                    "find",
                    "/var/lib/pgkeep",
                    "-name",
                    "manifest.json",
                ],
                Duration::from_secs(30),
            )
            .await;
        if String::from_utf8_lossy(&found.stdout).contains("manifest.json") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no committed backup under /var/lib/pgkeep after 30 s:\n{}",
            journal(&podman, &name).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = write!(timings, ", backup committed after {:.1?}", t.elapsed());

    let t = Instant::now();
    podman
        .run_ok(
            &["exec", &name, "systemctl", "stop", "pgkeep"],
            Duration::from_mins(2),
        )
        .await;
    let _ = write!(timings, ", stop {:.1?}", t.elapsed());
    let props = show(&podman, &name, "Result,ExecMainStatus").await;
    assert_eq!(
        (prop(&props, "Result"), prop(&props, "ExecMainStatus")),
        ("success", "0"),
        "{}",
        journal(&podman, &name).await
    );
    eprintln!("systemd unit under systemd: {timings}");
}
