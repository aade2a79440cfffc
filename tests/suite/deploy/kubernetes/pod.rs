//! The pod templates of the manifests (a StatefulSet's, a CronJob's): a small model of them,
//! and the checks that every name they use resolves and that they run unprivileged.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{VARIANTS, get, objects};

/// A workload's pod template.
pub struct Pod<'a> {
    pub labels: &'a Value,
    pub spec: &'a Value,
    /// Volume names the workload provides besides `spec.volumes` (volumeClaimTemplates).
    pub claims: Vec<String>,
}

impl<'a> Pod<'a> {
    pub fn of(workload: &'a Value) -> Pod<'a> {
        let template = match workload["kind"].as_str() {
            Some("StatefulSet" | "Deployment") => &workload["spec"]["template"],
            Some("CronJob") => &workload["spec"]["jobTemplate"]["spec"]["template"],
            other => panic!("not a workload: {other:?}"),
        };
        let claims = workload["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        Pod {
            labels: &template["metadata"]["labels"],
            spec: &template["spec"],
            claims,
        }
    }

    pub fn containers(&self) -> impl Iterator<Item = Container<'a>> {
        let spec = self.spec;
        ["initContainers", "containers"]
            .into_iter()
            .flat_map(move |k| spec[k].as_array().into_iter().flatten())
            .map(Container)
    }

    pub fn container(&self, name: &str) -> Container<'a> {
        self.containers()
            .find(|c| c.0["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    /// The volume named `name`; `Value::Null` for a claim template.
    pub fn volume(&self, name: &str) -> &'a Value {
        if self.claims.iter().any(|c| c == name) {
            return &Value::Null;
        }
        self.spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    /// A pod setting, or the container's when it sets it (container wins).
    pub fn security(&self, c: Container<'_>, key: &str) -> Value {
        let own = &c.0["securityContext"][key];
        if own.is_null() {
            self.spec["securityContext"][key].clone()
        } else {
            own.clone()
        }
    }

    pub fn runs_pgkeep(&self) -> bool {
        self.containers().any(Container::is_pgkeep)
    }
}

/// One container of a pod template.
#[derive(Clone, Copy)]
pub struct Container<'a>(pub &'a Value);

impl<'a> Container<'a> {
    pub fn name(self) -> &'a str {
        self.0["name"].as_str().unwrap()
    }

    pub fn is_pgkeep(self) -> bool {
        self.0["image"]
            .as_str()
            .is_some_and(|i| i.contains("/pgkeep:"))
    }

    pub fn named_port(self, name: &str) -> Option<u64> {
        self.0["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    }

    pub fn mounts(self) -> impl Iterator<Item = &'a Value> {
        self.0["volumeMounts"].as_array().into_iter().flatten()
    }

    /// Literal `env` values, in order.
    pub fn env(self) -> Vec<(String, String)> {
        self.0["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_string(),
                    e["value"].as_str()?.to_string(),
                ))
            })
            .collect()
    }

    pub fn probes(self) -> impl Iterator<Item = (&'static str, &'a Value)> {
        let c = self.0;
        ["livenessProbe", "readinessProbe", "startupProbe"]
            .into_iter()
            .filter(move |k| !c[*k].is_null())
            .map(move |k| (k, &c[k]))
    }
}

pub type Objects = BTreeMap<(String, String), Value>;

/// The keys of a ConfigMap's or Secret's data.
fn keys(objects: &Objects, kind: &str, name: &str) -> Vec<String> {
    let o = get(objects, kind, name);
    ["data", "stringData"]
        .iter()
        .filter_map(|k| o[*k].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect()
}

/// A configMap or secret volume source (or projected source) names an object of the
/// variant, and every item a key it has.
fn check_source(objects: &Objects, kind: &str, source: &Value, what: &str) {
    let name = source["name"]
        .as_str()
        .or_else(|| source["secretName"].as_str())
        .unwrap_or_else(|| panic!("{what}: no name"));
    let have = keys(objects, kind, name);
    for item in source["items"].as_array().into_iter().flatten() {
        let key = item["key"].as_str().unwrap();
        assert!(
            have.iter().any(|k| k == key),
            "{what}: {kind}/{name} has no key {key}"
        );
    }
}

fn workloads(objects: &Objects) -> Vec<&Value> {
    objects
        .iter()
        .filter(|((kind, _), _)| ["StatefulSet", "Deployment", "CronJob"].contains(&kind.as_str()))
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn every_reference_resolves() {
    for variant in VARIANTS {
        let Some(objects) = objects(variant) else {
            return;
        };
        let workloads = workloads(&objects);
        assert!(!workloads.is_empty(), "{variant} has no workload");
        for w in &workloads {
            let pod = Pod::of(w);
            for v in pod.spec["volumes"].as_array().into_iter().flatten() {
                let what = format!("{variant}: volume {}", v["name"]);
                if !v["configMap"].is_null() {
                    check_source(&objects, "ConfigMap", &v["configMap"], &what);
                } else if !v["secret"].is_null() {
                    check_source(&objects, "Secret", &v["secret"], &what);
                } else if !v["projected"].is_null() {
                    for s in v["projected"]["sources"].as_array().unwrap() {
                        if !s["secret"].is_null() {
                            check_source(&objects, "Secret", &s["secret"], &what);
                        } else if !s["configMap"].is_null() {
                            check_source(&objects, "ConfigMap", &s["configMap"], &what);
                        } else {
                            panic!("{what}: unexpected source {s}");
                        }
                    }
                } else {
                    assert!(!v["emptyDir"].is_null(), "{what}: unexpected kind {v}");
                }
            }
            for c in pod.containers() {
                let what = format!("{variant}: container {}", c.name());
                for m in c.mounts() {
                    pod.volume(m["name"].as_str().unwrap());
                }
                for from in c.0["envFrom"].as_array().into_iter().flatten() {
                    for (field, kind) in [("configMapRef", "ConfigMap"), ("secretRef", "Secret")] {
                        if let Some(name) = from[field]["name"].as_str() {
                            get(&objects, kind, name);
                        }
                    }
                }
                for e in c.0["env"].as_array().into_iter().flatten() {
                    for (field, kind) in
                        [("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")]
                    {
                        let r = &e["valueFrom"][field];
                        if let Some(name) = r["name"].as_str() {
                            let key = r["key"].as_str().unwrap().to_string();
                            assert!(
                                keys(&objects, kind, name).contains(&key),
                                "{what}: {kind}/{name} has no key {key}"
                            );
                        }
                    }
                }
                for (probe, p) in c.probes() {
                    let port = p["httpGet"]["port"].clone();
                    if port.is_null() {
                        continue;
                    }
                    let found = match &port {
                        Value::String(name) => c.named_port(name).is_some(),
                        Value::Number(n) => c.0["ports"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| p["containerPort"].as_u64() == n.as_u64()),
                        _ => false,
                    };
                    assert!(
                        found,
                        "{what}: {probe} port {port} is not one of the container's"
                    );
                }
            }
            if let Some(service) = w["spec"]["serviceName"].as_str() {
                let svc = get(&objects, "Service", service);
                assert_eq!(
                    svc["spec"]["clusterIP"], "None",
                    "{variant}: {service} must be headless"
                );
            }
        }
        // Every Service selects a pod template and targets ports its containers have.
        for ((kind, name), svc) in &objects {
            if kind != "Service" {
                continue;
            }
            let selector = svc["spec"]["selector"].as_object().expect("a selector");
            let pod = workloads
                .iter()
                .map(|w| Pod::of(w))
                .find(|p| selector.iter().all(|(k, v)| &p.labels[k.as_str()] == v))
                .unwrap_or_else(|| panic!("{variant}: Service {name} selects no pod"));
            for port in svc["spec"]["ports"].as_array().unwrap() {
                let target = port["targetPort"].as_str().expect("named target ports");
                assert!(
                    pod.containers().any(|c| c.named_port(target).is_some()),
                    "{variant}: Service {name} targets port {target}, which no container has"
                );
            }
        }
    }
}

fn mebibytes(quantity: &Value) -> u64 {
    let q = quantity.as_str().expect("a quantity");
    if let Some(n) = q.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = q.strip_suffix("Gi") {
        n.parse::<u64>().unwrap() * 1024
    } else {
        panic!("quantity {q}: use Mi or Gi")
    }
}

#[test]
fn pods_run_unprivileged_on_a_read_only_root() {
    for variant in VARIANTS {
        let Some(objects) = objects(variant) else {
            return;
        };
        for w in workloads(&objects) {
            let pod = Pod::of(w);
            if pod.runs_pgkeep() {
                // Kubernetes' Service link variables would be PGKEEP_* overrides (see config.rs).
                assert_eq!(pod.spec["enableServiceLinks"], false, "{variant}");
            }
            assert_eq!(pod.spec["automountServiceAccountToken"], false, "{variant}");
            for c in pod.containers() {
                let what = format!("{variant}: container {}", c.name());
                assert_eq!(pod.security(c, "runAsNonRoot"), true, "{what}");
                assert_eq!(
                    pod.security(c, "seccompProfile")["type"],
                    "RuntimeDefault",
                    "{what}"
                );
                let own = &c.0["securityContext"];
                assert_eq!(own["allowPrivilegeEscalation"], false, "{what}");
                assert_eq!(own["readOnlyRootFilesystem"], true, "{what}");
                assert_eq!(
                    own["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{what}"
                );
                assert!(own["capabilities"]["add"].is_null(), "{what}");
                assert!(own["privileged"].is_null(), "{what}");
                let resources = &c.0["resources"];
                let (request, limit) = (
                    mebibytes(&resources["requests"]["memory"]),
                    mebibytes(&resources["limits"]["memory"]),
                );
                assert!(request > 0 && request <= limit, "{what}: {resources}");
                // Secrets reach the containers as files only.
                for e in c.0["env"].as_array().into_iter().flatten() {
                    assert!(
                        e["valueFrom"]["secretKeyRef"].is_null(),
                        "{what}: secret in env {e}"
                    );
                }
                assert!(c.0["envFrom"].is_null(), "{what}: envFrom");
                if !c.is_pgkeep() {
                    continue;
                }
                assert_eq!(
                    pod.security(c, "runAsUser"),
                    10001,
                    "{what}: the image's user"
                );
                // Writable: emptyDirs only, and $TMPDIR is one of them.
                for m in c.mounts() {
                    if m["readOnly"] == true {
                        continue;
                    }
                    let v = pod.volume(m["name"].as_str().unwrap());
                    assert!(
                        !v["emptyDir"].is_null(),
                        "{what}: writable mount {m} is not an emptyDir"
                    );
                }
                assert!(
                    c.env().contains(&("TMPDIR".into(), "/tmp".into())),
                    "{what}"
                );
                assert!(
                    c.mounts()
                        .any(|m| m["mountPath"] == "/tmp" && m["readOnly"] != true),
                    "{what}: no writable /tmp"
                );
            }
        }
    }
}
