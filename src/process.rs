//! Child processes (pg_dump, pg_dumpall, pg_restore): finding the right binary and its version,
//! and the one way pgkeep runs them — stdout streamed or captured, stderr drained concurrently as
//! bytes (a child that writes invalid UTF-8 is still drained, so it never blocks on a full pipe),
//! the exit status always checked, and stderr's tail kept for the error.

use std::io;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

mod tool;

pub use tool::{Hint, Tool};

/// How many lines of a child's stderr are kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept (a child printing a huge line must not make a huge message).
const STDERR_LINE_MAX: usize = 1000;

/// Errors of a child process; each names the program and carries stderr's tail.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} --version printed something unexpected: {output}")]
    Version { program: String, output: String },
    #[error("{program} is version {version}, older than {needed_by}: {}", hint.text(*needed_major))]
    TooOld {
        program: String,
        version: String,
        needed_major: u32,
        /// What it is too old for: "the server (PostgreSQL 18.1)", "the archive (...)".
        needed_by: String,
        /// Where a newer one is looked for.
        hint: Hint,
    },
    #[error("{program} failed ({status}){}", stderr_suffix(.stderr))]
    Failed {
        program: String,
        status: String,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl ChildError {
    /// Whether the child's own words say it was refused permission (pg_dumpall reading
    /// `pg_authid`): the only account a child process gives of itself is its stderr.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, ChildError::Failed { stderr, .. } if stderr.contains("permission denied"))
    }

    /// Whether it died of SIGPIPE: the reader of its output went away first, so the reader's
    /// failure is the one to report.
    pub fn died_of_broken_pipe(&self) -> bool {
        const SIGPIPE: i32 = 13;
        matches!(
            self,
            ChildError::Failed {
                signal: Some(SIGPIPE),
                ..
            }
        )
    }
}

/// Runs `cmd` to its end with stdout captured; stderr drained as for every child.
async fn capture(program: &str, mut cmd: Command) -> Result<String, ChildError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut running = Running::spawn(program, cmd)?;
    let mut stdout = running.child.stdout.take().expect("stdout is piped");
    let mut out = Vec::new();
    let read = stdout.read_to_end(&mut out).await;
    running.finish().await?;
    read.map_err(|source| ChildError::Spawn {
        program: program.to_string(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A running child whose stderr is being drained; `finish` waits for it and turns a failure
/// into an error carrying stderr's tail.
pub struct Running {
    program: String,
    child: Child,
    stderr: JoinHandle<Vec<String>>,
}

impl Running {
    /// Starts `cmd` with stdout piped (for reading) and stdin null.
    ///
    /// # Errors
    /// `ChildError::Spawn`.
    pub fn spawn_reader(
        program: &str,
        mut cmd: Command,
    ) -> Result<(Running, ChildStdout), ChildError> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut running = Self::spawn(program, cmd)?;
        let stdout = running.child.stdout.take().expect("stdout is piped");
        Ok((running, stdout))
    }

    /// Starts `cmd` with stdin piped (for writing) and stdout discarded.
    ///
    /// # Errors
    /// `ChildError::Spawn`.
    pub fn spawn_writer(
        program: &str,
        mut cmd: Command,
    ) -> Result<(Running, ChildStdin), ChildError> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::null());
        let mut running = Self::spawn(program, cmd)?;
        let stdin = running.child.stdin.take().expect("stdin is piped");
        Ok((running, stdin))
    }

    /// Starts `cmd` with stdin piped (for writing) and stdout piped (for reading).
    ///
    /// # Errors
    /// `ChildError::Spawn`.
    pub fn spawn_filter(
        program: &str,
        mut cmd: Command,
    ) -> Result<(Running, ChildStdin, ChildStdout), ChildError> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut running = Self::spawn(program, cmd)?;
        let stdin = running.child.stdin.take().expect("stdin is piped");
        let stdout = running.child.stdout.take().expect("stdout is piped");
        Ok((running, stdin, stdout))
    }

    /// Starts `cmd` with no stdin or stdout.
    ///
    /// # Errors
    /// `ChildError::Spawn`.
    pub fn spawn_plain(program: &str, mut cmd: Command) -> Result<Running, ChildError> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        Self::spawn(program, cmd)
    }

    fn spawn(program: &str, mut cmd: Command) -> Result<Running, ChildError> {
        cmd.stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| ChildError::Spawn {
            program: program.to_string(),
            source,
        })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let name = program.to_string();
        let stderr = tokio::spawn(async move { drain(&name, stderr).await });
        Ok(Running {
            program: program.to_string(),
            child,
            stderr,
        })
    }

    /// Waits for exit; any exit but 0 is `ChildError::Failed` with stderr's tail.
    ///
    /// # Errors
    /// `ChildError::Failed`, or `Spawn` if waiting itself fails.
    pub async fn finish(mut self) -> Result<Vec<String>, ChildError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|source| ChildError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let tail = self.stderr.await.unwrap_or_default();
        if status.success() {
            Ok(tail)
        } else {
            Err(ChildError::Failed {
                program: self.program,
                status: describe_status(status),
                signal: signal_of(status),
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

/// Reads a child's stderr to its end as bytes, logging each line and keeping the last ones.
async fn drain(program: &str, mut stderr: impl AsyncRead + Unpin) -> Vec<String> {
    let mut tail: Vec<String> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let keep = |line: &[u8], tail: &mut Vec<String>| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        tracing::debug!(program, line = %text, "stderr");
        if tail.len() == STDERR_TAIL_LINES {
            tail.remove(0);
        }
        tail.push(text.chars().take(STDERR_LINE_MAX).collect());
    };
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(at) = memchr::memchr(b'\n', &pending) {
            keep(&pending[..at], &mut tail);
            pending.drain(..=at);
        }
        // A line with no end in sight: keep its start, drop the rest, keep draining.
        if pending.len() > 64 * 1024 {
            keep(&pending, &mut tail);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        keep(&pending, &mut tail);
    }
    tail
}

fn signal_of(status: ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), signal_of(status)) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stderr_with_invalid_utf8_is_drained_and_reported() {
        // Far more than a pipe holds, with invalid UTF-8 in every line, then a failure: the
        // child must neither block on stderr nor lose its last words.
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(
            "i=0; while [ $i -lt 2000 ]; do printf 'line %d \\377\\376 bad\\n' $i >&2; i=$((i+1)); done; \
             printf 'the end \\377\\n' >&2; exit 3",
        );
        let running = Running::spawn_plain("sh", cmd).unwrap();
        let err = running.finish().await.unwrap_err();
        let ChildError::Failed { status, stderr, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(status, "exit code 3");
        assert!(stderr.ends_with("the end \u{fffd}"), "{stderr}");
        assert!(
            stderr.contains("line 1999 \u{fffd}\u{fffd} bad"),
            "{stderr}"
        );
        assert_eq!(stderr.matches(" | ").count(), STDERR_TAIL_LINES - 1);
    }

    #[tokio::test]
    async fn sigpipe_is_recognised() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("kill -PIPE $$");
        let err = Running::spawn_plain("sh", cmd)
            .unwrap()
            .finish()
            .await
            .unwrap_err();
        assert!(err.died_of_broken_pipe(), "{err}");
        assert!(err.to_string().contains("killed by signal 13"), "{err}");
    }

    #[tokio::test]
    async fn capture_returns_stdout_and_checks_the_status() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("printf 'out\\377'; printf 'why' >&2; exit 0");
        assert_eq!(capture("sh", cmd).await.unwrap(), "out\u{fffd}");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("printf 'out'; printf 'why' >&2; exit 1");
        let err = capture("sh", cmd).await.unwrap_err();
        assert_eq!(err.to_string(), "sh failed (exit code 1): why");
    }
}
