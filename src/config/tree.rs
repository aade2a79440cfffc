//! The configuration before it is typed: the TOML file's values as a tree, with the
//! `PGKEEP_*` overrides merged in as strings that remember their variable.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use super::{ConfigError, Problem};
use crate::redact::{show, show_at_most};

/// The prefix of override variables.
pub(super) const ENV_PREFIX: &str = "PGKEEP_";
/// Variables under the prefix that are not configuration keys.
pub(super) const NOT_KEYS: &[&str] = &[
    "PGKEEP_CONFIG",
    "PGKEEP_LOG",
    "PGKEEP_LOG_FORMAT",
    "PGKEEP_AGE_IDENTITY_FILE",
];

/// Whether `var` is one of the variables Kubernetes sets in every container for a Service
/// whose name starts with `pgkeep` (`PGKEEP_SERVICE_HOST`, `PGKEEP_SERVICE_PORT_METRICS`,
/// `PGKEEP_PORT`, `PGKEEP_PORT_9187_TCP_ADDR`, `PGKEEP_METRICS_SERVICE_HOST`, ...). No
/// configuration key has such a name (they have no `__` level), so they are never overrides.
pub(super) fn is_service_link(var: &str) -> bool {
    let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
        return false;
    };
    if rest.contains("__") {
        return false;
    }
    let words: Vec<&str> = rest.split('_').collect();
    let service = words
        .windows(2)
        .any(|w| w[0] == "SERVICE" && (w[1] == "HOST" || w[1] == "PORT"));
    let port = words.iter().enumerate().any(|(i, w)| {
        *w == "PORT"
            && (i + 1 == words.len()
                || (words
                    .get(i + 1)
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
                    && words
                        .get(i + 2)
                        .is_some_and(|p| matches!(*p, "TCP" | "UDP" | "SCTP"))))
    });
    service || port
}

/// One value of the tree.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(BTreeMap<String, Node>),
    /// An environment override: a string the deserializer parses as the key's type.
    Env {
        var: String,
        value: String,
    },
}

impl Node {
    fn from_toml(value: toml::Value) -> Node {
        match value {
            toml::Value::String(s) => Node::Str(s),
            toml::Value::Integer(n) => Node::Int(n),
            toml::Value::Float(x) => Node::Float(x),
            toml::Value::Boolean(b) => Node::Bool(b),
            toml::Value::Datetime(d) => Node::Datetime(d.to_string()),
            toml::Value::Array(items) => {
                Node::Array(items.into_iter().map(Node::from_toml).collect())
            }
            toml::Value::Table(t) => Node::Table(from_table(t)),
        }
    }

    /// What this value is, for "expected X, found Y" (strings shortened and masked).
    pub(super) fn describe(&self) -> String {
        match self {
            Node::Str(s) => format!("a string ('{}')", show(s)),
            Node::Int(n) => format!("an integer ({n})"),
            Node::Float(x) => format!("a float ({x})"),
            Node::Bool(b) => format!("a boolean ({b})"),
            Node::Datetime(_) => "a date-time".into(),
            Node::Array(_) => "an array".into(),
            Node::Table(_) => "a table".into(),
            Node::Env { value, .. } => format!("'{}'", show(value)),
        }
    }
}

fn from_table(t: toml::Table) -> BTreeMap<String, Node> {
    t.into_iter()
        .map(|(k, v)| (k, Node::from_toml(v)))
        .collect()
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// `jobs.nightly.include[1]`; odd or long keys quoted and shortened so a path stays short
/// and on one line.
pub(super) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&show_key(k));
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// A key as a path shows it: bare when it is a plain TOML key, else quoted.
pub(super) fn show_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key.len() <= 40
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("\"{}\"", show_at_most(key, 40))
    }
}

/// The key path of a variable name's levels.
pub(super) fn keys(segments: &[String]) -> Vec<Seg> {
    segments.iter().cloned().map(Seg::Key).collect()
}

/// Reads and parses a configuration file.
///
/// # Errors
/// `Read` when it cannot be read, `Syntax` (one line, with the line and column) when it is
/// not UTF-8 TOML.
pub(super) fn read_file(path: &Path) -> Result<BTreeMap<String, Node>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let syntax = |prefix: &str, reason: String| {
        let (line, column) = position(prefix);
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            reason,
        }
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            return Err(syntax(valid, "the file is not valid UTF-8".into()));
        }
    };
    match text.parse::<toml::Table>() {
        Ok(table) => Ok(from_table(table)),
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            let at = (0..=at)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            let what = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
            Err(syntax(&text[..at], show_at_most(&what, 150)))
        }
    }
}

/// The 1-based line and column just after `prefix`.
fn position(prefix: &str) -> (usize, usize) {
    let line = prefix.matches('\n').count() + 1;
    let column = prefix.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// An array written in an environment variable, as TOML: `["a", "b"]`.
pub(super) fn parse_env_array(value: &str) -> Option<Vec<Node>> {
    let doc: toml::Table = format!("v = {value}").parse().ok()?;
    if doc.len() != 1 {
        return None;
    }
    match doc.into_iter().next()? {
        (_, toml::Value::Array(items)) => Some(items.into_iter().map(Node::from_toml).collect()),
        _ => None,
    }
}

/// Two jobs whose names differ only in case: no override could tell them apart.
pub(super) fn check_job_name_case(root: &BTreeMap<String, Node>, problems: &mut Vec<Problem>) {
    let Some(Node::Table(jobs)) = root.get("jobs") else {
        return;
    };
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for name in jobs.keys() {
        if let Some(first) = seen.insert(name.to_ascii_lowercase(), name) {
            problems.push(Problem::new(
                render(&[Seg::Key("jobs".into()), Seg::Key(name.clone())]),
                format!(
                    "differs from job '{}' only in case; job names must differ in more than case, as PGKEEP_JOBS__NAME__* overrides cannot tell them apart",
                    show(first)
                ),
            ));
        }
    }
}

/// Where each overridden key came from: rendered key path to variable name.
pub(super) type Origins = BTreeMap<String, String>;

/// Merges the `PGKEEP_*` variables of `env` into `root`: `PGKEEP_A__B=v` sets key `a.b` to
/// the string `v`. A job is named case-insensitively, as the file spells it, or in lower case
/// when the file has no such job.
pub(super) fn merge_env(
    root: &mut BTreeMap<String, Node>,
    env: &HashMap<String, String>,
    problems: &mut Vec<Problem>,
) -> Origins {
    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(k, _)| {
            k.starts_with(ENV_PREFIX) && !NOT_KEYS.contains(&k.as_str()) && !is_service_link(k)
        })
        .collect();
    vars.sort();
    let mut origins = Origins::new();
    let mut set: Vec<(Vec<String>, &str)> = Vec::new();
    for (var, value) in vars {
        let mut path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            problems.push(Problem::new(
                show_key(var),
                "is not a configuration key: every level between PGKEEP_ and `__` separators needs a name, e.g. PGKEEP_STORAGE__URL",
            ));
            continue;
        }
        if path[0] == "jobs"
            && path.len() > 1
            && let Some(Node::Table(jobs)) = root.get("jobs")
            && let Some(name) = jobs.keys().find(|k| k.eq_ignore_ascii_case(&path[1]))
        {
            path[1].clone_from(name);
        }
        let key = render(&keys(&path));
        if let Some((_, other)) = set
            .iter()
            .find(|(p, _)| p.starts_with(&path) || path.starts_with(p))
        {
            problems.push(Problem::new(
                key,
                format!("set by both {other} and {var}; keep one"),
            ));
            continue;
        }
        let node = Node::Env {
            var: var.clone(),
            value: value.clone(),
        };
        match insert(root, &path, node) {
            Ok(()) => {
                origins.insert(key, var.clone());
                set.push((path, var));
            }
            Err((depth, found)) => problems.push(Problem::new(
                render(&keys(&path[..=depth])),
                format!("is {found} in the file, so {var} cannot set a key inside it"),
            )),
        }
    }
    origins
}

/// Sets `path` to `node`, creating tables on the way; fails with the depth and a
/// description of a value in the way that is not a table.
fn insert(
    root: &mut BTreeMap<String, Node>,
    path: &[String],
    node: Node,
) -> Result<(), (usize, String)> {
    let (last, parents) = path
        .split_last()
        .expect("a variable names at least one key");
    let mut table = root;
    for (depth, key) in parents.iter().enumerate() {
        let next = table
            .entry(key.clone())
            .or_insert_with(|| Node::Table(BTreeMap::new()));
        table = match next {
            Node::Table(t) => t,
            other => return Err((depth, other.describe())),
        };
    }
    table.insert(last.clone(), node);
    Ok(())
}

/// Removes the value at `path`; whether there was one.
pub(super) fn remove(root: &mut Node, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = root;
    for seg in parents {
        node = match (node, seg) {
            (Node::Table(t), Seg::Key(k)) => match t.get_mut(k) {
                Some(n) => n,
                None => return false,
            },
            (Node::Array(a), Seg::Index(i)) => match a.get_mut(*i) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match (node, last) {
        (Node::Table(t), Seg::Key(k)) => t.remove(k).is_some(),
        (Node::Array(a), Seg::Index(i)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
