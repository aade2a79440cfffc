//! Running the real `pgkeep` binary the way a user does: a config file, environment, exit codes.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::config::Toml;

/// A scratch directory with a config file, and a way to run pgkeep against it.
pub struct Pgkeep {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: &Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit code {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The last line of stdout (where `backup` prints the id).
    pub fn last_line(&self) -> String {
        self.stdout.lines().last().unwrap_or("").trim().to_string()
    }

    /// The one error line pgkeep prints on failure.
    pub fn error_line(&self) -> String {
        self.stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line in stderr:\n{}", self.stderr))
            .to_string()
    }
}

impl Pgkeep {
    /// A scratch directory holding `pgkeep.toml` with `config` as its content.
    pub fn with_config(config: &str) -> Pgkeep {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pgkeep.toml"), config).expect("writing config");
        Pgkeep {
            dir,
            env: Vec::new(),
        }
    }

    /// A config with one dump job of `database` stored in this scratch dir's `backups/`.
    pub fn local_dump(database: &str) -> Pgkeep {
        Pgkeep::configured(|store| Toml::local(store).job("main", "dump", database))
    }

    /// A scratch directory whose config `build` makes, given the store directory (`backups/`).
    pub fn configured(build: impl FnOnce(&Path) -> Toml) -> Pgkeep {
        let p = Pgkeep::with_config("");
        p.write_config(&build(&p.store_dir()).render());
        p
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(self.config_path(), config).expect("writing config");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("pgkeep.toml")
    }

    /// The local store's root, for `local_dump` configs.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    pub fn env(mut self, key: &str, value: &str) -> Pgkeep {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn envs(mut self, vars: &[(String, String)]) -> Pgkeep {
        self.env.extend(vars.iter().cloned());
        self
    }

    /// Runs `pgkeep --config <dir>/pgkeep.toml ARGS` with a clean environment: no inherited
    /// PG*, AWS* or PGKEEP_* variables, only those given to this runner.
    pub async fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().await.expect("running pgkeep");
        Run::from(&out)
    }

    /// Starts `pgkeep ARGS` as `run` does, without waiting (to signal it, or kill it).
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let mut cmd = self.command(args);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd.spawn().expect("starting pgkeep")
    }

    /// The command `run` and `spawn` start, for tests that need its stdio another way.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgkeep"));
        cmd.arg("--config").arg(self.config_path()).args(args);
        cmd.current_dir(self.dir.path());
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if name.starts_with("PG") || name.starts_with("AWS") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("HOME", self.dir.path());
        cmd.env("PGKEEP_LOG", "pgkeep=info");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `pgkeep backup` that must succeed; returns the new backup id.
    pub async fn backup_ok(&self) -> String {
        let run = self.run(&["backup"]).await.expect_code(0);
        let id = run.last_line();
        assert!(id.len() >= 20 && id.starts_with("20"), "bad id line: {id}");
        id
    }

    /// Every file under the local store (relative paths), sorted.
    pub fn stored_files(&self) -> Vec<String> {
        let root = self.store_dir();
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

/// A directory of wrapper scripts standing in for the PostgreSQL client programs, for
/// failure injection: `pg_dump` is replaced by `script` (which can call the real one as
/// `"$REAL_BIN/pg_dump"`); the other programs link to the real ones.
pub fn fake_bin_dir(real_bin: &Path, pg_dump_script: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    for tool in ["pg_dumpall", "pg_restore", "psql"] {
        std::os::unix::fs::symlink(real_bin.join(tool), dir.path().join(tool)).expect("symlink");
    }
    let script = format!(
        "#!/bin/sh\nREAL_BIN='{}'\nif [ \"$1\" = \"--version\" ]; then exec \"$REAL_BIN/pg_dump\" --version; fi\n{pg_dump_script}\n",
        real_bin.display()
    );
    let path = dir.path().join("pg_dump");
    std::fs::write(&path, script).expect("writing wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}
