//! Turns AWS SDK errors into `StoreError`s that read as one clear line.

use std::error::Error as StdError;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::store::StoreError;

/// Where a failed request was going, for the error message.
pub(super) struct Target<'a> {
    pub operation: &'static str,
    pub bucket: &'a str,
    /// Full object key (or listing prefix) inside the bucket.
    pub key: &'a str,
    /// Endpoint as shown to users (`http://127.0.0.1:3900` or the AWS regional endpoint).
    pub endpoint: &'a str,
}

impl Target<'_> {
    fn location(&self) -> String {
        if self.key.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.key)
        }
    }
}

/// Codes S3-compatible stores send for transient trouble (besides any 5xx status).
const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
];

/// Codes that mean the credentials or their permissions are wrong, whatever the status.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
];

/// Maps an SDK error onto the store's error type.
///
/// A 404 without a more specific code becomes `NotFound`; callers for which a missing
/// object is not an error (`head`, `delete`) check for it.
pub(super) fn map<E>(err: &SdkError<E, HttpResponse>, target: &Target<'_>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            let status = raw.status().as_u16();
            if status == 301 {
                let region = raw
                    .headers()
                    .get("x-amz-bucket-region")
                    .unwrap_or("another region");
                return s3(
                    target,
                    format!(
                        "the bucket lives in {region}; set that region in the [storage.s3] settings"
                    ),
                    false,
                );
            }
            from_response(status, err.code(), err.message(), target)
        }
        SdkError::DispatchFailure(failure) => {
            let reason = chain(err);
            if failure.is_io() || failure.is_timeout() {
                StoreError::Unreachable {
                    endpoint: target.endpoint.to_string(),
                    reason,
                }
            } else if reason.to_ascii_lowercase().contains("credentials") {
                StoreError::AccessDenied {
                    location: target.location(),
                    reason: format!(
                        "no usable AWS credentials (set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY, a profile, or an instance role): {reason}"
                    ),
                }
            } else if failure.is_user() {
                s3(target, reason, false)
            } else {
                StoreError::Unreachable {
                    endpoint: target.endpoint.to_string(),
                    reason,
                }
            }
        }
        SdkError::TimeoutError(_) => StoreError::Unreachable {
            endpoint: target.endpoint.to_string(),
            reason: format!("{} timed out: {}", target.operation, chain(err)),
        },
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            s3(
                target,
                format!("unreadable response (HTTP {status}): {}", chain(err)),
                true,
            )
        }
        _ => s3(target, chain(err), false),
    }
}

fn from_response(
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
    target: &Target<'_>,
) -> StoreError {
    let detail = match (code, message) {
        (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
        (Some(code), _) => code.to_string(),
        (None, Some(message)) => message.to_string(),
        (None, None) => "no error details".to_string(),
    };
    match code {
        Some("NoSuchBucket") => StoreError::NoSuchBucket {
            bucket: target.bucket.to_string(),
        },
        Some("NoSuchKey") => StoreError::NotFound {
            key: target.key.to_string(),
        },
        Some(c) if DENIED_CODES.contains(&c) => StoreError::AccessDenied {
            location: target.location(),
            reason: detail,
        },
        None | Some("NotFound") if status == 404 => StoreError::NotFound {
            key: target.key.to_string(),
        },
        _ if status == 403 => StoreError::AccessDenied {
            location: target.location(),
            reason: detail,
        },
        Some(c) if RETRYABLE_CODES.contains(&c) => {
            s3(target, format!("{detail} (HTTP {status})"), true)
        }
        _ => s3(
            target,
            format!("{detail} (HTTP {status})"),
            status >= 500 || status == 429,
        ),
    }
}

fn s3(target: &Target<'_>, reason: String, retryable: bool) -> StoreError {
    StoreError::S3 {
        operation: target.operation,
        key: target.location(),
        reason,
        retryable,
    }
}

/// The causes of an error joined with `: `, skipping the SDK's generic wrapper words and
/// messages already contained in an earlier one, so the line stays short and readable.
pub(super) fn chain(err: &(dyn StdError + 'static)) -> String {
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
mod tests {
    use super::*;

    fn target() -> Target<'static> {
        Target {
            operation: "GetObject",
            bucket: "backups",
            key: "prod/a",
            endpoint: "http://127.0.0.1:3900",
        }
    }

    #[test]
    fn codes_and_statuses_map_to_variants() {
        let t = target();
        assert!(matches!(
            from_response(404, Some("NoSuchBucket"), None, &t),
            StoreError::NoSuchBucket { bucket } if bucket == "backups"
        ));
        assert!(matches!(
            from_response(404, None, None, &t),
            StoreError::NotFound { .. }
        ));
        assert!(matches!(
            from_response(403, Some("SignatureDoesNotMatch"), Some("bad"), &t),
            StoreError::AccessDenied { .. }
        ));
        assert!(from_response(503, Some("SlowDown"), None, &t).is_retryable());
        assert!(from_response(500, None, None, &t).is_retryable());
        assert!(!from_response(400, Some("InvalidArgument"), None, &t).is_retryable());
        assert_eq!(
            from_response(400, Some("InvalidArgument"), Some("part too small"), &t).to_string(),
            "S3 GetObject on s3://backups/prod/a failed: InvalidArgument: part too small (HTTP 400)"
        );
    }
}
