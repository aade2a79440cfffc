//! Turns AWS SDK errors into `StoreError`s: typed facts (status, S3 code, timeout, transport
//! fault) decide the variant and its retryability; the SDK error itself is kept as the source.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ErrorMetadata, ProvideErrorMetadata, SdkError};

use crate::store::error::transient_kind;
use crate::store::{BoxError, StoreError};

/// Where a failed request was going, for the error.
pub(super) struct Target<'a> {
    pub operation: &'static str,
    pub bucket: &'a str,
    /// Full object key (or listing prefix) inside the bucket.
    pub key: &'a str,
    /// Endpoint as shown to users (`http://127.0.0.1:3900` or the AWS regional endpoint).
    pub endpoint: &'a str,
    /// The per-attempt timeout the request ran with.
    pub timeout: Duration,
}

impl Target<'_> {
    pub(super) fn location(&self) -> String {
        if self.key.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.key)
        }
    }
}

/// Codes that mean the credentials or their permissions are wrong, whatever the status.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
];

/// The SDK's error behind a `StoreError`, kept whole for inspection ([`SdkCause::sdk_error`]).
///
/// It displays as the informative part of the SDK's chain (`SlowDown: Please reduce your
/// request rate`, `tcp connect error: Connection refused (os error 111)`), without the SDK's
/// generic wrapper words, and has no `source()` of its own: that text already covers the chain.
pub struct SdkCause {
    meta: Option<ErrorMetadata>,
    error: BoxError,
}

impl SdkCause {
    /// The SDK error as it was returned (an `SdkError<OperationError, HttpResponse>`).
    pub fn sdk_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.error.as_ref()
    }
}

impl fmt::Debug for SdkCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl fmt::Display for SdkCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.meta.as_ref().map(|m| (m.code(), m.message())) {
            Some((Some(code), Some(message))) if !message.is_empty() => {
                write!(f, "{code}: {message}")
            }
            Some((Some(code), _)) => f.write_str(code),
            Some((None, Some(message))) if !message.is_empty() => f.write_str(message),
            _ => f.write_str(&summary(self.error.as_ref())),
        }
    }
}

impl StdError for SdkCause {}

/// A short hint that explains an answer better than the store's own words.
#[derive(Debug, thiserror::Error)]
enum Hint {
    #[error("the bucket lives in {region}; set that region in the [storage.s3] settings")]
    WrongRegion { region: String },
    #[error(
        "no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, \
         or an instance role)"
    )]
    NoCredentials {
        #[source]
        source: SdkCause,
    },
}

/// Maps an SDK error onto the store's error type.
///
/// A 404 without a more specific code becomes `NotFound`; callers for which a missing
/// object is not an error (`head`, `delete`) check for it.
pub(super) fn map<E>(err: SdkError<E, HttpResponse>, target: &Target<'_>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let unreachable = |source: BoxError| StoreError::Unreachable {
        endpoint: target.endpoint.to_string(),
        operation: target.operation,
        location: target.location(),
        source,
    };
    match &err {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            let status = raw.status().as_u16();
            let region = raw.headers().get("x-amz-bucket-region").map(str::to_string);
            let code = err.code().map(str::to_string);
            if status == 301 {
                return StoreError::S3 {
                    operation: target.operation,
                    location: target.location(),
                    status: Some(status),
                    code,
                    source: Box::new(Hint::WrongRegion {
                        region: region.unwrap_or_else(|| "another region".into()),
                    }),
                };
            }
            classify(status, code, cause(err), target)
        }
        SdkError::TimeoutError(_) => StoreError::TimedOut {
            operation: target.operation,
            location: target.location(),
            after: target.timeout,
        },
        SdkError::DispatchFailure(failure) => {
            if failure.is_io() || failure.is_timeout() {
                unreachable(Box::new(cause(err)))
            } else if has::<CredentialsError>(&err) {
                StoreError::AccessDenied {
                    location: target.location(),
                    status: None,
                    code: None,
                    source: Box::new(Hint::NoCredentials { source: cause(err) }),
                }
            } else if failure.is_user() {
                other(None, target, err)
            } else {
                unreachable(Box::new(cause(err)))
            }
        }
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            if is_transport(&err) {
                unreachable(Box::new(cause(err)))
            } else {
                other(Some(status), target, err)
            }
        }
        _ => other(None, target, err),
    }
}

fn other<E>(status: Option<u16>, target: &Target<'_>, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    StoreError::S3 {
        operation: target.operation,
        location: target.location(),
        status,
        code: None,
        source: Box::new(cause(err)),
    }
}

fn cause<E>(err: SdkError<E, HttpResponse>) -> SdkCause
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let meta = match &err {
        SdkError::ServiceError(service) => Some(service.err().meta().clone()),
        _ => None,
    };
    SdkCause {
        meta,
        error: Box::new(err),
    }
}

/// The variant for an answer from the store with this status and code.
fn classify(
    status: u16,
    code: Option<String>,
    source: SdkCause,
    target: &Target<'_>,
) -> StoreError {
    match code.as_deref() {
        Some("NoSuchBucket") => StoreError::NoSuchBucket {
            bucket: target.bucket.to_string(),
        },
        Some("NoSuchKey") => StoreError::NotFound {
            key: target.key.to_string(),
        },
        Some(c) if DENIED_CODES.contains(&c) => StoreError::AccessDenied {
            location: target.location(),
            status: Some(status),
            code,
            source: Box::new(source),
        },
        None | Some("NotFound") if status == 404 => StoreError::NotFound {
            key: target.key.to_string(),
        },
        _ if status == 403 => StoreError::AccessDenied {
            location: target.location(),
            status: Some(status),
            code,
            source: Box::new(source),
        },
        _ => StoreError::S3 {
            operation: target.operation,
            location: target.location(),
            status: Some(status),
            code,
            source: Box::new(source),
        },
    }
}

/// Whether the chain of `err` holds an error of type `T`.
fn has<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<T>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Whether the chain of `err` holds a transport fault: an HTTP-level failure of the connection
/// (hyper's errors: reset, closed before the message completed, ...) or an I/O error of a
/// transient kind.
pub(super) fn is_transport(err: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<hyper::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if transient_kind(io.kind())
                || matches!(
                    io.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected
                )
            {
                return true;
            }
            // An `io::Error`'s `source()` skips the error it wraps; look at that one too.
            if let Some(inner) = io.get_ref() {
                return is_transport(inner);
            }
        }
        current = e.source();
    }
    false
}

/// The causes of an error joined with `: `, skipping the SDK's generic wrapper words and
/// messages already contained in an earlier one, so the line stays short and readable.
pub(super) fn summary(err: &(dyn StdError + 'static)) -> String {
    const GENERIC: &[&str] = &[
        "dispatch failure",
        "io error",
        "other",
        "timeout",
        "service error",
        "response error",
        "failed to construct request",
        "unhandled error",
    ];
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        let text = text.trim();
        if !text.is_empty() && !GENERIC.contains(&text) && !parts.iter().any(|p| p.contains(text)) {
            parts.push(text.to_string());
        }
        current = e.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests;
