//! Notifications about runs, the daemon's and `pgkeep backup`'s: a JSON POST to the job's
//! `webhook_url` after every run, and
//! healthchecks.io-style pings to its `ping_url` (`URL/start` when a run starts, `URL` on
//! success, `URL/fail` on failure). Short timeouts; one that does not get through is sent
//! again a few times (see `retry`), then logged: a notification never fails the backup. URLs
//! often carry tokens, so logs show only their scheme and host.

pub mod retry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::config::Notifications;
use retry::{RetryPolicy, Verdict};

/// How long one attempt at a notification may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a receiver's answer is read (it is not used; reading it lets the connection be
/// reused).
const ANSWER_MAX_BYTES: usize = 64 << 10;

/// How a run ended, for its notifications.
#[derive(Debug, Clone)]
pub enum Outcome {
    Success {
        backup: String,
        bytes: u64,
    },
    Failure {
        backup: Option<String>,
        error: String,
    },
}

/// Sends notifications; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    host: Arc<str>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

impl Notifier {
    /// An HTTP(S) client trusting the system's certificate authorities, retrying as
    /// `RetryPolicy::DEFAULT` says.
    pub fn new() -> Notifier {
        Notifier::with_retry(RetryPolicy::DEFAULT)
    }

    /// The same with another retry policy.
    pub fn with_retry(retry: RetryPolicy) -> Notifier {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no system CA certificates: https notifications will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("the default provider supports the default versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                HttpsConnectorBuilder::new().with_tls_config(config)
            });
        let https = builder.https_or_http().enable_http1().build();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Notifier {
            client: Client::builder(TokioExecutor::new()).build(https),
            host: host.into(),
            retry,
        }
    }

    /// A run of `job` is starting.
    pub async fn started(&self, targets: &Notifications, job: &str) {
        if let Some(url) = &targets.ping_url {
            self.send(job, Method::GET, &with_suffix(url, "/start"), "", None)
                .await;
        }
    }

    /// A run of `job` ended with `outcome` after `duration`.
    pub async fn finished(
        &self,
        targets: &Notifications,
        job: &str,
        outcome: &Outcome,
        duration: Duration,
    ) {
        if let Some(url) = &targets.webhook_url {
            let (event, backup, bytes, error) = match outcome {
                Outcome::Success { backup, bytes } => {
                    ("success", Some(backup.as_str()), Some(*bytes), None)
                }
                Outcome::Failure { backup, error } => {
                    ("failure", backup.as_deref(), None, Some(error.as_str()))
                }
            };
            let body = json!({
                "event": event,
                "job": job,
                "backup": backup,
                "duration_seconds": duration.as_secs_f64(),
                "bytes": bytes,
                "error": error,
            });
            self.post_event(job, url, body).await;
        }
        if let Some(url) = &targets.ping_url {
            let (url, text) = match outcome {
                Outcome::Success { backup, bytes } => (
                    url.clone(),
                    format!("backup {backup} committed: {bytes} bytes"),
                ),
                Outcome::Failure { error, .. } => (with_suffix(url, "/fail"), error.clone()),
            };
            self.send(job, Method::POST, &url, &text, Some("text/plain"))
                .await;
        }
    }

    /// A drill of `job`'s backup failed: the webhook hears a `drill_failure` event. (The
    /// ping URL is the backups' heartbeat: a drill neither starts nor fails it.)
    pub async fn drill_failed(
        &self,
        targets: &Notifications,
        job: &str,
        backup: Option<&str>,
        error: &str,
        duration: Duration,
    ) {
        if let Some(url) = &targets.webhook_url {
            let body = json!({
                "event": "drill_failure",
                "job": job,
                "backup": backup,
                "duration_seconds": duration.as_secs_f64(),
                "error": error,
            });
            self.post_event(job, url, body).await;
        }
    }

    /// POSTs a webhook event, with the host, the time and pgkeep's version added.
    async fn post_event(&self, job: &str, url: &str, mut body: serde_json::Value) {
        body["host"] = json!(&*self.host);
        body["at"] = json!(chrono::Utc::now());
        body["pgkeep_version"] = json!(env!("CARGO_PKG_VERSION"));
        self.send(
            job,
            Method::POST,
            url,
            &body.to_string(),
            Some("application/json"),
        )
        .await;
    }

    /// Sends one notification, attempting it again (as `self.retry` says) after a network
    /// failure, a timeout, a 5xx or a 429; any other refusal is final. Never fails: the
    /// outcome is logged.
    async fn send(
        &self,
        job: &str,
        method: Method,
        url: &str,
        body: &str,
        content_type: Option<&str>,
    ) {
        let target = redact(url);
        let body = Bytes::from(body.to_string());
        let deadline = Instant::now() + self.retry.total;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let limit = TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
            let (verdict, retry_after, failure) = match self
                .attempt(method.clone(), url, body.clone(), content_type, limit)
                .await
            {
                Ok(Tried::Answered(status, retry_after)) => {
                    let verdict = Verdict::of_status(status);
                    if verdict == Verdict::Sent {
                        tracing::debug!(job, target = %target, status = status.as_u16(), attempt, "notification sent");
                        return;
                    }
                    let failure = format!("refused with status {}", status.as_u16());
                    (verdict, retry_after, failure)
                }
                Ok(Tried::Failed(reason)) => (Verdict::Retry, None, reason),
                Ok(Tried::TimedOut) => (
                    Verdict::Retry,
                    None,
                    format!("timed out after {}", humantime::format_duration(limit)),
                ),
                Err(e) => {
                    tracing::warn!(job, target = %target, error = %e, "notification URL is not usable");
                    return;
                }
            };
            let wait = self.retry.wait(attempt, retry_after);
            // Another attempt only if it has a second or more of the total left after the wait.
            let room = Instant::now()
                .checked_add(wait + Duration::from_secs(1))
                .is_some_and(|then| then <= deadline);
            if verdict == Verdict::GiveUp || attempt >= self.retry.attempts || !room {
                tracing::warn!(job, target = %target, attempt, error = %failure, "notification failed");
                return;
            }
            tracing::info!(job, target = %target, attempt, wait_s = wait.as_secs_f64(), error = %failure, "notification failed: retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt, within `limit`; `Err` when the request cannot even be built.
    async fn attempt(
        &self,
        method: Method,
        url: &str,
        body: Bytes,
        content_type: Option<&str>,
        limit: Duration,
    ) -> Result<Tried, hyper::http::Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(USER_AGENT, concat!("pgkeep/", env!("CARGO_PKG_VERSION")));
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        let request = request.body(Full::new(body))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let retry_after = retry::retry_after(response.headers().get(RETRY_AFTER));
            // Read the answer so the connection can be reused; a receiver that sends more
            // than a page is not read further.
            let _ = http_body_util::Limited::new(response.into_body(), ANSWER_MAX_BYTES)
                .collect()
                .await;
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after))
        };
        Ok(match tokio::time::timeout(limit, exchange).await {
            Ok(Ok((status, retry_after))) => Tried::Answered(status, retry_after),
            Ok(Err(e)) => Tried::Failed(error_chain(&e)),
            Err(_) => Tried::TimedOut,
        })
    }
}

/// How one attempt went.
enum Tried {
    Answered(hyper::StatusCode, Option<Duration>),
    Failed(String),
    TimedOut,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

/// An error and its causes on one line (hyper's own message is only "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `url` with `suffix` added to its path (before any query string).
fn with_suffix(url: &str, suffix: &str) -> String {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let mut out = format!("{}{suffix}", path.trim_end_matches('/'));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `scheme://host[:port]` of a URL: enough to tell which service, without its tokens.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests;
