//! deploy/monitoring/: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), every alert has a case where it fires and one where it stays
//! silent, and the Grafana dashboard is well formed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{dashboard, dashboard_queries, metric_names, repo, yaml_docs};

const TEST_FILES: &[&str] = &["pgkeep.rules.test.yaml", "pgkeep.rules.days.test.yaml"];

fn dir() -> PathBuf {
    repo().join("deploy/monitoring")
}

fn promtool(args: &[&str]) -> Option<(bool, String)> {
    let promtool = crate::common::tools::program("promtool")?;
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir())
        .stdin(Stdio::null())
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some((ok, text)) = promtool(&["check", "rules", "pgkeep.rules.yaml"]) else {
        return;
    };
    assert!(ok, "promtool check rules:\n{text}");
    assert!(text.contains("SUCCESS: 10 rules found"), "{text}");
    for file in TEST_FILES {
        let (ok, text) = promtool(&["test", "rules", file]).expect("promtool was found");
        assert!(ok, "promtool test rules {file}:\n{text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

/// The unit tests are only worth what they cover: each alert of the rules file must fire in
/// some case and be expected silent in another, and a rule changed so it never fires must
/// fail them.
#[test]
fn every_alert_is_tested_firing_and_silent() {
    let Some(rules) = yaml_docs(&dir().join("pgkeep.rules.yaml")) else {
        return;
    };
    let mut alerts = BTreeSet::new();
    for group in rules[0]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_string();
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name} has no severity"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name} has no summary"
            );
            alerts.insert(name);
        }
    }
    // alert -> (cases where it fires, cases where it is silent)
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for file in TEST_FILES {
        let doc = &yaml_docs(&dir().join(file)).unwrap()[0];
        assert_eq!(doc["rule_files"][0], "pgkeep.rules.yaml", "{file}");
        for test in doc["tests"].as_array().unwrap() {
            for case in test["alert_rule_test"].as_array().unwrap() {
                let name = case["alertname"].as_str().unwrap().to_string();
                let fired = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
                let entry = cases.entry(name).or_default();
                if fired {
                    entry.0 += 1;
                } else {
                    entry.1 += 1;
                }
            }
        }
    }
    for alert in &alerts {
        let (fires, silent) = cases.get(alert).copied().unwrap_or_default();
        assert!(fires > 0, "no test case where {alert} fires");
        assert!(silent > 0, "no test case where {alert} stays silent");
    }
    let unknown: Vec<_> = cases.keys().filter(|a| !alerts.contains(*a)).collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts that do not exist: {unknown:?}"
    );

    // A stale-backup rule that can never fire must fail the unit tests.
    let Some(promtool) = crate::common::tools::program("promtool") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dir().join("pgkeep.rules.yaml")).unwrap();
    let broken = text.replace(
        "and pgkeep_backup_max_age_seconds > 0\n        for: 10m",
        "and pgkeep_backup_max_age_seconds > 1e12\n        for: 10m",
    );
    assert_ne!(
        broken, text,
        "the stale rule's expression changed: update this test"
    );
    std::fs::write(scratch.path().join("pgkeep.rules.yaml"), broken).unwrap();
    std::fs::copy(
        dir().join("pgkeep.rules.test.yaml"),
        scratch.path().join("pgkeep.rules.test.yaml"),
    )
    .unwrap();
    let out = Command::new(promtool)
        .args(["test", "rules", "pgkeep.rules.test.yaml"])
        .current_dir(scratch.path())
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "a rule that never fires passed:\n{report}"
    );
    assert!(report.contains("alertname: PgkeepBackupStale"), "{report}");
}

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "pgkeep-backups");
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id in {title}"
        );
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
            "{title}: {grid}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(t["refId"].is_string(), "{title}");
        }
    }
    // What the dashboard is for: each of these is charted.
    let queries = dashboard_queries(&d);
    let used: BTreeSet<String> = queries.iter().flat_map(|(_, q)| metric_names(q)).collect();
    for wanted in [
        "pgkeep_backup_last_success_timestamp_seconds",
        "pgkeep_backup_duration_seconds",
        "pgkeep_backup_bytes",
        "pgkeep_backup_failures_total",
        "pgkeep_drill_last_success_timestamp_seconds",
        "pgkeep_drill_failures_total",
        "pgkeep_prune_failures_total",
        "process_start_time_seconds",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not chart {wanted}"
        );
    }
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "instance", "job"]);
}
