//! deploy/kubernetes/: the built-in kinds pass kubernetes-validate's bundled schemas (strict,
//! Kubernetes 1.33, offline); the ServiceMonitor, a CRD it has no schema for, is checked here
//! by structure; every reference between the objects resolves; pgkeep's containers run
//! unprivileged on a read-only root; and the pgkeep configuration each ConfigMap holds is
//! loaded by the real binary from a copy of what the pod would see mounted; the sidecar's
//! container runs in podman under its pod spec's restrictions (podman_pod.rs).

mod config;
mod pod;
mod podman_pod;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{repo, yaml_docs};

/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.33.0";

/// The variants, each a directory applied on its own (`kubectl apply -f DIR`).
const VARIANTS: &[&str] = &["sidecar", "cronjob"];

fn variant_dir(variant: &str) -> PathBuf {
    repo().join("deploy/kubernetes").join(variant)
}

/// The YAML files of a variant, sorted.
fn files(variant: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(variant_dir(variant))
        .expect("the variant's directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every object of a variant by (kind, name); `None` without PyYAML.
fn objects(variant: &str) -> Option<BTreeMap<(String, String), Value>> {
    let mut out = BTreeMap::new();
    for file in files(variant) {
        for doc in yaml_docs(&file)? {
            let kind = doc["kind"].as_str().expect("kind").to_string();
            let name = doc["metadata"]["name"].as_str().expect("name").to_string();
            let previous = out.insert((kind.clone(), name.clone()), doc);
            assert!(previous.is_none(), "{variant}: two {kind}/{name}");
        }
    }
    Some(out)
}

fn get<'a>(objects: &'a BTreeMap<(String, String), Value>, kind: &str, name: &str) -> &'a Value {
    objects
        .get(&(kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn is_builtin(doc: &Value) -> bool {
    !doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
}

fn kubernetes_validate(files: &[PathBuf]) -> Option<(bool, String)> {
    let tool = crate::common::tools::program("kubernetes-validate")?;
    let out = Command::new(tool)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .expect("running kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[test]
fn builtin_kinds_pass_kubernetes_validate() {
    // Files holding built-in kinds only (the ServiceMonitor's has none), of every variant,
    // validated in one run.
    let mut builtin = Vec::new();
    let mut expected = Vec::new();
    for variant in VARIANTS {
        let Some(objects) = objects(variant) else {
            return;
        };
        for f in files(variant) {
            if yaml_docs(&f).unwrap().iter().all(is_builtin) {
                builtin.push(f);
            }
        }
        for ((kind, name), doc) in &objects {
            if is_builtin(doc) {
                expected.push(format!(
                    "passed for resource {}/{name} against version 1.33",
                    kind.to_lowercase()
                ));
            }
        }
    }
    let Some((ok, text)) = kubernetes_validate(&builtin) else {
        return;
    };
    assert!(ok, "kubernetes-validate:\n{text}");
    for passed in &expected {
        assert!(text.contains(passed), "no '{passed}' in:\n{text}");
    }
    assert!(!text.contains("WARN"), "{text}");
    // Strict validation is what catches a misspelt field, which Kubernetes would drop.
    let scratch = tempfile::tempdir().unwrap();
    let typo = scratch.path().join("cronjob.yaml");
    let text = std::fs::read_to_string(variant_dir("cronjob").join("cronjob.yaml")).unwrap();
    std::fs::write(
        &typo,
        text.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:"),
    )
    .unwrap();
    let (ok, report) = kubernetes_validate(&[typo]).unwrap();
    assert!(!ok, "a misspelt field passed:\n{report}");
    assert!(report.contains("readOnlyRootFileSystem"), "{report}");
}

/// The ServiceMonitor (a Prometheus Operator CRD, outside kubernetes-validate's schemas)
/// selects the metrics Service, on a port that Service has, at /metrics, keeping pgkeep's
/// `job` label; the Service is named `pgkeep` (the scrape job PgkeepDown expects).
#[test]
fn the_service_monitor_selects_the_metrics_service() {
    let Some(objects) = objects("sidecar") else {
        return;
    };
    let monitors: Vec<&Value> = objects
        .iter()
        .filter(|((kind, _), _)| kind == "ServiceMonitor")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(monitors.len(), 1);
    let monitor = monitors[0];
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(!wanted.is_empty());
    let selected: Vec<&Value> = objects
        .iter()
        .filter(|((kind, _), svc)| {
            kind == "Service"
                && wanted
                    .iter()
                    .all(|(k, v)| &svc["metadata"]["labels"][k.as_str()] == v)
        })
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        selected.len(),
        1,
        "the ServiceMonitor must select one Service"
    );
    let service = selected[0];
    assert_eq!(service["metadata"]["name"], "pgkeep");
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints[0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["honorLabels"], true);
    let ports = service["spec"]["ports"].as_array().unwrap();
    let port = ports
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .unwrap_or_else(|| panic!("the Service has no port named {}", endpoint["port"]));
    assert_eq!(port["port"], 9187);
    // The Service's target port is pgkeep's container port, which serves [daemon] listen.
    let pod = pod::Pod::of(get(&objects, "StatefulSet", "postgres"));
    let container = pod.container("pgkeep");
    assert!(
        container.named_port(port["targetPort"].as_str().unwrap()) == Some(9187),
        "targetPort {} is not pgkeep's 9187",
        port["targetPort"]
    );
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
}

/// The sidecar's probes: liveness (and start-up) on /healthz; /readyz is not a readiness
/// probe, since the pod's readiness is the database's too (statefulset.yaml says why). The
/// CronJob runs `pgkeep backup` one at a time.
#[test]
fn probes_and_schedules_are_as_documented() {
    let Some(sidecar) = objects("sidecar") else {
        return;
    };
    let sts = get(&sidecar, "StatefulSet", "postgres");
    let pod = pod::Pod::of(sts);
    let pgkeep = pod.container("pgkeep");
    let args: Vec<&str> = pgkeep.0["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["--config", "/etc/pgkeep/pgkeep.toml", "run"]);
    for probe in ["livenessProbe", "startupProbe"] {
        assert_eq!(pgkeep.0[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(pgkeep.0[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    for c in pod.containers() {
        assert_ne!(
            c.0["readinessProbe"]["httpGet"]["path"],
            "/readyz",
            "{}",
            c.name()
        );
    }
    assert_eq!(pgkeep.named_port("metrics"), Some(9187));
    let grace = pod.spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > 30, "above [daemon] shutdown_grace (30s): {grace}");

    let cron = objects("cronjob").unwrap();
    let job = get(&cron, "CronJob", "pgkeep-backup");
    assert_eq!(job["spec"]["concurrencyPolicy"], "Forbid");
    let pod = pod::Pod::of(job);
    assert_eq!(pod.spec["restartPolicy"], "Never");
    let args = &pod.container("pgkeep").0["args"];
    assert_eq!(
        *args,
        serde_json::json!(["--config", "/etc/pgkeep/pgkeep.toml", "backup", "app"])
    );
    // Placeholders, clearly marked, instead of secrets.
    for objects in [&sidecar, &cron] {
        for ((kind, name), o) in objects {
            if kind != "Secret" {
                continue;
            }
            for (key, value) in o["stringData"].as_object().unwrap() {
                assert!(
                    value.as_str().unwrap().contains("REPLACE-ME"),
                    "Secret {name}: {key} is not a placeholder"
                );
            }
            assert!(
                o["data"].is_null(),
                "Secret {name}: data (base64) hides whether it is a placeholder"
            );
        }
    }
}
