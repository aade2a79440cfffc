//! The manifest's checksum of its own content: sha256 of the document's canonical JSON form
//! without the `checksum` member, so an edited manifest is found while a re-indented one stays
//! valid.

use sha2::{Digest, Sha256};

use super::CHECKSUM_FIELD;

/// Sets (or replaces) the `checksum` member of a manifest document to the checksum of the
/// rest of it: what `to_json` does, for tools that build or correct manifests as JSON.
pub fn seal(document: &mut serde_json::Value) {
    if let Some(object) = document.as_object_mut() {
        object.remove(CHECKSUM_FIELD);
        let digest = of(document);
        if let Some(object) = document.as_object_mut() {
            object.insert(CHECKSUM_FIELD.to_string(), digest.into());
        }
    }
}

/// `sha256:<hex>` of the canonical form of a JSON value: no insignificant white space, object members
/// sorted by key (byte order), strings escaped as serde_json escapes them. Independent of how
/// the document was formatted, so re-indenting a manifest keeps it valid while changing any
/// value does not.
pub(super) fn of(value: &serde_json::Value) -> String {
    let mut out = Vec::new();
    canonical(value, &mut out);
    format!("sha256:{}", hex::encode(Sha256::digest(&out)))
}

fn canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).expect("writing to a Vec");
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(v, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to a Vec"),
    }
}
