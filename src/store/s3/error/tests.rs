//! Unit tests of the SDK error classification, on SDK errors built by hand.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ConnectorError, ErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::SdkBody;

use super::*;

type Err = SdkError<GetObjectError, HttpResponse>;

fn target() -> Target<'static> {
    Target {
        operation: "GetObject",
        bucket: "backups",
        key: "prod/a",
        endpoint: "http://127.0.0.1:3900",
        timeout: Duration::from_secs(2),
    }
}

fn answer(status: u16, code: Option<&str>, message: Option<&str>) -> Err {
    let mut meta = ErrorMetadata::builder();
    if let Some(code) = code {
        meta = meta.code(code);
    }
    if let Some(message) = message {
        meta = meta.message(message);
    }
    SdkError::service_error(
        GetObjectError::generic(meta.build()),
        HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()),
    )
}

fn dispatch(e: ConnectorError) -> Err {
    SdkError::dispatch_failure(e)
}

/// `to_string()` of the error and of every cause, joined as the CLI prints them.
fn report(e: &StoreError) -> String {
    crate::store::error::chain(e)
}

#[test]
fn codes_and_statuses_map_to_variants() {
    let t = target();
    let map = |e: Err| map(e, &t);
    assert!(matches!(
        map(answer(404, Some("NoSuchBucket"), None)),
        StoreError::NoSuchBucket { bucket } if bucket == "backups"
    ));
    assert!(matches!(
        map(answer(404, None, None)),
        StoreError::NotFound { key } if key == "prod/a"
    ));
    assert!(matches!(
        map(answer(404, Some("NoSuchUpload"), None)),
        StoreError::S3 { status: Some(404), code: Some(c), .. } if c == "NoSuchUpload"
    ));
    let denied = map(answer(403, Some("SignatureDoesNotMatch"), Some("bad")));
    assert!(
        matches!(&denied, StoreError::AccessDenied { status: Some(403), code: Some(c), .. } if c == "SignatureDoesNotMatch")
    );
    assert!(!denied.is_retryable());
    assert!(map(answer(503, Some("SlowDown"), None)).is_retryable());
    assert!(map(answer(500, None, None)).is_retryable());
    assert!(!map(answer(501, Some("NotImplemented"), None)).is_retryable());
    assert!(!map(answer(400, Some("InvalidArgument"), None)).is_retryable());
}

#[test]
fn answers_read_as_one_line_with_each_cause_once() {
    let t = target();
    let e = map(
        answer(400, Some("InvalidArgument"), Some("part too small")),
        &t,
    );
    assert_eq!(
        e.to_string(),
        "S3 GetObject on s3://backups/prod/a failed (HTTP 400)"
    );
    assert_eq!(
        report(&e),
        "S3 GetObject on s3://backups/prod/a failed (HTTP 400): InvalidArgument: part too small"
    );
    // The SDK error is kept whole behind the summary.
    let cause = e.source().unwrap().downcast_ref::<SdkCause>().unwrap();
    assert!(cause.sdk_error().downcast_ref::<Err>().is_some());
}

#[test]
fn attempt_timeouts_are_timed_out_and_retryable() {
    let t = target();
    let timeout: Err = SdkError::timeout_error("operation attempt timeout occurred after 2s");
    let e = map(timeout, &t);
    match &e {
        StoreError::TimedOut {
            operation,
            location,
            after,
        } => {
            assert_eq!(*operation, "GetObject");
            assert_eq!(location, "s3://backups/prod/a");
            assert_eq!(*after, Duration::from_secs(2));
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(e.is_retryable());
    assert_eq!(
        e.to_string(),
        "S3 GetObject on s3://backups/prod/a timed out after 2s"
    );
}

#[test]
fn connection_faults_are_unreachable_and_retryable() {
    let t = target();
    let refused = dispatch(ConnectorError::io(Box::new(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "Connection refused (os error 111)",
    ))));
    let e = map(refused, &t);
    assert!(matches!(e, StoreError::Unreachable { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(
        report(&e),
        "cannot reach the store at http://127.0.0.1:3900 (GetObject on s3://backups/prod/a): \
         Connection refused (os error 111)"
    );
    let connect_timeout = dispatch(ConnectorError::timeout("HTTP connect timeout".into()));
    let e = map(connect_timeout, &t);
    assert!(matches!(e, StoreError::Unreachable { .. }), "{e:?}");
    assert!(e.is_retryable());
}

#[test]
fn missing_credentials_are_access_denied_from_the_typed_error() {
    let t = target();
    let no_credentials = dispatch(ConnectorError::other(
        Box::new(CredentialsError::not_loaded("no providers in chain")),
        None,
    ));
    let e = map(no_credentials, &t);
    assert!(
        matches!(e, StoreError::AccessDenied { status: None, .. }),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert!(
        report(&e).contains("no usable AWS credentials"),
        "{}",
        report(&e)
    );
    // Another "other" dispatch failure is not taken for a credentials problem.
    let other = dispatch(ConnectorError::other("credentials-like text".into(), None));
    assert!(matches!(map(other, &t), StoreError::Unreachable { .. }));
}

#[test]
fn unreadable_answers_are_transport_faults_only_when_the_connection_failed() {
    let t = target();
    let raw = || HttpResponse::new(200.try_into().unwrap(), SdkBody::empty());
    let reset: Err =
        SdkError::response_error(io::Error::from(io::ErrorKind::ConnectionReset), raw());
    let e = map(reset, &t);
    assert!(matches!(e, StoreError::Unreachable { .. }), "{e:?}");
    assert!(e.is_retryable());
    let garbage: Err = SdkError::response_error("unexpected XML element", raw());
    let e = map(garbage, &t);
    assert!(
        matches!(
            e,
            StoreError::S3 {
                status: Some(200),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_retryable());
}

#[test]
fn transport_faults_are_found_by_type_not_text() {
    let reset = io::Error::from(io::ErrorKind::ConnectionReset);
    assert!(is_transport(&reset));
    let wrapped = io::Error::other(io::Error::from(io::ErrorKind::UnexpectedEof));
    assert!(is_transport(&wrapped));
    let words = io::Error::other("connection reset by peer");
    assert!(!is_transport(&words));
    let full = io::Error::from(io::ErrorKind::StorageFull);
    assert!(!is_transport(&full));
}

#[test]
fn a_wrong_region_says_which() {
    let mut raw = HttpResponse::new(301.try_into().unwrap(), SdkBody::empty());
    raw.headers_mut().insert("x-amz-bucket-region", "eu-west-1");
    let moved = SdkError::service_error(
        GetObjectError::generic(ErrorMetadata::builder().code("PermanentRedirect").build()),
        raw,
    );
    let e = map(moved, &target());
    assert!(!e.is_retryable());
    assert!(
        report(&e).contains("the bucket lives in eu-west-1"),
        "{}",
        report(&e)
    );
}
