//! Running PostgreSQL client programs (pg_dump, pg_dumpall, pg_restore): finding the right
//! binary, checking its version, and supervising the child with stderr drained concurrently.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use super::SourceError;
use crate::pg::libpq_env_vars;

/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL_LINES: usize = 20;

/// A located PostgreSQL client program and its version.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: &'static str,
    pub path: PathBuf,
    /// The version it reports, e.g. `15.18`.
    pub version: String,
    pub major: u32,
}

impl Tool {
    /// Finds `name`: in `bin_dir` when configured, else in the Debian-style directory of the
    /// server's major version (`/usr/lib/postgresql/MAJOR/bin`), else on `PATH`; then asks it
    /// for its version.
    ///
    /// # Errors
    /// `SourceError::Spawn` when it cannot be run, `SourceError::Version` when its output is odd.
    pub async fn locate(
        name: &'static str,
        bin_dir: Option<&Path>,
        server_major: Option<u32>,
    ) -> Result<Tool, SourceError> {
        let path = match bin_dir {
            Some(dir) => dir.join(name),
            None => server_major
                .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin/{name}")))
                .filter(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from(name)),
        };
        let out = Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| SourceError::Spawn {
                program: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        let version = text
            .split(')')
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .ok_or_else(|| SourceError::Version {
                program: path.display().to_string(),
                output: text.trim().to_string(),
            })?;
        let major = version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        Ok(Tool {
            name,
            path,
            version,
            major,
        })
    }

    /// Fails unless this tool can read a server of `server_major`: pg_dump refuses servers
    /// newer than itself, and saying so up front beats its mid-run error.
    ///
    /// # Errors
    /// `SourceError::TooOld`.
    pub fn require_at_least(
        &self,
        server_major: u32,
        server_version: &str,
    ) -> Result<(), SourceError> {
        if self.major < server_major {
            return Err(SourceError::TooOld {
                program: self.path.display().to_string(),
                version: self.version.clone(),
                server_version: server_version.to_string(),
                server_major,
            });
        }
        Ok(())
    }

    /// A command for this tool whose libpq environment is exactly `env`: inherited PG*
    /// variables are removed, so nothing but what pgkeep resolved reaches the child, and
    /// secrets travel only through the environment.
    pub fn command(&self, args: &[String], env: &[(String, String)]) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(args);
        for var in libpq_env_vars() {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.kill_on_drop(true);
        cmd
    }
}

/// A running child whose stderr is being drained; `finish` waits for it and turns a
/// failure into an error carrying stderr's tail.
pub struct Running {
    program: String,
    child: Child,
    stderr: JoinHandle<Vec<String>>,
}

impl Running {
    /// Starts `cmd` with stdout piped (for reading) and stdin null.
    ///
    /// # Errors
    /// `SourceError::Spawn`.
    pub fn spawn_reader(
        program: &str,
        mut cmd: Command,
    ) -> Result<(Running, ChildStdout), SourceError> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut running = Self::spawn(program, cmd)?;
        let stdout = running.child.stdout.take().expect("stdout is piped");
        Ok((running, stdout))
    }

    /// Starts `cmd` with stdin piped (for writing) and stdout captured into the log.
    ///
    /// # Errors
    /// `SourceError::Spawn`.
    pub fn spawn_writer(
        program: &str,
        mut cmd: Command,
    ) -> Result<(Running, ChildStdin), SourceError> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::null());
        let mut running = Self::spawn(program, cmd)?;
        let stdin = running.child.stdin.take().expect("stdin is piped");
        Ok((running, stdin))
    }

    /// Starts `cmd` with no stdin or stdout.
    ///
    /// # Errors
    /// `SourceError::Spawn`.
    pub fn spawn_plain(program: &str, mut cmd: Command) -> Result<Running, SourceError> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        Self::spawn(program, cmd)
    }

    fn spawn(program: &str, mut cmd: Command) -> Result<Running, SourceError> {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| SourceError::Spawn {
            program: program.to_string(),
            reason: e.to_string(),
        })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let name = program.to_string();
        let stderr = tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(program = %name, line = %line, "stderr");
                if tail.len() == STDERR_TAIL_LINES {
                    tail.remove(0);
                }
                tail.push(line);
            }
            tail
        });
        Ok(Running {
            program: program.to_string(),
            child,
            stderr,
        })
    }

    /// The OS process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for exit; any exit but 0 is `SourceError::Failed` with stderr's tail.
    ///
    /// # Errors
    /// `SourceError::Failed`, or `Spawn` if waiting itself fails.
    pub async fn finish(mut self) -> Result<Vec<String>, SourceError> {
        let status = self.child.wait().await.map_err(|e| SourceError::Spawn {
            program: self.program.clone(),
            reason: e.to_string(),
        })?;
        let tail = self.stderr.await.unwrap_or_default();
        if status.success() {
            Ok(tail)
        } else {
            Err(SourceError::Failed {
                program: self.program,
                status: describe_status(status),
                stderr: tail.join(" | "),
            })
        }
    }

    /// Kills the child (used when the other end of its pipe failed) and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        let _ = self.stderr.await;
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}
