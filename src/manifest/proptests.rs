//! Property tests of manifest parsing: arbitrary bytes and arbitrary mutations of a valid
//! manifest never panic, and every refusal says where (a line and column, a field path, the
//! checksum, or the inconsistency).

use proptest::prelude::*;

use super::tests::sample;
use super::{Manifest, ManifestError};

const JOB: &str = "nightly";
const ID: &str = "20261124T030000.000Z";

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    match Manifest::from_json(bytes, JOB, ID) {
        Ok(m) => {
            prop_assert_eq!(&m.job, JOB);
            prop_assert_eq!(&m.id, ID);
        }
        Err(e) => {
            let text = crate::error::report(&e);
            let located = match &e {
                ManifestError::Syntax(inner) => inner.line() > 0 && text.contains("line"),
                ManifestError::Fields { path, .. } => {
                    !path.is_empty() && text.contains(path.as_str())
                }
                ManifestError::Checksum { .. }
                | ManifestError::ChecksumNotAString
                | ManifestError::NotAnObject
                | ManifestError::TooNew { .. } => true,
                ManifestError::Inconsistent { problems } => !problems.is_empty(),
            };
            prop_assert!(located, "{}", text);
            prop_assert!(text.len() < 2000, "{}", text);
        }
    }
    Ok(())
}

fn valid() -> Vec<u8> {
    sample().to_json()
}

/// A mutation of a valid manifest: a byte changed, a span deleted, a span repeated, or a
/// value replaced by another JSON type.
#[derive(Debug, Clone)]
enum Mutation {
    Byte(usize, u8),
    Delete(usize, usize),
    Repeat(usize, usize),
    Retype(usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Byte(at, b)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Mutation::Repeat(at, n)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "null",
                "true",
                "-1",
                "1e999",
                "\"x\"",
                "[]",
                "{}",
                "18446744073709551616"
            ])
        )
            .prop_map(|(at, v)| Mutation::Retype(at, v)),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = bytes.len();
    match *m {
        Mutation::Byte(at, b) => bytes[at % len] = b,
        Mutation::Delete(at, n) => {
            let at = at % len;
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Repeat(at, n) => {
            let at = at % len;
            let span = bytes[at..(at + n).min(len)].to_vec();
            bytes.splice(at..at, span);
        }
        Mutation::Retype(at, value) => {
            // The value after the `at`-th colon (a member value), whatever it was.
            let colons: Vec<usize> = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b':')
                .map(|(i, _)| i)
                .collect();
            let start = colons[at % colons.len()] + 1;
            let end = bytes[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'\n' | b'}'))
                .map_or(len, |p| start + p);
            bytes.splice(start..end, format!(" {value}").into_bytes());
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_refused_with_a_position(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check(&bytes)?;
    }

    #[test]
    fn mutated_manifests_never_panic_and_say_where(mutations in prop::collection::vec(mutation(), 1..4)) {
        let bytes = mutations.iter().fold(valid(), apply);
        check(&bytes)?;
    }

    #[test]
    fn mutated_manifests_without_their_checksum_say_where(mutations in prop::collection::vec(mutation(), 1..3)) {
        // Without the checksum, the field checks and the consistency checks have to catch it.
        let mut value: serde_json::Value = serde_json::from_slice(&valid()).unwrap();
        value.as_object_mut().unwrap().remove("checksum");
        let plain = serde_json::to_vec_pretty(&value).unwrap();
        let bytes = mutations.iter().fold(plain, apply);
        check(&bytes)?;
    }
}
