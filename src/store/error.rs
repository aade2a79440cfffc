//! `StoreError`: what failed in a store operation, with its cause kept as a typed source, and
//! whether retrying can help, decided from typed facts (HTTP status, S3 code, `io::ErrorKind`).

use std::io;
use std::time::Duration;

/// A boxed error, as store errors keep their causes.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of a store operation. Variants name the object or location that failed; their
/// `Display` never repeats the text of their `source()`, so printing the chain
/// (`outer: cause: root`) shows every cause once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found: {key}")]
    NotFound { key: String },
    #[error("bucket '{bucket}' does not exist")]
    NoSuchBucket { bucket: String },
    #[error("access denied to {location}{}", http_facts(*.status))]
    AccessDenied {
        location: String,
        /// HTTP status of the refusal, when the store sent one.
        status: Option<u16>,
        /// S3 error code (`AccessDenied`, `SignatureDoesNotMatch`...), when the store sent one.
        code: Option<String>,
        #[source]
        source: BoxError,
    },
    #[error("cannot reach the store at {endpoint} ({operation} on {location})")]
    Unreachable {
        endpoint: String,
        operation: &'static str,
        location: String,
        #[source]
        source: BoxError,
    },
    /// Every attempt of a request went unanswered for its whole timeout.
    #[error("S3 {operation} on {location} timed out after {}", seconds(*.after))]
    TimedOut {
        operation: &'static str,
        location: String,
        /// The timeout of one attempt.
        after: Duration,
    },
    /// A download kept failing mid-body (resets, stalls, truncation) and resuming it did not
    /// help: the object could not be read, which says nothing about its bytes.
    #[error("S3 GetObject on {location} was interrupted after {offset} of {} bytes", size_text(*.size))]
    Interrupted {
        location: String,
        /// Bytes delivered before the last fault.
        offset: u64,
        /// The object's size, when the store announced one.
        size: Option<u64>,
        #[source]
        source: BoxError,
    },
    /// The object was replaced while it was being read (its ETag changed between requests).
    #[error("{location} changed while it was being read")]
    Changed { location: String },
    #[error("reading the data to upload for {key} failed")]
    Source {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("storage I/O on {location} failed")]
    Io {
        location: String,
        #[source]
        source: io::Error,
    },
    #[error("S3 {operation} on {location} failed{}", http_facts(*.status))]
    S3 {
        operation: &'static str,
        location: String,
        /// HTTP status of the answer, when there was one.
        status: Option<u16>,
        /// S3 error code of the answer, when there was one.
        code: Option<String>,
        #[source]
        source: BoxError,
    },
    #[error("invalid storage URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
}

/// S3 error codes that mean "try again later", whatever their status.
const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
];

fn http_facts(status: Option<u16>) -> String {
    status.map_or_else(String::new, |s| format!(" (HTTP {s})"))
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn size_text(size: Option<u64>) -> String {
    size.map_or_else(|| "?".to_string(), |s| s.to_string())
}

/// Whether an answer with this status and code may succeed when sent again: throttling, 5xx
/// (but not 501, "not implemented"), 408 and 429.
pub(crate) fn retryable_answer(status: Option<u16>, code: Option<&str>) -> bool {
    if code.is_some_and(|c| RETRYABLE_CODES.contains(&c)) {
        return true;
    }
    matches!(status, Some(s) if (s >= 500 && s != 501) || s == 408 || s == 429)
}

/// `io::ErrorKind`s of faults that a later attempt may not meet.
pub(crate) fn transient_kind(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::Interrupted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

impl StoreError {
    /// Whether retrying the same operation later may succeed (network trouble, throttling, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unreachable { .. }
            | StoreError::TimedOut { .. }
            | StoreError::Interrupted { .. } => true,
            StoreError::S3 { status, code, .. } => retryable_answer(*status, code.as_deref()),
            StoreError::Io { source, .. } | StoreError::Source { source, .. } => {
                match store_error_of(source) {
                    Some(inner) => inner.is_retryable(),
                    None => transient_kind(source.kind()),
                }
            }
            StoreError::NotFound { .. }
            | StoreError::NoSuchBucket { .. }
            | StoreError::AccessDenied { .. }
            | StoreError::Changed { .. }
            | StoreError::InvalidUrl { .. } => false,
        }
    }

    /// The error a reader returned by `ObjectStore::get` fails with: an `io::Error` that wraps
    /// this one, so [`store_error_of`] tells "could not read" from "the bytes are wrong".
    pub fn into_read_error(self) -> io::Error {
        let kind = match &self {
            StoreError::NotFound { .. } | StoreError::NoSuchBucket { .. } => {
                io::ErrorKind::NotFound
            }
            StoreError::AccessDenied { .. } => io::ErrorKind::PermissionDenied,
            StoreError::TimedOut { .. } => io::ErrorKind::TimedOut,
            StoreError::Unreachable { .. } | StoreError::Interrupted { .. } => {
                io::ErrorKind::ConnectionAborted
            }
            StoreError::Io { source, .. } | StoreError::Source { source, .. } => source.kind(),
            StoreError::Changed { .. } | StoreError::S3 { .. } | StoreError::InvalidUrl { .. } => {
                io::ErrorKind::Other
            }
        };
        io::Error::new(kind, self)
    }

    /// The store error behind a failed read of `key`: the `StoreError` the reader wrapped (see
    /// [`store_error_of`]), else `StoreError::Io` on `key`.
    pub fn from_read(key: &str, e: io::Error) -> StoreError {
        if e.get_ref()
            .is_some_and(<dyn std::error::Error + Send + Sync>::is::<StoreError>)
        {
            let kind = e.kind();
            return match e
                .into_inner()
                .map(<dyn std::error::Error + Send + Sync>::downcast::<StoreError>)
            {
                Some(Ok(store)) => *store,
                // Not reachable after the check above; kept so that nothing here can panic.
                _ => StoreError::Io {
                    location: key.to_string(),
                    source: io::Error::from(kind),
                },
            };
        }
        StoreError::Io {
            location: key.to_string(),
            source: e,
        }
    }
}

/// An error and its causes as one line, `outer: cause: root`, for log events.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = e.source();
    while let Some(cause) = current {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        current = cause.source();
    }
    text
}

/// The `StoreError` an I/O error from a store's reader wraps, when it wraps one: the store could
/// not deliver the bytes (unreachable, timed out, interrupted), as opposed to an error about the
/// bytes themselves (a decoder's `InvalidData`), which wraps none.
pub fn store_error_of(e: &io::Error) -> Option<&StoreError> {
    e.get_ref()?.downcast_ref::<StoreError>()
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn s3(status: Option<u16>, code: Option<&str>) -> StoreError {
        StoreError::S3 {
            operation: "GetObject",
            location: "s3://b/k".into(),
            status,
            code: code.map(str::to_string),
            source: "details".into(),
        }
    }

    fn io_error(kind: io::ErrorKind) -> StoreError {
        StoreError::Io {
            location: "/srv/x".into(),
            source: io::Error::from(kind),
        }
    }

    #[test]
    fn answers_are_retryable_by_status_and_code() {
        assert!(s3(Some(503), Some("SlowDown")).is_retryable());
        assert!(s3(Some(500), None).is_retryable());
        assert!(s3(Some(429), None).is_retryable());
        assert!(s3(Some(400), Some("RequestTimeout")).is_retryable());
        assert!(!s3(Some(501), Some("NotImplemented")).is_retryable());
        assert!(!s3(Some(400), Some("InvalidArgument")).is_retryable());
        assert!(!s3(Some(404), Some("NoSuchUpload")).is_retryable());
        assert!(!s3(None, None).is_retryable());
    }

    #[test]
    fn io_errors_are_retryable_by_kind() {
        assert!(io_error(io::ErrorKind::ConnectionReset).is_retryable());
        assert!(io_error(io::ErrorKind::TimedOut).is_retryable());
        assert!(io_error(io::ErrorKind::UnexpectedEof).is_retryable());
        assert!(!io_error(io::ErrorKind::StorageFull).is_retryable());
        assert!(!io_error(io::ErrorKind::InvalidData).is_retryable());
        assert!(!io_error(io::ErrorKind::PermissionDenied).is_retryable());
    }

    #[test]
    fn timeouts_and_interruptions_are_retryable() {
        let timed_out = StoreError::TimedOut {
            operation: "UploadPart",
            location: "s3://b/k".into(),
            after: Duration::from_mins(10),
        };
        assert!(timed_out.is_retryable());
        assert_eq!(
            timed_out.to_string(),
            "S3 UploadPart on s3://b/k timed out after 600s"
        );
        let interrupted = StoreError::Interrupted {
            location: "s3://b/k".into(),
            offset: 10,
            size: Some(20),
            source: io::Error::from(io::ErrorKind::ConnectionReset).into(),
        };
        assert!(interrupted.is_retryable());
        assert!(
            !StoreError::Changed {
                location: "s3://b/k".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn a_wrapped_store_error_decides_for_the_io_error() {
        let wrapped = StoreError::TimedOut {
            operation: "GetObject",
            location: "s3://b/k".into(),
            after: Duration::from_millis(1500),
        }
        .into_read_error();
        assert_eq!(wrapped.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(
            store_error_of(&wrapped),
            Some(StoreError::TimedOut { .. })
        ));
        let outer = StoreError::Io {
            location: "k".into(),
            source: wrapped,
        };
        assert!(outer.is_retryable());
        let plain = io::Error::new(io::ErrorKind::InvalidData, "bad gzip header");
        assert!(store_error_of(&plain).is_none());
    }

    #[test]
    fn from_read_unwraps_or_names_the_key() {
        let wrapped = StoreError::Changed {
            location: "s3://b/k".into(),
        }
        .into_read_error();
        assert!(matches!(
            StoreError::from_read("k", wrapped),
            StoreError::Changed { location } if location == "s3://b/k"
        ));
        let plain = io::Error::new(io::ErrorKind::InvalidData, "bad bytes");
        match StoreError::from_read("job/x", plain) {
            StoreError::Io { location, source } => {
                assert_eq!(location, "job/x");
                assert_eq!(source.kind(), io::ErrorKind::InvalidData);
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn display_does_not_repeat_the_source() {
        let cases = [
            s3(Some(400), Some("InvalidArgument")),
            io_error(io::ErrorKind::StorageFull),
            StoreError::Source {
                key: "k".into(),
                source: io::Error::other("the source died"),
            },
            StoreError::Unreachable {
                endpoint: "http://127.0.0.1:9".into(),
                operation: "HeadObject",
                location: "s3://b/k".into(),
                source: "connection refused".into(),
            },
        ];
        for error in cases {
            let outer = error.to_string();
            let cause = error.source().expect("a cause").to_string();
            assert!(!outer.contains(&cause), "'{outer}' repeats '{cause}'");
        }
        assert_eq!(
            s3(Some(400), Some("InvalidArgument")).to_string(),
            "S3 GetObject on s3://b/k failed (HTTP 400)"
        );
    }
}
