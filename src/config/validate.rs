//! Validation: turns a `RawConfig` into a `Config`, parsing every value once and reporting
//! every problem with its key path.

use std::collections::BTreeMap;
use std::time::Duration;

use super::checks::{self, UrlKind};
use super::problems::{Problems, conninfo, notification_settings};
use super::{
    Catalog, Config, ConfigSource, Daemon, Encryption, Problem, RawCatalog, RawConfig, RawDaemon,
    RawEncryption, RawS3, Storage,
};
use crate::redact::show;
use crate::store::S3Settings;

pub(super) fn validate(raw: RawConfig, source: ConfigSource) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems(Vec::new());
    problems.check("storage.url", checks::storage_url(&raw.storage.url));
    let storage = Storage {
        url: raw.storage.url.clone(),
        s3: s3_settings(&raw.storage.s3, &mut problems),
        encryption: raw
            .storage
            .encryption
            .as_ref()
            .and_then(|e| encryption(e, &mut problems)),
    };
    let daemon = daemon_settings(&raw.daemon, &mut problems);
    let catalog = raw.catalog.as_ref().and_then(|c| catalog(c, &mut problems));
    let notifications = notification_settings("notifications", &raw.notifications, &mut problems);

    if raw.jobs.is_empty() {
        problems.add("jobs", "no job is defined; add a [jobs.NAME] section");
    }
    let mut jobs = BTreeMap::new();
    for (name, job) in raw.jobs {
        if let Some(job) = super::job::validate_job(&name, job, &notifications, &mut problems) {
            jobs.insert(name, job);
        }
    }
    if problems.0.is_empty() {
        Ok(Config {
            storage,
            daemon,
            catalog,
            notifications,
            jobs,
            source,
        })
    } else {
        Err(problems.0)
    }
}

fn catalog(raw: &RawCatalog, problems: &mut Problems) -> Option<Catalog> {
    let database = conninfo("catalog.database", &raw.database, problems);
    if let Some(pf) = &raw.password_file {
        problems.check("catalog.password_file", checks::readable_file(pf));
    }
    Some(Catalog {
        database: database?,
        password_file: raw.password_file.clone(),
    })
}

/// The recipients of `[storage.encryption]` (inline and from `recipients_file`, at least one),
/// and a readable `identity_file`.
fn encryption(raw: &RawEncryption, problems: &mut Problems) -> Option<Encryption> {
    let mut keys: Vec<String> = raw.recipients.clone().unwrap_or_default();
    if let Some(file) = &raw.recipients_file {
        match crate::crypt::Recipients::read_file(file) {
            Ok(more) => keys.extend(more),
            Err(e) => {
                problems.add("storage.encryption.recipients_file", e);
                return None;
            }
        }
    }
    if let Some(file) = &raw.identity_file
        && let Err(e) = std::fs::File::open(file)
    {
        problems.add(
            "storage.encryption.identity_file",
            format!("cannot read {}: {e}", file.display()),
        );
    }
    let key = if raw.recipients_file.is_some() && raw.recipients.is_none() {
        "storage.encryption.recipients_file"
    } else {
        "storage.encryption.recipients"
    };
    let recipients = problems.check(
        key,
        crate::crypt::Recipients::parse(keys.iter().map(String::as_str)),
    )?;
    Some(Encryption {
        recipients,
        identity_file: raw.identity_file.clone(),
    })
}

fn s3_settings(raw: &RawS3, problems: &mut Problems) -> S3Settings {
    if let Some(endpoint) = &raw.endpoint {
        problems.check(
            "storage.s3.endpoint",
            checks::http_url(endpoint, UrlKind::Endpoint),
        );
    }
    if !(5..=5120).contains(&raw.part_size_mib) {
        problems.add(
            "storage.s3.part_size_mib",
            "must be between 5 and 5120 (S3's part size limits)",
        );
    }
    if !(1..=64).contains(&raw.parts_in_flight) {
        problems.add("storage.s3.parts_in_flight", "must be between 1 and 64");
    }
    if !(1..=20).contains(&raw.max_attempts) {
        problems.add("storage.s3.max_attempts", "must be between 1 and 20");
    }
    let defaults = S3Settings::default();
    let mut timeout = |name: &str, value: &str, default: Duration| {
        let key = format!("storage.s3.{name}");
        problems
            .check(&key, checks::duration(value))
            .unwrap_or(default)
    };
    let connect_timeout = timeout(
        "connect_timeout",
        &raw.connect_timeout,
        defaults.connect_timeout,
    );
    let request_timeout = timeout(
        "request_timeout",
        &raw.request_timeout,
        defaults.request_timeout,
    );
    let part_timeout = timeout("part_timeout", &raw.part_timeout, defaults.part_timeout);
    let read_timeout = timeout("read_timeout", &raw.read_timeout, defaults.read_timeout);
    S3Settings {
        endpoint: raw.endpoint.clone(),
        region: raw.region.clone(),
        force_path_style: raw.force_path_style,
        request_checksums: raw.request_checksums,
        part_size: raw.part_size_mib.clamp(5, 5120) * 1024 * 1024,
        parts_in_flight: raw.parts_in_flight.clamp(1, 64) as usize,
        max_attempts: raw.max_attempts.clamp(1, 20) as u32,
        connect_timeout,
        request_timeout,
        part_timeout,
        read_timeout,
    }
}

fn daemon_settings(raw: &RawDaemon, problems: &mut Problems) -> Daemon {
    let timezone = raw.timezone.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
        problems.add(
            "daemon.timezone",
            format!(
                "'{}' is not an IANA time zone (e.g. \"UTC\", \"Europe/Paris\")",
                show(&raw.timezone)
            ),
        );
        chrono_tz::UTC
    });
    let listen = raw
        .listen
        .as_ref()
        .and_then(|l| problems.check("daemon.listen", checks::socket_addr(l)));
    if !(1..=64).contains(&raw.max_concurrent_jobs) {
        problems.add("daemon.max_concurrent_jobs", "must be between 1 and 64");
    }
    if raw.retries > 20 {
        problems.add("daemon.retries", "must be at most 20");
    }
    let mut duration = |key: &str, value: &str, default: Duration| {
        problems
            .check(key, checks::duration(value))
            .unwrap_or(default)
    };
    Daemon {
        timezone,
        listen,
        max_concurrent_jobs: raw.max_concurrent_jobs.clamp(1, 64) as usize,
        shutdown_grace: duration(
            "daemon.shutdown_grace",
            &raw.shutdown_grace,
            Duration::from_secs(30),
        ),
        retries: raw.retries.min(20) as u32,
        retry_backoff: duration(
            "daemon.retry_backoff",
            &raw.retry_backoff,
            Duration::from_secs(10),
        ),
        orphan_age: duration(
            "daemon.orphan_age",
            &raw.orphan_age,
            Duration::from_hours(24),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawJob;

    fn job(f: impl FnOnce(&mut RawJob)) -> RawConfig {
        let mut j = RawJob {
            kind: "dump".into(),
            compression: "gzip".into(),
            globals: true,
            ..RawJob::default()
        };
        f(&mut j);
        RawConfig {
            jobs: [("nightly".to_string(), j)].into(),
            ..RawConfig::default()
        }
    }

    fn problems(raw: RawConfig) -> Vec<String> {
        validate(raw, ConfigSource::Defaults)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn all_problems_are_reported_together() {
        let mut raw = job(|j| {
            j.compression = "zip".into();
            j.schedule = Some("0 3 * * *".into());
            j.kind = "backup".into();
        });
        raw.storage.url = "ftp://x".into();
        raw.storage.s3.part_size_mib = 1;
        let found = validate(raw, ConfigSource::Defaults).unwrap_err();
        let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "storage.url",
            "storage.s3.part_size_mib",
            "jobs.nightly.kind",
            "jobs.nightly.compression",
            "jobs.nightly.schedule",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn values_are_checked_at_load() {
        let mut raw = job(|j| j.timeout = Some("0s".into()));
        raw.storage.url = "s3://bucket name/x".into();
        raw.storage.s3.endpoint = Some("http://".into());
        raw.daemon.shutdown_grace = "0s".into();
        raw.daemon.listen = Some("localhost".into());
        raw.notifications.webhook_url = Some("https:///hook?token=t0k3n".into());
        let found = problems(raw);
        for start in [
            "storage.url: 'bucket name' is not a valid bucket name",
            "storage.s3.endpoint: 'http://' has no host",
            "daemon.shutdown_grace: '0s' must be longer than zero",
            "daemon.listen: 'localhost' is not an address:port",
            "notifications.webhook_url: ",
            "jobs.nightly.timeout: '0s' must be longer than zero",
        ] {
            assert!(
                found.iter().any(|l| l.starts_with(start)),
                "{start}: {found:?}"
            );
        }
        assert!(!found.iter().any(|l| l.contains("t0k3n")), "{found:?}");
    }

    #[test]
    fn a_catalog_database_is_parsed_once() {
        let mut raw = job(|_| {});
        raw.catalog = Some(RawCatalog {
            database: "postgres://u:Secret/x@host/db".into(),
            password_file: None,
        });
        let found = problems(raw);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("catalog.database: "), "{found:?}");
        assert!(!found[0].contains("Secret"), "{found:?}");
    }
}
