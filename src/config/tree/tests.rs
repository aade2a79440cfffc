//! Unit tests of the configuration tree: merging overrides, positions, key paths.

use super::*;

fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn file(text: &str) -> BTreeMap<String, Node> {
    from_table(text.parse().unwrap())
}

#[test]
fn overrides_name_jobs_case_insensitively() {
    let mut root = file("[jobs.Nightly]\ndatabase = \"a\"\n");
    let mut problems = Vec::new();
    let origins = merge_env(
        &mut root,
        &env(&[
            ("PGKEEP_JOBS__NIGHTLY__DATABASE", "b"),
            ("PGKEEP_JOBS__Weekly__KIND", "dump"),
        ]),
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let Some(Node::Table(jobs)) = root.get("jobs") else {
        panic!("no jobs")
    };
    assert_eq!(
        jobs.keys().collect::<Vec<_>>(),
        ["Nightly", "weekly"],
        "no second job"
    );
    let Some(Node::Table(nightly)) = jobs.get("Nightly") else {
        panic!()
    };
    assert!(matches!(&nightly["database"], Node::Env { value, .. } if value == "b"));
    assert_eq!(
        origins.get("jobs.Nightly.database").map(String::as_str),
        Some("PGKEEP_JOBS__NIGHTLY__DATABASE")
    );
}

#[test]
fn conflicting_and_empty_levels_are_problems() {
    let mut root = file("[storage]\nurl = \"file:///x\"\ns3 = 5\n");
    let mut problems = Vec::new();
    merge_env(
        &mut root,
        &env(&[
            ("PGKEEP_STORAGE____URL", "x"),
            ("PGKEEP_DAEMON__RETRIES", "1"),
            ("PGKEEP_daemon__retries", "2"),
            ("PGKEEP_STORAGE__S3__REGION", "r"),
        ]),
        &mut problems,
    );
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for start in [
        "daemon.retries: set by both PGKEEP_DAEMON__RETRIES and PGKEEP_daemon__retries",
        "PGKEEP_STORAGE____URL: is not a configuration key",
        "storage.s3: is an integer (5) in the file, so PGKEEP_STORAGE__S3__REGION",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(start)),
            "{start}: {lines:?}"
        );
    }
}

#[test]
fn case_twins_are_refused() {
    let root = file("[jobs.app]\n[jobs.App]\n");
    let mut problems = Vec::new();
    check_job_name_case(&root, &mut problems);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "jobs.app");
    assert!(
        problems[0].reason.contains("'App' only in case"),
        "{problems:?}"
    );
}

#[test]
fn positions_are_one_based() {
    assert_eq!(position(""), (1, 1));
    assert_eq!(position("ab\ncd"), (2, 3));
    assert_eq!(position("a\n"), (2, 1));
}

#[test]
fn env_arrays_are_toml_arrays_only() {
    assert_eq!(
        parse_env_array("[\"a\", 'b']"),
        Some(vec![Node::Str("a".into()), Node::Str("b".into())])
    );
    assert_eq!(parse_env_array("a,b"), None);
    assert_eq!(parse_env_array("[1]\nw = 2"), None);
    assert_eq!(parse_env_array("\"x\""), None);
}

#[test]
fn keys_are_quoted_when_odd() {
    let path = [
        Seg::Key("jobs".into()),
        Seg::Key("a b".into()),
        Seg::Key("include".into()),
        Seg::Index(2),
    ];
    assert_eq!(render(&path), "jobs.\"a b\".include[2]");
    let long = "k".repeat(100);
    assert!(show_key(&long).len() < 50);
}

#[test]
fn kubernetes_service_links_are_not_overrides() {
    for var in [
        "PGKEEP_SERVICE_HOST",
        "PGKEEP_SERVICE_PORT",
        "PGKEEP_SERVICE_PORT_METRICS",
        "PGKEEP_PORT",
        "PGKEEP_PORT_9187_TCP",
        "PGKEEP_PORT_9187_TCP_PROTO",
        "PGKEEP_PORT_9187_TCP_PORT",
        "PGKEEP_PORT_9187_TCP_ADDR",
        "PGKEEP_METRICS_SERVICE_HOST",
        "PGKEEP_METRICS_PORT_9187_UDP",
    ] {
        assert!(super::is_service_link(var), "{var}");
    }
    for var in [
        "PGKEEP_STORAGE__URL",
        "PGKEEP_DAEMON__LISTEN",
        "PGKEEP_JOBS__PORT__DATABASE",
        "PGKEEP_STORAGE__S3__PART_SIZE_MIB",
        "PGKEEP_PORTS",
        "PGKEEP_STORAGE",
    ] {
        assert!(!super::is_service_link(var), "{var}");
    }
    let mut root = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    let env: std::collections::HashMap<String, String> = [
        ("PGKEEP_PORT".to_string(), "tcp://10.0.0.7:9187".to_string()),
        ("PGKEEP_SERVICE_HOST".to_string(), "10.0.0.7".to_string()),
    ]
    .into();
    super::merge_env(&mut root, &env, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(root.is_empty(), "{root:?}");
}
