//! Unit tests of the strict deserializer.

use super::*;
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct T {
    n: Option<u32>,
    b: Option<bool>,
    s: Option<String>,
    v: Option<Vec<String>>,
}

fn table(entries: Vec<(&str, Node)>) -> Node {
    Node::Table(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn env(value: &str) -> Node {
    Node::Env {
        var: "PGKEEP_X".into(),
        value: value.into(),
    }
}

fn de(node: &Node) -> Result<T, String> {
    T::deserialize(NodeDe(node)).map_err(|e| e.to_string())
}

#[test]
fn toml_values_keep_their_types() {
    let err = de(&table(vec![("n", Node::Bool(true))])).unwrap_err();
    assert_eq!(err, "expected a whole number, found a boolean (true)");
    let err = de(&table(vec![("n", Node::Float(3.7))])).unwrap_err();
    assert_eq!(err, "expected a whole number, found a float (3.7)");
    let err = de(&table(vec![("b", Node::Int(7))])).unwrap_err();
    assert_eq!(err, "expected true or false, found an integer (7)");
    let err = de(&table(vec![("s", Node::Int(123))])).unwrap_err();
    assert_eq!(err, "expected a string, found an integer (123)");
    let err = de(&table(vec![("n", Node::Int(-1))])).unwrap_err();
    assert_eq!(
        err,
        "expected a whole number from 0 to 4294967295, found -1"
    );
}

#[test]
fn environment_strings_parse_by_the_requested_type() {
    let t = de(&table(vec![
        ("n", env("2")),
        ("b", env("false")),
        ("s", env("123")),
        ("v", env("[\"a\", \"b\"]")),
    ]))
    .unwrap();
    assert_eq!(t.n, Some(2));
    assert_eq!(t.b, Some(false));
    assert_eq!(t.s.as_deref(), Some("123"));
    assert_eq!(t.v, Some(vec!["a".to_string(), "b".to_string()]));
    for (key, value) in [
        ("n", "2.5"),
        ("n", "two"),
        ("b", "yes"),
        ("b", "1"),
        ("v", "a,b"),
    ] {
        let err = de(&table(vec![(key, env(value))])).unwrap_err();
        assert!(err.starts_with("expected "), "{key}={value}: {err}");
        assert!(err.contains(&format!("'{value}'")), "{err}");
    }
}

#[test]
fn unknown_keys_suggest_the_near_one() {
    let err = de(&table(vec![("bb", Node::Bool(true))])).unwrap_err();
    assert_eq!(err, "unknown key (did you mean 'b'?)");
    let err = de(&table(vec![("zzzzzz", Node::Bool(true))])).unwrap_err();
    assert_eq!(err, "unknown key (expected one of: n, b, s, v)");
}
