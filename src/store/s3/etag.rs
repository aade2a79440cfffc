//! S3's multipart ETag rule, to recognise an upload that completed although the answer to its
//! CompleteMultipartUpload was lost: the object's ETag is the md5 of the concatenated binary
//! md5s of its parts, followed by `-` and the number of parts.

use md5::{Digest, Md5};

/// The ETag S3 gives an object completed from parts with these ETags (as UploadPart returned
/// them: quoted or not, the hex md5 of each part), or `None` when a part's ETag is not an md5
/// (some stores, or encryption with KMS, use other ETags).
pub(super) fn predict_multipart<'a>(
    part_etags: impl IntoIterator<Item = Option<&'a str>>,
) -> Option<String> {
    let mut hasher = Md5::new();
    let mut count = 0usize;
    for etag in part_etags {
        let digest = hex::decode(unquote(etag?)).ok()?;
        if digest.len() != 16 {
            return None;
        }
        hasher.update(&digest);
        count += 1;
    }
    if count == 0 {
        return None;
    }
    Some(format!("{}-{count}", hex::encode(hasher.finalize())))
}

/// Whether an ETag has the multipart form `<32 hex digits>-<parts>`.
fn is_multipart_form(etag: &str) -> bool {
    let Some((digest, parts)) = unquote(etag).split_once('-') else {
        return false;
    };
    digest.len() == 32
        && digest.bytes().all(|b| b.is_ascii_hexdigit())
        && !parts.is_empty()
        && parts.bytes().all(|b| b.is_ascii_digit())
}

fn unquote(etag: &str) -> &str {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.trim_matches('"')
}

/// What HeadObject reports after a failed completion.
pub(super) struct Found<'a> {
    pub size: u64,
    pub etag: Option<&'a str>,
}

/// Whether the object found under the key is the upload that was being completed: exactly the
/// uploaded size and, when the store uses S3's multipart ETags, exactly the predicted one. A
/// store whose ETags have another form is judged by size alone, and only when `answer_lost` (the
/// failure is one where the completion may have happened: a timeout, a reset, NoSuchUpload on
/// the retry).
pub(super) fn completed(
    found: &Found<'_>,
    size: u64,
    predicted: Option<&str>,
    answer_lost: bool,
) -> bool {
    if found.size != size {
        return false;
    }
    match (found.etag, predicted) {
        (Some(etag), Some(predicted)) if is_multipart_form(etag) => {
            unquote(etag).eq_ignore_ascii_case(predicted)
        }
        _ => answer_lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // md5("a") and md5("b"); the object ETag computed independently with Python's hashlib:
    // md5(md5("a") || md5("b")) + "-2".
    const MD5_A: &str = "0cc175b9c0f1b6a831c399e269772661";
    const MD5_B: &str = "92eb5ffee6ae2fec3ad71c777531578f";
    const AB: &str = "96e024ba2074fe77e8e965ba43a704be-2";

    #[test]
    fn predicts_s3s_multipart_etag() {
        let quoted_a = format!("\"{MD5_A}\"");
        assert_eq!(
            predict_multipart([Some(quoted_a.as_str()), Some(MD5_B)]).as_deref(),
            Some(AB)
        );
        assert_eq!(
            predict_multipart([Some(MD5_A)]).as_deref(),
            Some("b6ff9a06b7e20bcb2858c5b8ff744aea-1")
        );
    }

    #[test]
    fn no_prediction_without_md5_part_etags() {
        assert_eq!(predict_multipart([Some(MD5_A), None]), None);
        assert_eq!(predict_multipart([Some("\"not-hex\"")]), None);
        assert_eq!(predict_multipart([Some("abcd")]), None);
        assert_eq!(predict_multipart(std::iter::empty()), None);
    }

    #[test]
    fn completion_is_confirmed_by_size_and_etag() {
        let quoted = format!("\"{AB}\"");
        let found = |etag| Found { size: 10, etag };
        assert!(completed(&found(Some(&quoted)), 10, Some(AB), false));
        assert!(completed(&found(Some(AB)), 10, Some(AB), true));
        // Another object of the same size (an older upload under the same key).
        let other = "\"0123456789abcdef0123456789abcdef-2\"";
        assert!(!completed(&found(Some(other)), 10, Some(AB), true));
        // Wrong size, whatever the ETag.
        assert!(!completed(&found(Some(&quoted)), 11, Some(AB), true));
    }

    #[test]
    fn other_etag_forms_are_judged_by_size_only_after_a_lost_answer() {
        let found = Found {
            size: 10,
            etag: Some("\"opaque-etag-value\""),
        };
        assert!(completed(&found, 10, Some(AB), true));
        assert!(!completed(&found, 10, Some(AB), false));
        let no_etag = Found {
            size: 10,
            etag: None,
        };
        assert!(completed(&no_etag, 10, None, true));
        assert!(!completed(&no_etag, 9, None, true));
    }

    #[test]
    fn multipart_form() {
        assert!(is_multipart_form(AB));
        assert!(is_multipart_form(&format!("\"{AB}\"")));
        assert!(!is_multipart_form(MD5_A));
        assert!(!is_multipart_form("\"zz-2\""));
        assert!(!is_multipart_form(&format!("{MD5_A}-")));
    }
}
