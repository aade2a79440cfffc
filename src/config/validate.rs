//! Validation: turns a `RawConfig` into a `Config`, reporting every problem with its key path.

use std::collections::BTreeMap;

use std::time::Duration;

use super::{
    Catalog, Config, ConfigError, ConfigSource, Daemon, ExportSettings, Job, JobKind, Migrations,
    Notifications, Problem, RawConfig, RawDaemon, RawJob, RawNotifications, RawS3, Storage,
};
use crate::codec::Compression;
use crate::pg::ConnInfo;
use crate::store::S3Settings;

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }
}

pub(super) fn validate(raw: RawConfig, source: ConfigSource) -> Result<Config, ConfigError> {
    let mut problems = Problems(Vec::new());
    let storage = Storage {
        url: raw.storage.url.clone(),
        s3: s3_settings(&raw.storage.s3, &mut problems),
    };
    check_storage_url(&storage.url, &mut problems);
    let daemon = daemon_settings(&raw.daemon, &mut problems);
    let catalog = raw.catalog.map(|c| {
        if let Err(e) = ConnInfo::parse(&c.database) {
            problems.add("catalog.database", e.to_string());
        }
        Catalog {
            database: c.database,
            password_file: c.password_file,
        }
    });
    let notifications = notification_settings("notifications", &raw.notifications, &mut problems);

    if raw.jobs.is_empty() {
        problems.add("jobs", "no job is defined; add a [jobs.NAME] section");
    }
    let mut jobs = BTreeMap::new();
    for (name, job) in raw.jobs {
        if let Some(job) = validate_job(&name, job, &notifications, &mut problems) {
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
        Err(ConfigError::Invalid {
            problems: problems.0,
        })
    }
}

fn check_storage_url(url: &str, problems: &mut Problems) {
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            problems.add(
                "storage.url",
                "a file:// URL needs a directory, e.g. file:///var/lib/pgkeep",
            );
        }
    } else if let Some(rest) = url.strip_prefix("s3://") {
        if rest.split('/').next().unwrap_or("").is_empty() {
            problems.add(
                "storage.url",
                "an s3:// URL needs a bucket, e.g. s3://my-bucket/prefix",
            );
        }
    } else {
        problems.add(
            "storage.url",
            format!("'{url}' is not a storage URL; use file:///path or s3://bucket/prefix"),
        );
    }
}

fn s3_settings(raw: &RawS3, problems: &mut Problems) -> S3Settings {
    if let Some(endpoint) = &raw.endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        problems.add(
            "storage.s3.endpoint",
            format!("'{endpoint}' must start with http:// or https://"),
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
        match duration(&key, value, problems) {
            Some(d) if d.is_zero() => {
                problems.add(key, "must be longer than 0 (pgkeep never waits forever)");
                default
            }
            Some(d) => d,
            None => default,
        }
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
        part_size: raw.part_size_mib * 1024 * 1024,
        parts_in_flight: raw.parts_in_flight.clamp(1, 64) as usize,
        max_attempts: raw.max_attempts.clamp(1, 20) as u32,
        connect_timeout,
        request_timeout,
        part_timeout,
        read_timeout,
    }
}

/// Parses a duration such as "30s", "2h" or "1d 12h".
fn duration(key: &str, value: &str, problems: &mut Problems) -> Option<Duration> {
    match humantime::parse_duration(value) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.add(
                key,
                format!("'{value}' is not a duration ({e}); write e.g. \"30s\", \"2h\", \"1d\""),
            );
            None
        }
    }
}

fn daemon_settings(raw: &RawDaemon, problems: &mut Problems) -> Daemon {
    let timezone = raw.timezone.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
        problems.add(
            "daemon.timezone",
            format!(
                "'{}' is not an IANA time zone (e.g. \"UTC\", \"Europe/Paris\")",
                raw.timezone
            ),
        );
        chrono_tz::UTC
    });
    let listen = raw.listen.as_ref().and_then(|l| {
        let parsed = l.parse().ok();
        if parsed.is_none() {
            problems.add(
                "daemon.listen",
                format!("'{l}' is not an address:port such as \"127.0.0.1:9187\""),
            );
        }
        parsed
    });
    if !(1..=64).contains(&raw.max_concurrent_jobs) {
        problems.add("daemon.max_concurrent_jobs", "must be between 1 and 64");
    }
    if raw.retries > 20 {
        problems.add("daemon.retries", "must be at most 20");
    }
    Daemon {
        timezone,
        listen,
        max_concurrent_jobs: raw.max_concurrent_jobs.clamp(1, 64) as usize,
        shutdown_grace: duration("daemon.shutdown_grace", &raw.shutdown_grace, problems)
            .unwrap_or(Duration::from_secs(30)),
        retries: raw.retries.min(20) as u32,
        retry_backoff: duration("daemon.retry_backoff", &raw.retry_backoff, problems)
            .unwrap_or(Duration::from_secs(10)),
        orphan_age: duration("daemon.orphan_age", &raw.orphan_age, problems)
            .unwrap_or(Duration::from_hours(24)),
    }
}

fn notification_settings(
    at: &str,
    raw: &RawNotifications,
    problems: &mut Problems,
) -> Notifications {
    for (key, url) in [
        ("webhook_url", &raw.webhook_url),
        ("ping_url", &raw.ping_url),
    ] {
        if let Some(u) = url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            problems.add(
                format!("{at}.{key}"),
                format!("'{u}' must be an http:// or https:// URL"),
            );
        }
    }
    Notifications {
        webhook_url: raw.webhook_url.clone(),
        ping_url: raw.ping_url.clone(),
    }
}

fn validate_job(
    name: &str,
    raw: RawJob,
    global_notifications: &Notifications,
    problems: &mut Problems,
) -> Option<Job> {
    let at = |key: &str| format!("jobs.{name}.{key}");
    let before = problems.0.len();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.add(
            format!("jobs.{name}"),
            "job names may contain only letters, digits, '-' and '_'",
        );
    }
    let kind = match raw.kind.as_str() {
        "dump" => Some(JobKind::Dump),
        "export" => Some(JobKind::Export),
        other => {
            problems.add(
                at("kind"),
                format!("unknown kind '{other}'; use \"dump\" or \"export\""),
            );
            None
        }
    };
    let export = export_settings(name, &raw, kind, problems);
    let timeout = raw
        .timeout
        .as_deref()
        .and_then(|t| duration(&at("timeout"), t, problems));
    let max_age = raw
        .max_age
        .as_deref()
        .and_then(|t| duration(&at("max_age"), t, problems));
    let notifications = match &raw.notifications {
        Some(n) => notification_settings(&at("notifications"), n, problems),
        None => global_notifications.clone(),
    };
    if let Err(e) = ConnInfo::parse(&raw.database) {
        problems.add(at("database"), e.to_string());
    }
    if let Some(pf) = &raw.password_file
        && let Err(e) = std::fs::metadata(pf)
    {
        problems.add(
            at("password_file"),
            format!("cannot read {}: {e}", pf.display()),
        );
    }
    let compression = match raw.compression.parse::<Compression>() {
        Ok(c) => Some(c),
        Err(e) => {
            problems.add(at("compression"), e);
            None
        }
    };
    if let Some(schedule) = &raw.schedule
        && let Err(e) = check_schedule(schedule)
    {
        problems.add(at("schedule"), e);
    }
    if let Some(r) = &raw.retention {
        let all = [
            r.keep_last,
            r.keep_hourly,
            r.keep_daily,
            r.keep_weekly,
            r.keep_monthly,
            r.keep_yearly,
        ];
        if all.iter().all(|v| v.unwrap_or(0) == 0) {
            problems.add(
                at("retention"),
                "a retention policy must keep something: set at least one keep_* above 0",
            );
        }
    }
    if problems.0.len() != before {
        return None;
    }
    Some(Job {
        name: name.to_string(),
        kind: kind?,
        database: raw.database,
        password_file: raw.password_file,
        schedule: raw.schedule,
        compression: compression?,
        pg_bin_dir: raw.pg_bin_dir,
        globals: raw.globals,
        retention: raw.retention,
        timeout,
        max_age,
        notifications,
        export,
    })
}

/// Export-only keys: refused on dump jobs, validated on export jobs.
fn export_settings(
    name: &str,
    raw: &RawJob,
    kind: Option<JobKind>,
    problems: &mut Problems,
) -> ExportSettings {
    let at = |key: &str| format!("jobs.{name}.{key}");
    if kind == Some(JobKind::Dump) {
        for (key, set) in [
            ("include", raw.include.is_some()),
            ("exclude", raw.exclude.is_some()),
            ("parallel", raw.parallel.is_some()),
            ("migrations", raw.migrations.is_some()),
        ] {
            if set {
                problems.add(
                    at(key),
                    "only export jobs take this key (kind = \"export\")",
                );
            }
        }
        return ExportSettings::default();
    }
    let include = raw.include.clone().unwrap_or_default();
    let exclude = raw.exclude.clone().unwrap_or_default();
    for (key, patterns) in [("include", &include), ("exclude", &exclude)] {
        for p in patterns {
            if let Err(e) = crate::source::TablePattern::parse(p) {
                problems.add(at(key), e);
            }
        }
    }
    let parallel = raw.parallel.unwrap_or(2);
    if !(1..=64).contains(&parallel) {
        problems.add(at("parallel"), "must be between 1 and 64");
    }
    let migrations = raw.migrations.as_ref().map(|m| {
        if !m.dir.is_dir() {
            problems.add(
                at("migrations.dir"),
                format!("{} is not a directory", m.dir.display()),
            );
        }
        Migrations {
            dir: m.dir.clone(),
            table: m.table.clone(),
        }
    });
    ExportSettings {
        include,
        exclude,
        parallel: parallel.clamp(1, 64) as usize,
        migrations,
    }
}

/// Parses a schedule with the cron parser the daemon fires with, so a bad expression is a
/// configuration error rather than a daemon that never runs the job.
fn check_schedule(s: &str) -> Result<(), String> {
    crate::daemon::Schedule::parse(s).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn all_problems_are_reported_together() {
        let mut raw = job(|j| {
            j.compression = "zip".into();
            j.schedule = Some("0 3 * * *".into());
            j.kind = "backup".into();
        });
        raw.storage.url = "ftp://x".into();
        raw.storage.s3.part_size_mib = 1;
        let Err(ConfigError::Invalid { problems }) = validate(raw, ConfigSource::Defaults) else {
            panic!("expected invalid");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
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
    fn retention_that_keeps_nothing_is_refused() {
        let raw = job(|j| j.retention = Some(super::super::RawRetention::default()));
        let err = validate(raw, ConfigSource::Defaults)
            .unwrap_err()
            .to_string();
        assert!(err.contains("jobs.nightly.retention"), "{err}");
    }

    #[test]
    fn bad_job_names_are_refused() {
        let mut raw = job(|_| {});
        let j = raw.jobs.remove("nightly").unwrap();
        raw.jobs.insert("a/b".into(), j);
        let err = validate(raw, ConfigSource::Defaults)
            .unwrap_err()
            .to_string();
        assert!(err.contains("jobs.a/b"), "{err}");
    }

    #[test]
    fn a_good_job_validates() {
        let raw = job(|j| {
            j.database = "postgres://u@h:5432/app?sslmode=verify-full".into();
            j.schedule = Some("0 0 3 * * *".into());
            j.compression = "gzip:9".into();
        });
        let cfg = validate(raw, ConfigSource::Defaults).unwrap();
        assert_eq!(cfg.jobs["nightly"].compression, Compression::Gzip(9));
    }
}
