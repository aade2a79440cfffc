//! Finding the configuration file and merging it with `PGKEEP_*` environment overrides.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError, DEFAULT_JOB, Problem, RawConfig, RawJob};

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "PGKEEP_CONFIG";
const ENV_PREFIX: &str = "PGKEEP_";
/// Variables under the prefix that are not configuration keys.
const NOT_KEYS: &[&str] = &["PGKEEP_CONFIG", "PGKEEP_LOG", "PGKEEP_LOG_FORMAT"];

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
/// `ConfigError` naming the file or the key at fault.
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let path = discover(explicit, &env)?;
    load_from(path.as_deref(), &env)
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
/// `ConfigError` naming the file or the key at fault.
pub fn load_from(
    path: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let overrides: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !NOT_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let mut builder = config::Config::builder();
    if let Some(p) = path {
        let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
            path: p.to_path_buf(),
            reason: e.to_string(),
        })?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix("PGKEEP")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(overrides)),
    );
    let describe = || path.map_or_else(|| "environment".to_string(), |p| p.display().to_string());
    let merged = builder.build().map_err(|e| ConfigError::Syntax {
        path: describe(),
        reason: e.to_string(),
    })?;

    let mut raw: RawConfig = serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        ConfigError::Invalid {
            problems: vec![describe_serde_problem(&key, &inner)],
        }
    })?;

    if path.is_none() && raw.jobs.is_empty() {
        raw.jobs
            .insert(DEFAULT_JOB.to_string(), RawJob::default_dump());
    }
    let source = path.map_or(ConfigSource::Defaults, |p| {
        ConfigSource::File(p.to_path_buf())
    });
    super::validate::validate(raw, source)
}

/// Turns serde's message into a problem whose key is the full path of the offending key.
fn describe_serde_problem(path: &str, message: &str) -> Problem {
    let parent = if path == "." { "" } else { path };
    let join = |name: &str| {
        // serde_path_to_error's path may already end at the offending key.
        if parent == name || parent.ends_with(&format!(".{name}")) {
            parent.to_string()
        } else if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        }
    };
    // serde: "unknown field `databse`, expected one of `kind`, `database`, ..."
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, tail)) = rest.split_once('`')
    {
        let tail = tail.split(" for key ").next().unwrap_or(tail);
        let expected = tail
            .trim_start_matches(", ")
            .replace('`', "")
            .replace("expected one of ", "expected one of: ");
        return Problem {
            key: join(name),
            reason: format!("unknown key ({expected})"),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        return Problem {
            key: join(name),
            reason: "is required".into(),
        };
    }
    Problem {
        key: if parent.is_empty() {
            "(top level)".into()
        } else {
            parent.to_string()
        },
        reason: message.to_string(),
    }
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
        assert_eq!(job.database, "");
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
        assert_eq!(cfg.jobs["nightly"].database, "dbname=app");
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
