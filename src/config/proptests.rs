//! Property tests of loading: arbitrary files, mutated copies of `config.example.toml` and
//! arbitrary `PGKEEP_*` environments never panic, and when they fail every problem is one
//! short line naming a key path or a file position, and never shows a password.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::path::Path;

use proptest::prelude::*;

use super::{ConfigError, load_from};

/// Seeded into every connection string; must never appear in a message.
const PASSWORD: &str = "Pw7xq9Secret";
/// Longest line a problem may take.
const MAX_LINE: usize = 300;

/// `config.example.toml` with passwords in its connection strings, in both forms, and a
/// catalog.
fn seeded_example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let text = std::fs::read_to_string(path).expect("config.example.toml");
    let text = text
        .replacen(
            "postgres://backup@db:5432/app?",
            &format!("postgres://backup:{PASSWORD}@db:5432/app?"),
            1,
        )
        .replacen(
            "database = \"postgres://backup@db:5432/app\"",
            &format!("database = \"host=db password={PASSWORD} dbname=app\""),
            1,
        );
    format!(
        "{text}\n[catalog]\ndatabase = \"postgres://pgkeep:{PASSWORD}/x@db/catalog\"\n\n[jobs.third]\ndatabase = \"postgres://u:{PASSWORD}@db/app\"\nschedule = \"0 0 4 * * *\"\n"
    )
}

/// Checks what a failed load says; panics (failing the property) otherwise.
fn check_error(err: &ConfigError) {
    let whole = err.to_string();
    assert!(!whole.contains('\n'), "more than one line: {whole}");
    assert!(!whole.contains(PASSWORD), "password shown: {whole}");
    match err {
        ConfigError::Syntax { line, column, .. } => {
            assert!(*line >= 1 && *column >= 1, "{whole}");
            assert!(
                whole.contains(&format!(": line {line}, column {column}: ")),
                "{whole}"
            );
        }
        ConfigError::Read { .. } => panic!("the file exists: {whole}"),
        ConfigError::Invalid { problems } => {
            assert!(!problems.is_empty(), "{whole}");
            for p in problems {
                assert!(
                    !p.key.is_empty() && !p.key.starts_with('(') && !p.key.contains(".."),
                    "no key path: {p}"
                );
                assert!(!p.reason.is_empty(), "no reason: {p}");
            }
        }
    }
    for line in err.lines() {
        assert!(
            line.chars().count() <= MAX_LINE,
            "too long ({}): {line}",
            line.len()
        );
        assert!(!line.contains(PASSWORD), "password shown: {line}");
    }
}

fn load_text(dir: &Path, text: &[u8], env: &HashMap<String, String>) {
    let path = dir.join("pgkeep.toml");
    std::fs::write(&path, text).expect("writing the config");
    if let Err(e) = load_from(Some(&path), env) {
        check_error(&e);
    }
}

/// One edit of the example file.
#[derive(Debug, Clone)]
enum Mutation {
    FlipByte(usize, u8),
    Delete(usize, usize),
    DuplicateLine(usize),
    SwapValues(usize, usize),
    SetValue(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipByte(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapValues(a, b)),
        (any::<usize>(), value()).prop_map(|(i, v)| Mutation::SetValue(i, v)),
    ]
}

/// TOML values of every type, and strings that are easy to get wrong.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_string()),
        Just("3.7".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("7".to_string()),
        Just("99999999999".to_string()),
        Just("\"\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("[1, \"a\"]".to_string()),
        Just("[]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just(format!("\"{}\"", "x".repeat(5000))),
        Just(format!("\"postgres://u:{PASSWORD}@h/db\"")),
        Just(format!("\"postgres://u:{PASSWORD}/x@h:1/db\"")),
        Just(format!("\"host=h password={PASSWORD}\"")),
        Just("\"http://\"".to_string()),
        Just("\"s3://Bad Bucket/x\"".to_string()),
        "\"[ -~]{0,80}\"",
    ]
}

/// The byte offsets of `key = value` lines' values.
fn value_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        if !body.trim_start().starts_with('#')
            && let Some(eq) = body.find(" = ")
        {
            let start = eq + 3;
            let end = body[start..].find("  #").map_or(body.len(), |c| start + c);
            spans.push((offset + start, offset + end));
        }
        offset += line.len();
    }
    spans
}

fn apply(text: &mut Vec<u8>, m: &Mutation) {
    let len = text.len().max(1);
    match m {
        Mutation::FlipByte(i, b) => {
            if !text.is_empty() {
                let i = i % len;
                text[i] = *b;
            }
        }
        Mutation::Delete(i, n) => {
            let i = i % len;
            let end = (i + n).min(text.len());
            text.drain(i.min(end)..end);
        }
        Mutation::DuplicateLine(i) => {
            let s = String::from_utf8_lossy(text).into_owned();
            let lines: Vec<&str> = s.split_inclusive('\n').collect();
            if !lines.is_empty() {
                let k = i % lines.len();
                let mut out: Vec<&str> = lines.clone();
                out.insert(k, lines[k]);
                *text = out.concat().into_bytes();
            }
        }
        Mutation::SwapValues(..) | Mutation::SetValue(..) => {
            let Ok(s) = String::from_utf8(text.clone()) else {
                return;
            };
            let spans = value_spans(&s);
            if spans.is_empty() {
                return;
            }
            let out = match m {
                Mutation::SwapValues(a, b) => {
                    let (first, second) = (spans[a % spans.len()], spans[b % spans.len()]);
                    if first == second {
                        return;
                    }
                    let ((s1, e1), (s2, e2)) = (first.min(second), first.max(second));
                    format!(
                        "{}{}{}{}{}",
                        &s[..s1],
                        &s[s2..e2],
                        &s[e1..s2],
                        &s[s1..e1],
                        &s[e2..]
                    )
                }
                Mutation::SetValue(a, v) => {
                    let (start, end) = spans[a % spans.len()];
                    format!("{}{v}{}", &s[..start], &s[end..])
                }
                _ => return,
            };
            *text = out.into_bytes();
        }
    }
}

/// `PGKEEP_*` variables: real keys in any case, odd levels, and values of every kind.
fn environment() -> impl Strategy<Value = HashMap<String, String>> {
    let key = prop_oneof![
        Just("STORAGE__URL".to_string()),
        Just("STORAGE__S3__ENDPOINT".to_string()),
        Just("STORAGE__S3__PARTS_IN_FLIGHT".to_string()),
        Just("STORAGE__S3__FORCE_PATH_STYLE".to_string()),
        Just("STORAGE".to_string()),
        Just("DAEMON__LISTEN".to_string()),
        Just("DAEMON__TIMEZONE".to_string()),
        Just("DAEMON__RETRIES".to_string()),
        Just("CATALOG__DATABASE".to_string()),
        Just("NOTIFICATIONS__WEBHOOK_URL".to_string()),
        Just("JOBS__NIGHTLY__DATABASE".to_string()),
        Just("JOBS__Nightly__SCHEDULE".to_string()),
        Just("JOBS__TABLES__PARALLEL".to_string()),
        Just("JOBS__TABLES__INCLUDE".to_string()),
        Just("JOBS__NEW__KIND".to_string()),
        Just("JOBS__NIGHTLY__RETENTION__KEEP_LAST".to_string()),
        Just("JOBS__NIGHTLY__RETENTION".to_string()),
        Just("JOBS____X".to_string()),
        "[A-Za-z_]{1,12}(__[A-Za-z_]{0,12}){0,3}",
    ];
    let value = prop_oneof![
        Just("2".to_string()),
        Just("2.5".to_string()),
        Just("true".to_string()),
        Just("yes".to_string()),
        Just("[\"public.*\"]".to_string()),
        Just(String::new()),
        Just(format!("postgres://u:{PASSWORD}@h/db")),
        Just(format!("postgres://u:{PASSWORD}?x@h/db")),
        Just(format!("password={PASSWORD}")),
        Just(format!(
            "https://hooks.example.com/{PASSWORD}?token={PASSWORD}"
        )),
        ".{0,100}",
    ];
    proptest::collection::hash_map(key.prop_map(|k| format!("PGKEEP_{k}")), value, 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let dir = tempfile::tempdir().unwrap();
        load_text(dir.path(), &bytes, &HashMap::new());
    }

    #[test]
    fn toml_like_text_never_panics(text in "([a-z_.\\[\\]{}=\"', 0-9#-]{0,30}\n){0,12}") {
        let dir = tempfile::tempdir().unwrap();
        load_text(dir.path(), text.as_bytes(), &HashMap::new());
    }

    #[test]
    fn mutated_examples_fail_cleanly(
        mutations in proptest::collection::vec(mutation(), 1..5),
        env in environment(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = seeded_example().into_bytes();
        for m in &mutations {
            apply(&mut text, m);
        }
        load_text(dir.path(), &text, &env);
    }

    #[test]
    fn arbitrary_environments_fail_cleanly(env in environment()) {
        let dir = tempfile::tempdir().unwrap();
        load_text(dir.path(), seeded_example().as_bytes(), &env);
        if let Err(e) = load_from(None, &env) {
            check_error(&e);
        }
    }

    #[test]
    fn a_problem_is_one_short_line_whatever_it_holds(
        key in ".{0,400}",
        reason in ".{0,2000}",
        note in proptest::option::of(".{0,400}"),
    ) {
        let mut p = super::Problem::new(key, reason);
        if let Some(note) = note {
            p.add_note(&note);
        }
        let line = p.to_string();
        prop_assert!(line.chars().count() <= MAX_LINE, "{}", line.chars().count());
        prop_assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
    }

    #[test]
    fn non_utf8_variables_are_named_not_shown(
        name in "PGKEEP_[A-Z_]{1,10}|PG(HOST|USER|PASSWORD)|HOME|USER|OTHER[A-Z]{0,4}",
        value in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let mut bytes = value.clone();
        bytes.push(0xff);
        let vars = vec![
            (OsString::from(&name), OsString::from_vec(bytes)),
            (OsString::from("PGKEEP_OK"), OsString::from("fine")),
        ];
        match super::environment(vars) {
            Ok(env) => {
                prop_assert!(name.starts_with("OTHER"), "{name} accepted");
                prop_assert!(!env.contains_key(&name));
            }
            Err(e) => {
                prop_assert!(!name.starts_with("OTHER"));
                let msg = e.to_string();
                prop_assert!(msg.contains(&format!("{name}: ")), "{msg}");
                prop_assert!(!msg.contains('\u{fffd}'), "{msg}");
            }
        }
    }
}

#[test]
fn the_seeded_example_fails_only_on_its_deliberate_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgkeep.toml");
    std::fs::write(&path, seeded_example()).unwrap();
    let err = load_from(Some(&path), &HashMap::new()).unwrap_err();
    check_error(&err);
    let lines = err.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("catalog.database: invalid connection string: "),
        "{lines:?}"
    );
}

/// Every deletion of up to 12 characters inside the seeded connection strings, and every
/// character replaced by one that matters to the syntax (how the property tests found a URL
/// whose `@db:` went missing showing its password as a port). Parsed directly: a deletion
/// keeps the value under its key, where only the connection-string parser quotes it.
#[test]
fn no_edit_of_a_connection_string_shows_its_password() {
    let text = seeded_example();
    let values: Vec<String> = value_spans(&text)
        .into_iter()
        .map(|(s, e)| text[s..e].trim_matches('"').to_string())
        .filter(|v| v.contains(PASSWORD))
        .collect();
    assert_eq!(values.len(), 4, "seeded connection strings: {values:?}");
    let check = |edited: &str| {
        if let Err(e) = crate::pg::ConnInfo::parse(edited) {
            let msg = e.to_string();
            assert!(!msg.contains(PASSWORD), "{edited}: {msg}");
            assert!(!msg.contains(&PASSWORD[..6]), "{edited}: {msg}");
        }
    };
    for value in &values {
        let chars: Vec<char> = value.chars().collect();
        for at in 0..chars.len() {
            for len in 1..=12.min(chars.len() - at) {
                let edited: String = chars[..at].iter().chain(&chars[at + len..]).collect();
                check(&edited);
            }
            for c in ['@', ':', '/', '?', '=', ' ', '\'', '&', '#', '%', '[', ','] {
                let mut edited = chars.clone();
                edited[at] = c;
                check(&edited.iter().collect::<String>());
            }
        }
    }
}
