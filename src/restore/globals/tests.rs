//! The globals SQL of a real `pg_dumpall --globals-only` (PostgreSQL 15), and harder cases.

use super::*;

const DUMPALL: &str = r#"--
-- PostgreSQL database cluster dump
--

\restrict xAf3fjjP0GhH4bwu3W2an7SaDQ0drGBBNyBl1pb19i5ghSPsPnEaCdASyo13Gw8

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "al;ice";
ALTER ROLE "al;ice" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3 PASSWORD 'SCRAM-SHA-256$4096:lXQ==$AAg=:jF0=' VALID UNTIL '2030-01-01 00:00:00+00';
CREATE ROLE grp;
ALTER ROLE grp WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
COMMENT ON ROLE grp IS 'it''s a group;
two lines -- not a comment';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;

--
-- User Configurations
--

ALTER ROLE "al;ice" SET work_mem TO '7MB';
ALTER ROLE "al;ice" SET search_path TO '$user', 'public';

--
-- Role memberships
--

GRANT grp TO "al;ice" WITH ADMIN OPTION GRANTED BY postgres;

--
-- Role privileges on configuration parameters
--

GRANT SET ON PARAMETER work_mem TO grp;

--
-- Tablespaces
--

CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';
GRANT ALL ON TABLESPACE fast TO grp;

\unrestrict xAf3fjjP0GhH4bwu3W2an7SaDQ0drGBBNyBl1pb19i5ghSPsPnEaCdASyo13Gw8

--
-- PostgreSQL database cluster dump complete
--
"#;

#[test]
fn a_real_dump_is_split_and_classified() {
    let got = parse(DUMPALL).unwrap();
    let kinds: Vec<&Kind> = got.iter().map(|s| &s.kind).collect();
    let alice = "al;ice".to_string();
    assert!(matches!(kinds[0], Kind::Session));
    assert_eq!(kinds.len(), 16, "{kinds:#?}");
    assert_eq!(
        kinds[3],
        &Kind::CreateRole {
            role: alice.clone()
        }
    );
    let Kind::Attributes { role, attributes } = kinds[4] else {
        panic!("{:?}", kinds[4]);
    };
    assert_eq!(role, &alice);
    assert!(attributes.contains(&Tok::Literal("'SCRAM-SHA-256$4096:lXQ==$AAg=:jF0='".into())));
    assert_eq!(kinds[7], &Kind::Comment { role: "grp".into() });
    assert_eq!(
        got[7].sql(),
        "COMMENT ON ROLE grp IS 'it''s a group;\ntwo lines -- not a comment'"
    );
    assert_eq!(
        kinds[10],
        &Kind::Setting {
            role: alice.clone()
        }
    );
    assert_eq!(
        got[11].sql(),
        "ALTER ROLE \"al;ice\" SET search_path TO '$user' , 'public'"
    );
    assert_eq!(
        kinds[12],
        &Kind::Membership {
            role: "grp".into(),
            member: alice.clone()
        }
    );
    // The grantor is taken off: the target's roles need not include the source's.
    assert_eq!(got[12].sql(), "GRANT grp TO \"al;ice\" WITH ADMIN OPTION");
    assert_eq!(
        kinds[13],
        &Kind::Parameter {
            grantee: "grp".into()
        }
    );
    assert_eq!(
        kinds[14],
        &Kind::Tablespace {
            created: Some("fast".into())
        }
    );
    assert_eq!(kinds[15], &Kind::Tablespace { created: None });
}

#[test]
fn escape_strings_quoted_names_and_truncation() {
    let got =
        parse("COMMENT ON ROLE \"we\"\"ird\" IS E'a\\'b;c';\nALTER ROLE x RENAME TO y;").unwrap();
    assert_eq!(
        got[0].kind,
        Kind::Comment {
            role: "we\"ird".into()
        }
    );
    assert_eq!(got[0].sql(), "COMMENT ON ROLE \"we\"\"ird\" IS E'a\\'b;c'");
    assert_eq!(got[1].kind, Kind::Other);
    assert!(parse("CREATE ROLE a;\nCOMMENT ON ROLE a IS 'cut").is_err());
    assert!(parse("CREATE ROLE \"cut").is_err());
}
