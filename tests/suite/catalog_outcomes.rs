//! What pgkeep records in the catalog besides backups: a verification per backup `verify`
//! checked, and a `restore_run` per restore that ran and per drill, with their outcome.

use crate::common::cli::Pgkeep;
use crate::common::pg::cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifications_restores_and_drills_are_recorded_with_their_outcome() {
    let c = cluster();
    let src = c.create_db("catalog_outcomes_src").await;
    c.psql_sql(
        &src,
        "CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL);\n\
         INSERT INTO items (label) SELECT 'item ' || g FROM generate_series(1, 50) g;",
    )
    .await;
    let p = Pgkeep::local_dump(&c.url(&src));
    let catalog_name = c.create_db("catalog_outcomes").await;
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&format!(
        "{config}\n[catalog]\ndatabase = \"{}\"\n",
        c.url(&catalog_name)
    ));
    let id = p.backup_ok().await;
    let client = c.connect(&catalog_name).await;

    p.run(&["verify", &id]).await.expect_code(0);
    let target = c.create_db("catalog_outcomes_target").await;
    p.run(&["restore", &id, "--target", &c.url(&target), "--clean"])
        .await
        .expect_code(0);
    // A restore refused at its plan (the target now holds data) changed nothing and is not a
    // restore that ran: not recorded.
    p.run(&["restore", &id, "--target", &c.url(&target)])
        .await
        .expect_code(1);
    p.run(&["drill", "--target", &c.url("postgres")])
        .await
        .expect_code(0);

    // Damage the dump: verify records which object, a restore records its failure.
    let dir = p.store_dir().join("main").join(&id);
    let dump = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("dump"))
        .unwrap();
    let mut bytes = std::fs::read(&dump).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&dump, &bytes).unwrap();
    p.run(&["verify", &id]).await.expect_code(1);
    p.run(&["drill", "--target", &c.url("postgres")])
        .await
        .expect_code(1);

    let rows = client
        .query(
            "SELECT v.status, v.damaged_objects, v.error IS NULL, r.backup_id \
             FROM pgkeep.verification v JOIN pgkeep.backup_run r USING (run_id) \
             ORDER BY v.verification_id",
            &[],
        )
        .await
        .unwrap();
    let verifications: Vec<(String, Vec<String>, bool, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let key = format!("main/{id}/{}", dump.file_name().unwrap().to_string_lossy());
    assert_eq!(
        verifications,
        vec![
            ("ok".into(), vec![], true, id.clone()),
            ("damaged".into(), vec![key], true, id.clone()),
        ]
    );
    let rows = client
        .query(
            "SELECT kind, status, target, error, checks FROM pgkeep.restore_run ORDER BY restore_id",
            &[],
        )
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        kinds,
        vec![
            ("restore".into(), "succeeded".into()),
            ("drill".into(), "succeeded".into()),
            ("drill".into(), "failed".into()),
        ],
        "the refused restore (its plan failed) is not recorded"
    );
    let restore_target: String = rows[0].get(2);
    assert!(
        restore_target.ends_with(&format!("/{target}")),
        "{restore_target}"
    );
    let drill_target: String = rows[1].get(2);
    assert!(
        drill_target.contains("/pgkeep_drill_main_"),
        "{drill_target}"
    );
    let checks: serde_json::Value = rows[1].get(4);
    assert_eq!(checks["tables"], 1, "{checks}");
    assert_eq!(checks["rows"], 50, "{checks}");
    assert_eq!(checks["sequences"], 1, "{checks}");
    let error: String = rows[2].get(3);
    assert!(error.contains("damaged"), "{error}");
}
