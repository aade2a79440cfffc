//! The keys of a dump job of a whole server: `databases` and `exclude_databases`.

use super::problems::Problems;
use super::{ClusterSettings, JobKind, RawJob};
use crate::pattern::DatabasePattern;

/// `databases` / `exclude_databases`: a dump job of every matching database of the server.
pub(super) fn cluster_settings(
    at: &dyn Fn(&str) -> String,
    raw: &RawJob,
    kind: Option<JobKind>,
    problems: &mut Problems,
) -> Option<ClusterSettings> {
    if kind == Some(JobKind::Export) {
        for (key, set) in [
            ("databases", raw.databases.is_some()),
            ("exclude_databases", raw.exclude_databases.is_some()),
        ] {
            if set {
                problems.add(
                    at(key),
                    "an export job reads one database; back up a whole server with a dump job (kind = \"dump\")",
                );
            }
        }
        return None;
    }
    let Some(include) = &raw.databases else {
        if raw.exclude_databases.is_some() {
            problems.add(
                at("exclude_databases"),
                "applies to a job of a whole server: set `databases` too (e.g. [\"*\"])",
            );
        }
        return None;
    };
    if include.is_empty() {
        problems.add(
            at("databases"),
            "name the databases to back up (patterns; [\"*\"] for every one), or remove the key",
        );
    }
    let mut patterns = |key: &str, texts: &[String]| -> Vec<DatabasePattern> {
        texts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                problems.check(&format!("{}[{i}]", at(key)), DatabasePattern::parse(p))
            })
            .collect()
    };
    let include = patterns("databases", include);
    let exclude = patterns(
        "exclude_databases",
        raw.exclude_databases.as_deref().unwrap_or_default(),
    );
    Some(ClusterSettings { include, exclude })
}
