//! The Compose example gives pgkeep its S3 key as a file (`AWS_SHARED_CREDENTIALS_FILE`, in
//! the format `container/compose/make-secrets.sh` writes), not through the environment: a
//! backup to a real S3 server (s3s-fs, which checks signatures) works with only that file,
//! and fails, naming no secret, when the file holds the wrong secret.

use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::cluster;
use crate::common::s3::{self, ACCESS_KEY, SECRET_KEY};

/// pgkeep's environment for `target` with the key in `credentials` instead of `AWS_*_KEY*`.
fn env_with_credentials_file(
    target: &s3::S3Target,
    credentials: &std::path::Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = target
        .pgkeep_env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY")
        .collect();
    env.push((
        "AWS_SHARED_CREDENTIALS_FILE".to_string(),
        credentials.display().to_string(),
    ));
    // No ~/.aws/config to fall back on.
    env.push((
        "AWS_CONFIG_FILE".to_string(),
        credentials.with_extension("absent").display().to_string(),
    ));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgkeep_reads_its_s3_key_from_a_shared_credentials_file() {
    let c = cluster();
    let db = c.create_db("compose_credentials").await;
    c.psql_sql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
    )
    .await;
    let target = s3::s3s_fs("compose-credentials");
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = dir.path().join("s3-credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .expect("writing the credentials file");
    let toml = Toml::storage("s3://placeholder")
        .job("main", "dump", &c.url(&db))
        .set("compression", "gzip:1");
    let p =
        Pgkeep::with_config(&toml.render()).envs(&env_with_credentials_file(&target, &credentials));
    let id = p.backup_ok().await;
    let listed = p.run(&["list", "--json"]).await.expect_code(0);
    let list: serde_json::Value = serde_json::from_str(&listed.stdout).expect("list --json");
    assert_eq!(list[0]["id"], id.as_str(), "{list}");

    // The wrong secret in the file: the store refuses the signature and the backup fails.
    let wrong = "f".repeat(64);
    std::fs::write(
        &credentials,
        format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {wrong}\n"),
    )
    .expect("rewriting the credentials file");
    let failed = p.run(&["backup"]).await.expect_code(1);
    assert!(
        !failed.stderr.contains(&wrong) && !failed.stderr.contains(SECRET_KEY),
        "a secret in the error: {}",
        failed.stderr
    );
    assert!(
        failed.error_line().to_lowercase().contains("signature")
            || failed.error_line().contains("SignatureDoesNotMatch")
            || failed.error_line().contains("403"),
        "{}",
        failed.stderr
    );
    c.drop_db(&db).await;
}
