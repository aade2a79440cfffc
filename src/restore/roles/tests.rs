//! The decisions of a roles restore, on parsed globals SQL and a made-up set of existing roles.

use super::*;

const SQL: &str = "\
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3 PASSWORD 'SCRAM-secret';
CREATE ROLE readers;
ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
ALTER ROLE app SET work_mem TO '7MB';
ALTER ROLE readers SET statement_timeout TO '5s';
GRANT readers TO app GRANTED BY postgres;
GRANT readers TO old GRANTED BY postgres;
CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';
CREATE EXTENSION nothing_to_do_here;
";

fn run(existing: &[&str], options: &RolesOptions) -> (Vec<String>, RolesReport) {
    let statements = globals::parse(SQL).unwrap();
    let existing: BTreeSet<String> = existing.iter().map(ToString::to_string).collect();
    let (steps, report) = decide(&statements, &existing, Some("postgres"), options, true);
    for s in &steps {
        assert!(!s.shown.contains("secret"), "a password shown: {}", s.shown);
    }
    (steps.into_iter().map(|s| s.sql).collect(), report)
}

#[test]
fn missing_roles_are_created_without_passwords_or_default_attributes() {
    let (sql, report) = run(&["postgres", "readers"], &RolesOptions::default());
    assert_eq!(
        sql,
        vec![
            "CREATE ROLE app",
            "ALTER ROLE app WITH LOGIN CONNECTION LIMIT 3",
            "ALTER ROLE app SET work_mem TO '7MB'",
            "GRANT readers TO app",
        ]
    );
    assert_eq!(report.created, vec!["app"]);
    assert_eq!(report.left_alone, vec!["readers", "postgres"]);
    let text = report.lines.join("\n");
    assert!(
        text.contains("role app: created (without its password: --role-passwords sets it)"),
        "{text}"
    );
    assert!(text.contains("role readers: left alone (it exists; --update-roles updates it)"));
    assert!(text.contains("role postgres: left alone (it runs this restore)"));
    assert!(text.contains("tablespace fast skipped"), "{text}");
    assert!(text.contains("not applied (not a role statement pgkeep knows): CREATE EXTENSION"));
    assert!(
        text.ends_with("1 roles created, 0 updated, 2 left alone"),
        "{text}"
    );
}

#[test]
fn passwords_and_updates_only_when_asked() {
    let options = RolesOptions {
        update_existing: true,
        passwords: true,
        ..RolesOptions::default()
    };
    let (sql, report) = run(&["postgres", "readers", "app"], &options);
    assert_eq!(
        sql,
        vec![
            "ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3 PASSWORD 'SCRAM-secret'",
            "ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS",
            "ALTER ROLE app SET work_mem TO '7MB'",
            "ALTER ROLE readers SET statement_timeout TO '5s'",
            "GRANT readers TO app",
        ]
    );
    // The role running the restore is never changed.
    assert_eq!(report.updated, vec!["app", "readers"]);
    assert_eq!(report.left_alone, vec!["postgres"]);
}

#[test]
fn a_dry_run_says_what_would_be_done() {
    let options = RolesOptions {
        dry_run: true,
        ..RolesOptions::default()
    };
    let (_, report) = run(&["postgres"], &options);
    let text = report.lines.join("\n");
    assert!(text.contains("role app: would be created"), "{text}");
    assert!(text.contains("(dry run: nothing was changed)"), "{text}");
}

#[test]
fn a_statement_pgkeep_does_not_know_is_named_without_its_password() {
    let statements =
        globals::parse("ALTER USER app PASSWORD 'SCRAM-secret' VALID UNTIL 'infinity';\n").unwrap();
    let (steps, report) = decide(
        &statements,
        &BTreeSet::new(),
        Some("postgres"),
        &RolesOptions::default(),
        true,
    );
    assert!(steps.is_empty());
    let text = report.lines.join("\n");
    assert!(
        text.contains(
            "not applied (not a role statement pgkeep knows): ALTER USER app PASSWORD '***'"
        ),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
}
