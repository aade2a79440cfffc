//! Finding the configuration file, reading the environment, and turning the file plus the
//! `PGKEEP_*` overrides into a validated `Config`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use super::de::{DeError, NodeDe};
use super::tree::{self, ENV_PREFIX, Node, Origins, Seg, render, show_key};
use super::{Config, ConfigError, DEFAULT_JOB, Problem, RawConfig, RawJob};

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "PGKEEP_CONFIG";
/// How many type problems are reported before giving up on the rest.
const MAX_TYPE_PROBLEMS: usize = 64;

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// Loads the configuration the way the CLI does: `explicit` (from `--config`), else
/// `$PGKEEP_CONFIG`, else `./pgkeep.toml`, else `/etc/pgkeep/pgkeep.toml`, else defaults;
/// then applies `PGKEEP_*` overrides from the process environment and validates.
///
/// # Errors
/// `ConfigError` naming the file position, the key or the environment variable at fault.
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    let env = environment(std::env::vars_os())?;
    let path = discover(explicit, &env)?;
    load_from(path.as_deref(), &env)
}

/// The environment as strings. A variable that is not UTF-8 is left out, unless pgkeep reads
/// it (`PGKEEP_*`, and the PG*, `HOME`, `USER` and `LOGNAME` variables connections read):
/// then it is a problem naming the variable, never showing its value.
///
/// # Errors
/// `ConfigError::Invalid` listing every such variable.
pub fn environment(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<HashMap<String, String>, ConfigError> {
    let read: Vec<&str> = crate::pg::Target::env_vars().collect();
    let mut env = HashMap::new();
    let mut problems = Vec::new();
    for (name, value) in vars {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => {
                env.insert(name, value);
            }
            (Ok(name), Err(_)) => {
                if name.starts_with(ENV_PREFIX) || read.contains(&name.as_str()) {
                    problems.push(Problem::new(
                        show_key(&name),
                        "the environment variable's value is not valid UTF-8",
                    ));
                }
            }
            (Err(name), _) => {
                let name = name.to_string_lossy();
                if name.starts_with(ENV_PREFIX) {
                    problems.push(Problem::new(
                        show_key(&name),
                        "the environment variable's name is not valid UTF-8",
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(env)
    } else {
        problems.sort_by(|a, b| a.key.cmp(&b.key));
        Err(ConfigError::Invalid { problems })
    }
}

fn discover(
    explicit: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(p) = explicit {
        return require_file(p).map(Some);
    }
    if let Some(p) = env.get(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return require_file(Path::new(p)).map(Some);
    }
    for candidate in ["pgkeep.toml", "/etc/pgkeep/pgkeep.toml"] {
        let p = Path::new(candidate);
        if p.is_file() {
            return Ok(Some(p.to_path_buf()));
        }
    }
    Ok(None)
}

fn require_file(p: &Path) -> Result<PathBuf, ConfigError> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(p.to_path_buf()),
        Ok(_) => Err(ConfigError::Read {
            path: p.to_path_buf(),
            reason: "not a regular file".into(),
        }),
        Err(e) => Err(ConfigError::Read {
            path: p.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Loads `path` (or only defaults when `None`) with overrides taken from `env`, a map of
/// environment variables; only `PGKEEP_*` entries are used.
///
/// # Errors
/// `ConfigError` naming the file position, the key or the environment variable at fault;
/// every problem found is reported, each on its own `; `-separated part of one line.
pub fn load_from(
    path: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let mut root = match path {
        Some(p) => tree::read_file(p)?,
        None => BTreeMap::new(),
    };
    let mut problems = Vec::new();
    tree::check_job_name_case(&root, &mut problems);
    let origins = tree::merge_env(&mut root, env, &mut problems);
    let (raw, tainted) = typed(root, &mut problems);
    let source = path.map_or(ConfigSource::Defaults, |p| {
        ConfigSource::File(p.to_path_buf())
    });
    if let Some(mut raw) = raw {
        if path.is_none() && raw.jobs.is_empty() {
            raw.jobs
                .insert(DEFAULT_JOB.to_string(), RawJob::default_dump());
        }
        match super::validate::validate(raw, source) {
            Ok(config) if problems.is_empty() => return Ok(config),
            Ok(_) => {}
            // A value of the wrong type is gone (or defaulted): checks that depend on it
            // would only mislead.
            Err(found) => problems.extend(
                found
                    .into_iter()
                    .filter(|p| !tainted.iter().any(|unit| under(&p.key, unit))),
            ),
        }
    }
    for p in &mut problems {
        if let Some(var) = origin(&origins, &p.key)
            && !p.reason.contains(var)
        {
            p.add_note(&format!(" (set by {})", crate::redact::show(var)));
        }
    }
    Err(ConfigError::Invalid { problems })
}

/// Deserializes the tree into `RawConfig`. A value of the wrong type is a problem; it is
/// removed and deserializing starts again, so that every wrong value is reported at once.
/// Returns the typed configuration (when the rest is sound) and the keys whose further
/// checks would mislead.
fn typed(
    root: BTreeMap<String, Node>,
    problems: &mut Vec<Problem>,
) -> (Option<RawConfig>, Vec<String>) {
    let mut node = Node::Table(root);
    let mut tainted = Vec::new();
    for _ in 0..MAX_TYPE_PROBLEMS {
        let error = match serde_path_to_error::deserialize::<_, RawConfig>(NodeDe(&node)) {
            Ok(raw) => return (Some(raw), tainted),
            Err(e) => e,
        };
        let mut path: Vec<Seg> = error
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Seg::Index(*index),
                serde_path_to_error::Segment::Map { key } => Seg::Key(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Seg::Key(variant.clone()),
                serde_path_to_error::Segment::Unknown => Seg::Key("?".into()),
            })
            .collect();
        let inner = error.into_inner();
        let doomed = match &inner {
            DeError::UnknownField { name, .. } => {
                if path.last() != Some(&Seg::Key(name.clone())) {
                    path.push(Seg::Key(name.clone()));
                }
                path.clone()
            }
            DeError::MissingField(name) => {
                let parent = path.clone();
                path.push(Seg::Key((*name).to_string()));
                parent
            }
            DeError::Other(_) => path.clone(),
        };
        problems.push(Problem::new(render(&path), inner.to_string()));
        tainted.extend(dependents(&doomed));
        if !tree::remove(&mut node, &doomed) {
            break;
        }
    }
    (None, tainted)
}

/// The keys whose checks a removed value would mislead: the value itself, and what is
/// judged by it (a job's kind decides which keys it may have; `globals` decides whether
/// `pg_bin_dir` needs pg_dumpall; the `keep_*` counts decide whether retention keeps anything).
fn dependents(removed: &[Seg]) -> Vec<String> {
    let mut keys = vec![render(removed)];
    if let [Seg::Key(jobs), name, Seg::Key(key), ..] = removed
        && jobs == "jobs"
    {
        let job = |k: Option<&str>| {
            let mut path = vec![Seg::Key("jobs".into()), name.clone()];
            path.extend(k.map(|k| Seg::Key(k.into())));
            render(&path)
        };
        match key.as_str() {
            "kind" => keys.push(job(None)),
            "globals" => keys.push(job(Some("pg_bin_dir"))),
            "retention" => keys.push(job(Some("retention"))),
            _ => {}
        }
    }
    keys
}

/// Whether `key` is `unit` or inside it.
fn under(key: &str, unit: &str) -> bool {
    key.strip_prefix(unit)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// The variable that set `key` or the nearest key containing it.
fn origin<'a>(origins: &'a Origins, key: &str) -> Option<&'a str> {
    origins
        .iter()
        .filter(|(k, _)| under(key, k))
        .max_by_key(|(k, _)| k.len())
        .map(|(_, var)| var.as_str())
}

impl RawJob {
    fn default_dump() -> RawJob {
        RawJob {
            kind: "dump".into(),
            compression: "gzip".into(),
            globals: true,
            ..RawJob::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn misspelled_key_is_named_with_its_path() {
        let f = write("[jobs.nightly]\nkind = \"dump\"\ndatabse = \"x\"\n");
        let err = load_from(Some(f.path()), &HashMap::new()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("jobs.nightly.databse: unknown key"), "{msg}");
        assert!(!msg.contains("databse.databse"), "{msg}");
        assert!(msg.contains("unknown key"), "{msg}");
    }

    #[test]
    fn misspelled_top_level_section_is_named() {
        let f = write("[storag]\nurl = \"file:///tmp/x\"\n");
        let msg = load_from(Some(f.path()), &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("invalid configuration: storag: unknown key"),
            "{msg}"
        );
    }

    #[test]
    fn no_file_gives_one_default_dump_job() {
        let cfg = load_from(None, &HashMap::new()).unwrap();
        assert_eq!(cfg.jobs.len(), 1);
        let job = &cfg.jobs["default"];
        assert_eq!(job.kind, super::super::JobKind::Dump);
        assert_eq!(job.database, crate::pg::ConnInfo::default());
        assert_eq!(job.timeout, super::super::DEFAULT_TIMEOUT);
        assert_eq!(cfg.storage.url, "file://./pgkeep-backups");
        assert_eq!(cfg.source, ConfigSource::Defaults);
    }

    #[test]
    fn environment_overrides_file_values_and_adds_keys() {
        let f = write(
            "[storage]\nurl = \"file:///tmp/a\"\n[jobs.nightly]\ndatabase = \"dbname=app\"\n",
        );
        let env: HashMap<String, String> = [
            ("PGKEEP_STORAGE__URL", "s3://bucket/prefix"),
            ("PGKEEP_STORAGE__S3__FORCE_PATH_STYLE", "true"),
            ("PGKEEP_JOBS__NIGHTLY__COMPRESSION", "gzip:1"),
            ("PGKEEP_CONFIG", "/ignored"),
            ("UNRELATED", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cfg = load_from(Some(f.path()), &env).unwrap();
        assert_eq!(cfg.storage.url, "s3://bucket/prefix");
        assert!(cfg.storage.s3.force_path_style);
        assert_eq!(cfg.jobs["nightly"].compression.to_string(), "gzip:1");
        assert_eq!(cfg.jobs["nightly"].database.get("dbname"), Some("app"));
    }

    #[test]
    fn unknown_environment_key_is_an_error_naming_it() {
        let env: HashMap<String, String> =
            [("PGKEEP_STORAGE__URLL".to_string(), "x".to_string())].into();
        let msg = load_from(None, &env).unwrap_err().to_string();
        assert!(msg.contains("storage.urll"), "{msg}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let err =
            discover(Some(Path::new("/nonexistent/pgkeep.toml")), &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pgkeep.toml"));
    }

    #[test]
    fn example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let cfg = load_from(Some(&path), &HashMap::new()).unwrap();
        assert!(!cfg.jobs.is_empty());
    }
}
