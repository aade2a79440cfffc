//! The deployment files under `deploy/`: the Kubernetes manifests (schemas, cross-references,
//! security settings, and the pgkeep configuration in them loaded by the real binary) and the
//! monitoring files (alert rules unit-tested with promtool, the Grafana dashboard's shape).
//! That every metric they name is one a live daemon exports is checked in
//! `daemon/monitoring_files.rs`, which runs a daemon.
//!
//! YAML is read through Python's PyYAML (`PGKEEP_TEST_PYTHON`, else `python3`), which
//! `scripts/test-deps.sh` installs with kubernetes-validate; without it these tests skip (or
//! fail under `PGKEEP_TEST_REQUIRE_TOOLS=1`).

mod kubernetes;
mod monitoring;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every document of the YAML file at `path` (under `deploy/`), as JSON values; `None` (the
/// test skips) without a Python that has PyYAML. All of deploy/'s YAML is read in one Python
/// run, once per test binary.
pub(crate) fn yaml_docs(path: &Path) -> Option<Vec<Value>> {
    static ALL: OnceLock<Option<BTreeMap<PathBuf, Vec<Value>>>> = OnceLock::new();
    let all = ALL.get_or_init(read_deploy_yaml).as_ref()?;
    Some(
        all.get(path)
            .unwrap_or_else(|| panic!("{} is not a YAML file under deploy/", path.display()))
            .clone(),
    )
}

fn read_deploy_yaml() -> Option<BTreeMap<PathBuf, Vec<Value>>> {
    let python = std::env::var("PGKEEP_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = "import json, pathlib, sys\n\
                  try:\n    import yaml\nexcept ImportError:\n    sys.exit(3)\n\
                  out = {}\n\
                  for p in sorted(pathlib.Path(sys.argv[1]).rglob('*.yaml')):\n\
                  \x20   with open(p) as f:\n\
                  \x20       out[str(p)] = [d for d in yaml.safe_load_all(f) if d is not None]\n\
                  json.dump(out, sys.stdout)\n";
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(repo().join("deploy"))
        .stdin(Stdio::null())
        .output();
    let out = crate::common::tools::required(
        out.ok().filter(|o| o.status.code() != Some(3)),
        &format!("{python} with PyYAML is not installed"),
    )?;
    assert!(
        out.status.success(),
        "reading deploy/'s YAML failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: BTreeMap<String, Vec<Value>> =
        serde_json::from_slice(&out.stdout).expect("PyYAML's JSON");
    Some(
        all.into_iter()
            .map(|(k, v)| (PathBuf::from(k), v))
            .collect(),
    )
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// keywords, label names (inside `{}` or after `by`/`on`/...), durations, numbers, strings or
/// Grafana variables (`$job`).
pub(crate) fn metric_names(expr: &str) -> BTreeSet<String> {
    // Operators, and aggregations (written `sum by (job) (...)` as often as `sum(...)`).
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening character to its closing one, past quoted strings.
    let skip = |mut i: usize, close: char| {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '"' || chars[i] == '\'' {
                let quote = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = skip(i + 1, c);
        } else if c == '{' {
            i = skip(i + 1, '}');
        } else if c == '[' {
            i = skip(i + 1, ']');
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip(i + 1, '}');
            }
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&ident.as_str()) {
                if call {
                    i = skip(next + 1, ')');
                }
            } else if !call && !KEYWORDS.contains(&ident.as_str()) {
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every query of the monitoring files, with where it comes from: the alert rules' `expr`s
/// and the dashboard's panel targets and template variables.
pub(crate) fn monitoring_queries() -> Option<Vec<(String, String)>> {
    let dir = repo().join("deploy/monitoring");
    let mut queries = Vec::new();
    let rules = yaml_docs(&dir.join("pgkeep.rules.yaml"))?;
    for group in rules[0]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("alert rules only");
            let expr = rule["expr"].as_str().expect("expr");
            queries.push((format!("rule {name}"), expr.to_string()));
        }
    }
    for (title, expr) in dashboard_queries(&dashboard()) {
        queries.push((format!("dashboard: {title}"), expr));
    }
    Some(queries)
}

pub(crate) fn dashboard() -> Value {
    let path = repo().join("deploy/monitoring/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("reading the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// (panel title or variable, PromQL) of every query in `dashboard`; a variable's
/// `label_values(SELECTOR, label)` contributes its selector.
pub(crate) fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or("").to_string();
            out.push((title.clone(), expr));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"].as_str().expect("a variable's query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map_or_else(
                || panic!("variable query {query} is not label_values(SELECTOR, label)"),
                |(selector, _)| selector.to_string(),
            );
        out.push((format!("variable {}", var["name"]), inner));
    }
    out
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            "(time() - pgkeep_backup_last_success_timestamp_seconds{job=~\"$job\"} > \
             pgkeep_backup_max_age_seconds) and on (job, instance) up{job=\"pgkeep\"} == 0"
        ),
        [
            "pgkeep_backup_last_success_timestamp_seconds",
            "pgkeep_backup_max_age_seconds",
            "up"
        ]
    );
    assert_eq!(
        names(
            "sum by (job, reason) (increase(pgkeep_backup_skipped_total{reason=\"a}b\"}[1h])) \
             > 0.5 * 8 * 86400"
        ),
        ["pgkeep_backup_skipped_total"]
    );
    assert_eq!(names("absent(up{job=\"pgkeep\"})"), ["up"]);
}
