//! The pgkeep configuration in each variant's ConfigMap, loaded by the real binary: the
//! container's volumes are laid out under a scratch root as the kubelet would mount them (the
//! ConfigMap's and Secrets' keys as files, emptyDirs empty), their paths in the config and the
//! environment moved under that root, and `pgkeep check` run with the container's environment.
//! Only the bucket and endpoint are pointed at a test S3 server (the credentials come from the
//! Secret's file, its placeholders swapped for the server's key); the database is absent.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::pod::{Container, Pod};
use super::{get, objects};
use crate::common::s3;

/// The files `pod`'s container `name` would see, under `root`; returns the mount paths.
pub(super) fn lay_out(
    objects: &super::pod::Objects,
    pod: &Pod<'_>,
    name: &str,
    root: &Path,
) -> Vec<String> {
    let mut paths = Vec::new();
    for m in pod.container(name).mounts() {
        let mount = m["mountPath"].as_str().unwrap();
        let dir = root.join(mount.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        paths.push(mount.to_string());
        let volume = pod.volume(m["name"].as_str().unwrap());
        let sources: Vec<(&str, &Value)> = if !volume["configMap"].is_null() {
            vec![("ConfigMap", &volume["configMap"])]
        } else if !volume["secret"].is_null() {
            vec![("Secret", &volume["secret"])]
        } else if !volume["projected"].is_null() {
            volume["projected"]["sources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    if s["secret"].is_null() {
                        ("ConfigMap", &s["configMap"])
                    } else {
                        ("Secret", &s["secret"])
                    }
                })
                .collect()
        } else {
            vec![]
        };
        for (kind, source) in sources {
            let object_name = source["name"]
                .as_str()
                .or_else(|| source["secretName"].as_str())
                .unwrap();
            let object = get(objects, kind, object_name);
            let data = object["data"]
                .as_object()
                .or_else(|| object["stringData"].as_object())
                .unwrap();
            let items: Vec<(String, String)> = match source["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        (
                            i["key"].as_str().unwrap().into(),
                            i["path"].as_str().unwrap().into(),
                        )
                    })
                    .collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in items {
                std::fs::write(dir.join(path), data[&key].as_str().unwrap()).unwrap();
            }
        }
    }
    // Longest first, so that /run/pgkeep/secrets is moved before a /run/pgkeep would be.
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    paths
}

/// `text` with every mount path moved under `root`, in one pass (the root is itself under
/// /tmp, a mount path too).
pub(super) fn moved(text: &str, mounts: &[String], root: &Path) -> String {
    let mut out = text.to_string();
    for (i, m) in mounts.iter().enumerate() {
        out = out.replace(m.as_str(), &format!("\u{0}{i}\u{0}"));
    }
    for (i, m) in mounts.iter().enumerate() {
        out = out.replace(&format!("\u{0}{i}\u{0}"), &format!("{}{m}", root.display()));
    }
    out
}

/// Swaps the placeholders of the S3 credentials file the container reads (from its Secret)
/// for the test server's key.
pub(super) fn use_test_key(container: Container<'_>, mounts: &[String], root: &Path) {
    let creds = container
        .env()
        .into_iter()
        .find(|(k, _)| k == "AWS_SHARED_CREDENTIALS_FILE")
        .expect("a credentials file");
    let creds = moved(&creds.1, mounts, root);
    let text = std::fs::read_to_string(&creds).expect("the credentials file is mounted");
    assert!(
        text.contains("REPLACE-ME-access-key-id") && text.contains("REPLACE-ME-secret-access-key"),
        "{text}"
    );
    std::fs::write(
        &creds,
        text.replace("REPLACE-ME-access-key-id", s3::ACCESS_KEY)
            .replace("REPLACE-ME-secret-access-key", s3::SECRET_KEY),
    )
    .unwrap();
}

struct Checked {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `pgkeep check` as variant's pgkeep container would run it, plus `extra` environment.
fn check(
    variant: &str,
    workload: (&str, &str),
    extra: &[(String, String)],
) -> Option<(Checked, tempfile::TempDir)> {
    let objects = objects(variant)?;
    let pod = Pod::of(get(&objects, workload.0, workload.1));
    let root = tempfile::tempdir().unwrap();
    let mounts = lay_out(&objects, &pod, "pgkeep", root.path());
    let container = pod.container("pgkeep");
    let args: Vec<String> = container.0["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[0], "--config");
    let config = moved(&args[1], &mounts, root.path());
    let text = std::fs::read_to_string(&config).expect("the config file is mounted");
    std::fs::write(&config, moved(&text, &mounts, root.path())).unwrap();
    use_test_key(container, &mounts, root.path());
    let home = root.path().join("var/lib/pgkeep");
    std::fs::create_dir_all(&home).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgkeep"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .current_dir(&home)
        .args(["--config", &config, "check"])
        .stdin(Stdio::null());
    for (k, v) in container.env() {
        cmd.env(k, moved(&v, &mounts, root.path()));
    }
    cmd.envs(extra.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().expect("running pgkeep check");
    let checked = Checked {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    Some((checked, root))
}

/// The test server's bucket and endpoint, as an operator sets them (PGKEEP_STORAGE__*); no key.
fn storage_env(target: &s3::S3Target) -> Vec<(String, String)> {
    target
        .pgkeep_env()
        .into_iter()
        .filter(|(k, _)| k.starts_with("PGKEEP_STORAGE__") || k == "AWS_EC2_METADATA_DISABLED")
        .collect()
}

#[test]
fn the_configs_load_and_reach_the_store_with_the_secrets_credentials() {
    for (variant, workload, scheduled, job_failure) in [
        (
            "sidecar",
            ("StatefulSet", "postgres"),
            1,
            "TLS setup: cannot read sslrootcert",
        ),
        ("cronjob", ("CronJob", "pgkeep-backup"), 0, "TLS setup"),
    ] {
        let target = s3::s3s_fs(&format!("k8s-{variant}"));
        let Some((run, root)) = check(variant, workload, &storage_env(&target)) else {
            return;
        };
        let all = format!("--- stdout\n{}\n--- stderr\n{}", run.stdout, run.stderr);
        // The config is valid (exit 1, not 2); the store answers with the mounted credentials;
        // only the database, which is not there, fails.
        assert_eq!(run.code, 1, "{variant}: {all}");
        let lines: Vec<&str> = run.stdout.lines().collect();
        let config = root.path().join("etc/pgkeep/pgkeep.toml");
        assert_eq!(
            lines[0],
            format!(
                "ok   config: {} is valid: 1 jobs, {scheduled} scheduled",
                config.display()
            ),
            "{variant}: {all}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("ok   storage: {}", target.url))),
            "{variant}: {all}"
        );
        let job = lines
            .iter()
            .find(|l| l.contains("job app:"))
            .unwrap_or_else(|| panic!("{variant}: {all}"));
        assert!(
            job.starts_with("FAIL job app: ") && job.contains(job_failure),
            "{variant}: {all}"
        );
        assert!(
            run.stdout.contains("error: ") || run.stderr.contains("error: "),
            "{variant}: {all}"
        );
        assert!(
            !run.stderr.contains("invalid configuration"),
            "{variant}: {all}"
        );
    }
}

/// The variables Kubernetes adds for a Service named `pgkeep` look like PGKEEP_* overrides;
/// pgkeep ignores them (the pods also set `enableServiceLinks: false`, so they are not there).
#[test]
fn service_link_variables_are_not_taken_for_configuration() {
    let links: Vec<(String, String)> = [
        ("PGKEEP_SERVICE_HOST", "10.96.0.15"),
        ("PGKEEP_SERVICE_PORT", "9187"),
        ("PGKEEP_SERVICE_PORT_METRICS", "9187"),
        ("PGKEEP_PORT", "tcp://10.96.0.15:9187"),
        ("PGKEEP_PORT_9187_TCP", "tcp://10.96.0.15:9187"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let target = s3::s3s_fs("k8s-links");
    let mut env = storage_env(&target);
    env.extend(links);
    let Some((run, _root)) = check("sidecar", ("StatefulSet", "postgres"), &env) else {
        return;
    };
    // Accepted as without them: only the absent database fails.
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        !run.stderr.contains("invalid configuration") && run.stdout.starts_with("ok   config: "),
        "{}{}",
        run.stdout,
        run.stderr
    );
}
