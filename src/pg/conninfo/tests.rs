//! Unit tests of connection-string parsing, defaults and redaction.

use super::*;

#[test]
fn parses_urls() {
    let c = ConnInfo::parse(
        "postgres://bob:s%40cret@db.example:6543/app%20db?sslmode=verify-full&sslrootcert=/ca.pem",
    )
    .unwrap();
    assert_eq!(c.get("user"), Some("bob"));
    assert_eq!(c.get("password"), Some("s@cret"));
    assert_eq!(c.get("host"), Some("db.example"));
    assert_eq!(c.get("port"), Some("6543"));
    assert_eq!(c.get("dbname"), Some("app db"));
    assert_eq!(c.sslmode(), SslMode::VerifyFull);
    assert_eq!(c.get("sslrootcert"), Some("/ca.pem"));
}

#[test]
fn parses_socket_and_ipv6_urls() {
    let c = ConnInfo::parse("postgresql://%2Fvar%2Frun%2Fpostgresql/app").unwrap();
    assert_eq!(c.get("host"), Some("/var/run/postgresql"));
    let c = ConnInfo::parse("postgresql://[::1]:5433/app").unwrap();
    assert_eq!(c.get("host"), Some("::1"));
    assert_eq!(c.get("port"), Some("5433"));
    let c = ConnInfo::parse("postgresql:///app?host=/tmp").unwrap();
    assert_eq!(c.get("host"), Some("/tmp"));
}

#[test]
fn parses_keyword_strings() {
    let c = ConnInfo::parse("host=h port=1 dbname='my \\'db\\'' user = u password=p\\ q").unwrap();
    assert_eq!(c.get("dbname"), Some("my 'db'"));
    assert_eq!(c.get("user"), Some("u"));
    assert_eq!(c.get("password"), Some("p q"));
    assert!(ConnInfo::parse("host").is_err());
    assert!(ConnInfo::parse("dbname='x").is_err());
    assert!(ConnInfo::parse("bogus=1").is_err());
    assert!(ConnInfo::parse("sslmode=maybe").is_err());
    assert_eq!(ConnInfo::parse("").unwrap(), ConnInfo::default());
}

#[test]
fn display_masks_the_password() {
    let c = ConnInfo::parse("postgres://u:hunter2@h/db").unwrap();
    let shown = format!("{c} {c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let err = ConnInfo::parse("postgres://u:hunter2@h:notaport/db").unwrap_err();
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn errors_never_show_a_password() {
    for (bad, secret) in [
        ("postgres://u:Secret/x@host/db", "Secret"),
        ("postgres://u:Se?cret@host/db", "cret"),
        ("postgres://u:Se#cret@host:x/db", "cret"),
        ("postgres:/u:Secret@h/db", "Secret"),
        ("host=h passwordSecret", "Secret"),
        ("host=h password='Secret", "Secret"),
        ("host=h passwrd=Secret", "Secret"),
        ("postgres://h/db?passwordSecret", "Secret"),
        ("postgres://h/db?passwrd=Secret", "Secret"),
        ("postgres://backup:Secret5432/app", "Secret"),
        ("postgres://u:123456/db", "123456"),
        ("host=db Secret dbname=app", "Secret"),
    ] {
        let err = ConnInfo::parse(bad).unwrap_err().to_string();
        assert!(!err.contains(secret), "{bad}: {err}");
    }
    let err = ConnInfo::parse("postgres://u:Secret/x@host/db").unwrap_err();
    assert!(err.to_string().contains("percent-encode"), "{err}");
    // Names that cannot be secrets are still shown.
    let err = ConnInfo::parse("host=h bogus=1").unwrap_err();
    assert!(err.to_string().contains("'bogus'"), "{err}");
    let err = ConnInfo::parse("host db").unwrap_err();
    assert!(err.to_string().contains("after 'host'"), "{err}");
    let err = ConnInfo::parse("sslmode=maybe").unwrap_err();
    assert!(err.to_string().contains("'maybe'"), "{err}");
}

#[test]
fn env_defaults_fill_only_unset_params() {
    let c = ConnInfo::parse("dbname=app").unwrap();
    let env = |k: &str| match k {
        "PGDATABASE" => Some("other".to_string()),
        "PGHOST" => Some("h".to_string()),
        _ => None,
    };
    let d = c.with_env_defaults(&env);
    assert_eq!(d.get("dbname"), Some("app"));
    assert_eq!(d.get("host"), Some("h"));
    let child: BTreeMap<_, _> = d.child_env().into_iter().collect();
    assert_eq!(child.get("PGDATABASE").map(String::as_str), Some("app"));
    assert_eq!(child.get("PGHOST").map(String::as_str), Some("h"));
}

#[test]
fn keywords_render_back_to_the_same_parameters() {
    let c = ConnInfo::parse(
        "postgres://u%20x:p%27w%5Cd@db.example:6432/my%20db?sslmode=verify-full&application_name=a'b",
    )
    .unwrap();
    let again = ConnInfo::parse(&c.to_keywords()).unwrap();
    for key in [
        "user",
        "password",
        "host",
        "port",
        "dbname",
        "sslmode",
        "application_name",
    ] {
        assert_eq!(again.get(key), c.get(key), "{key}");
    }
    assert_eq!(again.get("password"), Some("p'w\\d"));
    assert_eq!(again.get("dbname"), Some("my db"));
}
