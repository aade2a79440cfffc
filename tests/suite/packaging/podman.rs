//! podman for the packaging tests, as PRODUCT.md's recipe runs it here: runc, lowered ulimits
//! (a `CONTAINERS_CONF` file, /etc left alone), a debootstrapped base image cached per machine,
//! unique names, and removal of every container and image on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{repo, text, which};

/// The base image `scripts/container-base-image.sh` imports (debootstrapped Debian 12).
pub const BASE_IMAGE: &str = "localhost/debian:bookworm";

/// podman with this test's `containers.conf`.
pub struct Podman {
    conf: PathBuf,
}

impl Podman {
    /// `None` (after saying why) when podman or debootstrap is not installed, unless
    /// `PGKEEP_TEST_REQUIRE_PODMAN=1`. `dir` receives the `containers.conf`.
    pub fn find(dir: &Path) -> Option<Podman> {
        if which("podman").is_none() || which("debootstrap").is_none() {
            assert!(
                std::env::var("PGKEEP_TEST_REQUIRE_PODMAN").as_deref() != Ok("1"),
                "PGKEEP_TEST_REQUIRE_PODMAN=1 but podman or debootstrap is not installed"
            );
            eprintln!(
                "skipping: podman or debootstrap not installed (scripts/test-deps.sh installs them)"
            );
            return None;
        }
        // crun cannot start containers on this host's cgroup layout, and podman's default
        // ulimits exceed its hard limits.
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\nruntime = \"runc\"\n",
        )
        .expect("writing containers.conf");
        let podman = Podman { conf };
        podman.sweep_stale();
        Some(podman)
    }

    /// Removes the containers and images that test processes killed before their guards ran
    /// left behind: those named by [`unique`] with the id of a process that no longer exists.
    fn sweep_stale(&self) {
        let list = |args: &[&str]| -> Vec<String> {
            self.command()
                .args(args)
                .stderr(Stdio::null())
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let stale = |name: &str| {
            let name = name.rsplit('/').next().unwrap_or(name);
            let name = name.split(':').next().unwrap_or(name);
            let mut parts = name.rsplitn(3, '-');
            let (_, Some(pid), Some(prefix)) = (parts.next(), parts.next(), parts.next()) else {
                return false;
            };
            prefix.starts_with("pgkeep-test")
                && pid.parse::<u32>().is_ok_and(|pid| {
                    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
                })
        };
        for name in list(&["ps", "--all", "--format", "{{.Names}}"]) {
            if stale(&name) {
                let _ = self
                    .command()
                    .args(["rm", "--force", "--time", "0", &name])
                    .output();
            }
        }
        for image in list(&["images", "--format", "{{.Repository}}:{{.Tag}}"]) {
            if stale(&image) {
                let _ = self.command().args(["rmi", "--force", &image]).output();
            }
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", &self.conf).stdin(Stdio::null());
        cmd
    }

    /// `podman ARGS` to completion, given at most `limit`; the output whatever the status.
    pub async fn run(&self, args: &[&str], limit: Duration) -> Output {
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.args(args).kill_on_drop(true);
        tokio::time::timeout(limit, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("podman {} took more than {limit:?}", args.join(" ")))
            .expect("running podman")
    }

    /// Like [`Podman::run`], panicking with the output unless podman succeeds.
    pub async fn run_ok(&self, args: &[&str], limit: Duration) -> Output {
        let out = self.run(args, limit).await;
        assert!(
            out.status.success(),
            "podman {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            text(&out)
        );
        out
    }

    /// Makes [`BASE_IMAGE`] available: debootstrapped once per machine (~25 s), cached in
    /// /var/cache/pgkeep-test, imported when missing (~3 s), else nothing to do.
    pub async fn ensure_base_image(&self) {
        let script = repo().join("scripts/container-base-image.sh");
        let out = tokio::process::Command::new("bash")
            .arg(&script)
            .arg(BASE_IMAGE)
            .env("CONTAINERS_CONF", &self.conf)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running container-base-image.sh");
        assert!(
            out.status.success(),
            "{}:\n{}",
            script.display(),
            text(&out)
        );
    }

    /// `podman build --format docker` (which keeps HEALTHCHECK) of `containerfile` in `context`
    /// as `tag`, with `args` as build arguments; the image is removed when the guard drops.
    pub async fn build(
        &self,
        containerfile: &Path,
        context: &Path,
        extra: &[&str],
        tag: &str,
    ) -> Cleanup<'_> {
        let cleanup = Cleanup {
            podman: self,
            args: vec!["rmi".into(), "--force".into(), tag.into()],
        };
        let mut args = vec!["build", "--format", "docker", "--pull=never"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "-f",
            containerfile.to_str().unwrap(),
            "-t",
            tag,
            context.to_str().unwrap(),
        ]);
        self.run_ok(&args, Duration::from_mins(5)).await;
        cleanup
    }

    /// A guard that removes container `name` (at once, running or not) when dropped.
    pub fn container(&self, name: &str) -> Cleanup<'_> {
        Cleanup {
            podman: self,
            args: vec![
                "rm".into(),
                "--force".into(),
                "--time".into(),
                "0".into(),
                name.into(),
            ],
        }
    }
}

/// Removes a container or an image when the test ends, however it ends.
pub struct Cleanup<'a> {
    podman: &'a Podman,
    args: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .command()
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Copies the pgkeep binary under test into `context` without its debug info (a debug build
/// is ~300 MB, ~60 MB stripped). It links glibc dynamically: built on this Debian 12 host, it
/// runs on the bookworm image (the Dockerfile's `pgkeep --version` step checks).
pub fn stage_binary(context: &Path) {
    std::fs::create_dir_all(context).expect("mkdir context");
    let target = context.join("pgkeep");
    let source = env!("CARGO_BIN_EXE_pgkeep");
    let stripped = which("strip").is_some_and(|strip| {
        Command::new(strip)
            .arg("--strip-debug")
            .arg("-o")
            .arg(&target)
            .arg(source)
            .status()
            .is_ok_and(|s| s.success())
    });
    if !stripped {
        std::fs::copy(source, &target).expect("copying the pgkeep binary");
    }
}

/// A container or image name no other test or test process uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:09}", std::process::id())
}
