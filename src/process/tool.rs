//! Finding a PostgreSQL client program (pg_dump, pg_dumpall, pg_restore) new enough for the job:
//! the configured `pg_bin_dir` alone when there is one, else the Debian layout
//! (`/usr/lib/postgresql/N/bin`, newest major first), else `PATH`, taking the major needed or
//! the closest newer one; and refusing an older one before anything starts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::{ChildError, capture};
use crate::pg::libpq_env_vars;

/// Where Debian (and the postgresql.org apt packages) install each major's programs.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

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
    /// Finds `name`. A configured `bin_dir` is the only place looked at (the operator chose
    /// it). Otherwise the candidates are the Debian layout's directories, newest major first,
    /// then `PATH`; of those at least `at_least`, the one of that very major wins, else the
    /// oldest newer one (see `choose` for why not the newest). When none is new enough, the
    /// newest one found is returned, so that [`Tool::require_at_least`] names it.
    ///
    /// # Errors
    /// `ChildError::Spawn` when no candidate can be run, `ChildError::Version` when the
    /// chosen one's `--version` output is odd.
    pub async fn locate(
        name: &'static str,
        bin_dir: Option<&Path>,
        at_least: Option<u32>,
    ) -> Result<Tool, ChildError> {
        let candidates = match bin_dir {
            Some(dir) => vec![dir.join(name)],
            None => candidates(
                name,
                Path::new(DEBIAN_ROOT),
                std::env::var_os("PATH").as_ref(),
            ),
        };
        choose(name, candidates, at_least).await
    }

    /// Fails unless this tool is of `needed_major` or newer: pg_dump refuses servers newer
    /// than itself and pg_restore archives newer than itself, and saying so up front beats
    /// their mid-run errors. `needed_by` says what it is read for ("the server (PostgreSQL
    /// 18.1)"), `hint` where a newer one is looked for.
    ///
    /// # Errors
    /// `ChildError::TooOld`.
    pub fn require_at_least(
        &self,
        needed_major: u32,
        needed_by: &str,
        hint: Hint,
    ) -> Result<(), ChildError> {
        if self.major < needed_major {
            return Err(ChildError::TooOld {
                program: self.path.display().to_string(),
                version: self.version.clone(),
                needed_major,
                needed_by: needed_by.to_string(),
                hint,
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

    /// Runs the tool to its end and returns its stdout (decoded lossily).
    ///
    /// # Errors
    /// `ChildError::Spawn`, or `Failed` with stderr's tail when it exits non-zero.
    pub async fn capture(
        &self,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<String, ChildError> {
        capture(self.name, self.command(args, env)).await
    }
}

/// What a refusal suggests: the place the operator can point pgkeep at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Jobs (backup, check, verify) read the job's `pg_bin_dir`.
    PgBinDir,
    /// Restores look in the Debian layout and on `PATH` only.
    Path,
}

impl Hint {
    /// What to install or configure for a `major` one.
    pub fn text(self, major: u32) -> String {
        let install = format!(
            "install the PostgreSQL {major} client programs (Debian: postgresql-client-{major})"
        );
        match self {
            Hint::PgBinDir => format!("{install} or set the job's pg_bin_dir to their directory"),
            Hint::Path => format!("{install} or put their directory first on PATH"),
        }
    }
}

/// The places `name` may be, in the order they are tried: `root/N/bin/name` for every
/// numeric `N` under `root`, newest first, then every `PATH` directory's `name`.
fn candidates(name: &str, root: &Path, path: Option<&OsString>) -> Vec<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let program = entry.path().join("bin").join(name);
            program.is_file().then_some((major, program))
        })
        .collect();
    majors.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    let mut out: Vec<PathBuf> = majors.into_iter().map(|(_, p)| p).collect();
    for dir in path.into_iter().flat_map(std::env::split_paths) {
        let program = dir.join(name);
        if program.is_file() && !out.contains(&program) {
            out.push(program);
        }
    }
    out
}

/// The candidate closest to `at_least` from above: its own major when there is one, else the
/// oldest newer one (on equal majors, the earlier candidate). Not simply the newest: pg_restore
/// 17 and later start every restore with `SET transaction_timeout`, which servers before 17
/// reject, so a newer pg_dump's archive (which needs a pg_restore as new) could never be
/// restored into a server of the major it was taken from. With no `at_least`, the first
/// candidate that runs; with none new enough, the newest one (for the refusal to name);
/// else the first failure (with no candidate at all, the failure to run `name` itself).
async fn choose(
    name: &'static str,
    candidates: Vec<PathBuf>,
    at_least: Option<u32>,
) -> Result<Tool, ChildError> {
    let mut fit: Option<Tool> = None;
    let mut too_old: Option<Tool> = None;
    let mut first_error = None;
    let candidates = if candidates.is_empty() {
        vec![PathBuf::from(name)]
    } else {
        candidates
    };
    for path in candidates {
        match probe(name, path).await {
            Ok(tool) => match at_least {
                None => return Ok(tool),
                Some(m) if tool.major == m => return Ok(tool),
                Some(m) if tool.major > m => {
                    if fit.as_ref().is_none_or(|f| tool.major < f.major) {
                        fit = Some(tool);
                    }
                }
                Some(_) => {
                    tracing::debug!(program = %tool.path.display(), version = %tool.version, "too old, looking further");
                    if too_old.as_ref().is_none_or(|b| tool.major > b.major) {
                        too_old = Some(tool);
                    }
                }
            },
            Err(e) => {
                tracing::debug!(program = name, error = %e, "candidate cannot be used");
                first_error.get_or_insert(e);
            }
        }
    }
    match (fit.or(too_old), first_error) {
        (Some(tool), _) => Ok(tool),
        (None, Some(e)) => Err(e),
        (None, None) => unreachable!("there is always at least one candidate"),
    }
}

/// Runs `path --version` and reads the version it reports.
async fn probe(name: &'static str, path: PathBuf) -> Result<Tool, ChildError> {
    let program = path.display().to_string();
    let mut cmd = Command::new(&path);
    cmd.arg("--version");
    let out = capture(&program, cmd).await?;
    let (version, major) = parse_version(&out).ok_or_else(|| ChildError::Version {
        program: program.clone(),
        output: out.trim().chars().take(200).collect(),
    })?;
    Ok(Tool {
        name,
        path,
        version,
        major,
    })
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` -> (`15.18`, 15).
fn parse_version(text: &str) -> Option<(String, u32)> {
    let version = text
        .split(')')
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_string();
    if !version.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    let major = version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())?;
    Some((version, major))
}

#[cfg(test)]
#[path = "tool_tests.rs"]
mod tests;
