//! The list of problems a validation collects, and the checks both the top level and each job
//! use: connection strings and notification targets.

use super::checks::{self, UrlKind};
use super::{Notifications, Problem, RawNotifications};
use crate::pg::ConnInfo;

/// The problems found so far.
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem::new(key, reason));
    }

    /// The value, or `None` with the problem recorded under `key`.
    pub(super) fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|reason| self.add(key, reason)).ok()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// A libpq connection string, parsed once here; its errors never show a password.
pub(super) fn conninfo(key: &str, value: &str, problems: &mut Problems) -> Option<ConnInfo> {
    problems.check(key, ConnInfo::parse(value).map_err(|e| e.to_string()))
}

pub(super) fn notification_settings(
    at: &str,
    raw: &RawNotifications,
    problems: &mut Problems,
) -> Notifications {
    for (key, url) in [
        ("webhook_url", &raw.webhook_url),
        ("ping_url", &raw.ping_url),
    ] {
        if let Some(u) = url {
            problems.check(
                &format!("{at}.{key}"),
                checks::http_url(u, UrlKind::WithPath),
            );
        }
    }
    Notifications {
        webhook_url: raw.webhook_url.clone(),
        ping_url: raw.ping_url.clone(),
    }
}
