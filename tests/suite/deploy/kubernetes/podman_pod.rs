//! The sidecar's pgkeep container run in podman as its pod spec says: the image under test,
//! the spec's user, a read-only root, every capability dropped, no new privileges, its
//! ConfigMap and Secret volumes as read-only mounts of the files they hold, and writable tmpfs
//! only where the spec has writable emptyDirs. A backup to S3 and a restore with `--jobs 2`
//! (which stages the dump in `$TMPDIR`) work under it; without the `/tmp` emptyDir the
//! restore cannot stage.

use std::time::Duration;

use super::config::{lay_out, use_test_key};
use super::pod::Pod;
use super::{get, objects};
use crate::common::pg::cluster;
use crate::common::s3;
use crate::suite::packaging::podman::{BASE_IMAGE, Podman, stage_binary, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_container_backs_up_and_restores_as_its_pod_spec_runs_it() {
    let work = tempfile::tempdir().unwrap();
    let Some(podman) = Podman::find(work.path()) else {
        return;
    };
    let Some(objects) = objects("sidecar") else {
        return;
    };
    let t0 = std::time::Instant::now();
    podman.ensure_base_image().await;
    let context = work.path().join("context");
    stage_binary(&context);
    let image = format!("localhost/{}:test", unique("pgkeep-test-k8s"));
    let _image = podman
        .build(
            &crate::suite::deploy::repo().join("container/Dockerfile"),
            &context,
            &[
                "--target",
                "runtime",
                "--build-arg",
                &format!("BASE_IMAGE={BASE_IMAGE}"),
                "--build-arg",
                "PG_APT_REPO=debian",
                "--build-arg",
                "PG_MAJOR=15",
            ],
            &image,
        )
        .await;

    let built = t0.elapsed();
    let pod = Pod::of(get(&objects, "StatefulSet", "postgres"));
    let container = pod.container("pgkeep");
    let root = work.path().join("root");
    let mounts = lay_out(&objects, &pod, "pgkeep", &root);
    use_test_key(container, &mounts, &root);

    // The pod spec as podman flags.
    let user = format!(
        "{}:{}",
        pod.security(container, "runAsUser"),
        pod.security(container, "runAsGroup")
    );
    let own = &container.0["securityContext"];
    assert_eq!(own["readOnlyRootFilesystem"], true);
    assert_eq!(own["allowPrivilegeEscalation"], false);
    assert_eq!(own["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mut flags: Vec<String> = [
        "--network",
        "host",
        "--init",
        "--no-healthcheck",
        "--user",
        &user,
        "--read-only",
        "--read-only-tmpfs=false",
        // Kubernetes ignores the image's VOLUME /var/lib/pgkeep; podman would make it a
        // writable anonymous volume.
        "--image-volume=ignore",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let mut writable = Vec::new();
    for m in container.mounts() {
        let path = m["mountPath"].as_str().unwrap();
        let read_only = m["readOnly"] == true;
        let volume = pod.volume(m["name"].as_str().unwrap());
        if !volume["emptyDir"].is_null() && !read_only {
            flags.push(format!("--tmpfs={path}:rw,mode=1777"));
            writable.push(path.to_string());
        } else {
            let host = root.join(path.trim_start_matches('/'));
            flags.push(format!("--volume={}:{path}:ro", host.display()));
        }
    }
    assert_eq!(writable, ["/tmp"], "pgkeep's writable mounts");
    for (k, v) in container.env() {
        flags.push(format!("--env={k}={v}"));
    }
    // The database and the store of this test: the bucket and endpoint as overrides, the key
    // from the Secret's file.
    let c = cluster();
    let db = c.create_db("k8s_pod").await;
    c.psql_sql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
    )
    .await;
    let target = s3::s3s_fs("k8s-pod");
    for (k, v) in target.pgkeep_env() {
        if k.starts_with("PGKEEP_STORAGE__") || k == "AWS_EC2_METADATA_DISABLED" {
            flags.push(format!("--env={k}={v}"));
        }
    }
    flags.push(format!("--env=PGKEEP_JOBS__APP__DATABASE={}", c.url(&db)));

    let run = |extra: Vec<String>, flags: Vec<String>| {
        let podman = &podman;
        let image = image.clone();
        async move {
            let name = unique("pgkeep-test-k8s-run");
            let _guard = podman.container(&name);
            let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--name".into(), name];
            args.extend(flags);
            args.push(image);
            args.extend(["--config".into(), "/etc/pgkeep/pgkeep.toml".into()]);
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            podman.run(&args, Duration::from_mins(2)).await
        }
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let t1 = std::time::Instant::now();
    let out = run(vec!["backup".into()], flags.clone()).await;
    let backed_up = t1.elapsed();
    assert!(
        out.status.success(),
        "backup in the pod's container:\n{}",
        text(&out)
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    assert!(id.starts_with("20"), "{}", text(&out));

    let restored = c.unique_name("k8s_pod_restored");
    let restore = |db: &str| {
        vec![
            "restore".to_string(),
            id.clone(),
            "--jobs".into(),
            "2".into(),
            "--create".into(),
            "--target".into(),
            c.url(db),
        ]
    };
    let t2 = std::time::Instant::now();
    let out = run(restore(&restored), flags.clone()).await;
    assert!(
        out.status.success(),
        "restore --jobs 2 in the pod's container:\n{}",
        text(&out)
    );
    let restored_in = t2.elapsed();
    let rows: i64 = c
        .connect(&restored)
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 5000);

    // The /tmp emptyDir is where that staging went: without it, the read-only root refuses.
    let no_tmp: Vec<String> = flags
        .into_iter()
        .filter(|f| !f.starts_with("--tmpfs=/tmp"))
        .collect();
    let refused = c.unique_name("k8s_pod_no_tmp");
    let t3 = std::time::Instant::now();
    let out = run(restore(&refused), no_tmp).await;
    let refused_in = t3.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("Read-only file system"),
        "{}",
        text(&out)
    );
    eprintln!(
        "pod spec in podman: image {built:.1?}, backup {backed_up:.1?}, restore {restored_in:.1?}, refused restore {refused_in:.1?}"
    );
}
