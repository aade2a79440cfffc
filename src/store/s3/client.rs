//! The SDK client behind an `S3Store`: region, credentials, endpoint, request checksums, and
//! the limits that keep every request from hanging (timeouts, retries with backoff and jitter).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};

use crate::store::S3Settings;

/// Per-attempt limits of the store's requests (see `S3Settings`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    pub part: Duration,
    pub read: Duration,
}

impl Timeouts {
    /// The SDK timeout configuration for requests whose attempts may take `attempt`.
    ///
    /// A per-operation override replaces the client's whole timeout configuration, so the
    /// connect timeout is repeated here.
    pub fn sdk(&self, attempt: Duration) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(attempt)
            .build()
    }
}

/// Gives every store its own retry token bucket: the SDK's default partition is shared by every
/// client of the process, so one store's failures would use up another's retries.
fn retry_partition() -> RetryPartition {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    RetryPartition::custom(format!("pgkeep-store-{n}"))
        .token_bucket(TokenBucket::default())
        .build()
}

/// The client for `settings` (with fixed `credentials`, else the AWS chain's), the endpoint as
/// shown in messages, and the timeouts its requests run with.
pub(super) async fn build(
    settings: &S3Settings,
    credentials: Option<Credentials>,
) -> (aws_sdk_s3::Client, String, Timeouts) {
    let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
        .or_default_provider()
        .or_else(Region::from_static("us-east-1"));
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    let shared = loader.load().await;

    let timeouts = Timeouts {
        connect: nonzero(settings.connect_timeout),
        request: nonzero(settings.request_timeout),
        part: nonzero(settings.part_timeout),
        read: nonzero(settings.read_timeout),
    };
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(settings.force_path_style)
        // The standard strategy: exponential backoff with full jitter between attempts.
        .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts.max(1)))
        .retry_partition(retry_partition())
        .timeout_config(timeouts.sdk(timeouts.request))
        // Uploads keep the SDK's stall detection; downloads have their own idle timeout,
        // which resumes the transfer instead of failing it (`download.rs`).
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .upload_enabled(true)
                .download_enabled(false)
                .build(),
        );
    if let Some(endpoint) = &settings.endpoint {
        config = config.endpoint_url(endpoint);
    }
    if !settings.request_checksums {
        config = config
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    let endpoint = settings.endpoint.clone().unwrap_or_else(|| {
        let region = shared.region().map_or("us-east-1", Region::as_ref);
        format!("https://s3.{region}.amazonaws.com")
    });
    let client = aws_sdk_s3::Client::from_conf(config.build());
    (client, endpoint, timeouts)
}

/// A zero duration would disable the SDK's timeout; config validation refuses it, and a store
/// built in code gets one second instead.
fn nonzero(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::from_secs(1)
    } else {
        d
    }
}
