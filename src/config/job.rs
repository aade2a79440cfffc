//! Validating one `[jobs.NAME]` section into a `Job`: its connection, schedule, retention,
//! limits, client programs and export settings, each parsed once.

use super::checks;
use super::problems::{Problems, conninfo, notification_settings};
use super::{
    DEFAULT_TIMEOUT, DrillSettings, ExportSettings, Job, JobKind, Migrations, Notifications,
    RawDrill, RawJob, RawRetention,
};
use crate::codec::Compression;
use crate::pattern::TablePattern;
use crate::redact::{scrub, show};
use crate::retention::Retention;
use crate::schedule::Schedule;

pub(super) fn validate_job(
    name: &str,
    raw: RawJob,
    global_notifications: &Notifications,
    problems: &mut Problems,
) -> Option<Job> {
    let prefix = super::tree::render(&[
        super::tree::Seg::Key("jobs".into()),
        super::tree::Seg::Key(name.to_string()),
    ]);
    let at = |key: &str| format!("{prefix}.{key}");
    let before = problems.len();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.add(
            prefix.clone(),
            "job names may contain only letters, digits, '-' and '_'",
        );
    }
    let kind = match raw.kind.as_str() {
        "dump" => Some(JobKind::Dump),
        "export" => Some(JobKind::Export),
        other => {
            problems.add(
                at("kind"),
                format!("unknown kind '{}'; use \"dump\" or \"export\"", show(other)),
            );
            None
        }
    };
    let export = export_settings(&at, &raw, kind, problems);
    let cluster = super::cluster::cluster_settings(&at, &raw, kind, problems);
    let timeout = match &raw.timeout {
        Some(t) => problems.check(&at("timeout"), checks::duration(t)),
        None => Some(DEFAULT_TIMEOUT),
    };
    let max_age = match &raw.max_age {
        Some(t) => problems
            .check(&at("max_age"), checks::duration(t))
            .map(Some),
        None => Some(None),
    };
    let notifications = match &raw.notifications {
        Some(n) => notification_settings(&at("notifications"), n, problems),
        None => global_notifications.clone(),
    };
    let database = conninfo(&at("database"), &raw.database, problems);
    if let Some(pf) = &raw.password_file {
        problems.check(&at("password_file"), checks::readable_file(pf));
    }
    if let Some(dir) = &raw.pg_bin_dir {
        problems.check(&at("pg_bin_dir"), checks::pg_bin_dir(dir, raw.globals));
    }
    let compression = problems.check(
        &at("compression"),
        raw.compression
            .parse::<Compression>()
            .map_err(|e| scrub(&e, &raw.compression)),
    );
    let schedule = match &raw.schedule {
        Some(s) => problems
            .check(&at("schedule"), Schedule::parse(s))
            .map(Some),
        None => Some(None),
    };
    let drill = match &raw.drill {
        Some(d) => drill_settings(&at, d, problems).map(Some),
        None => Some(None),
    };
    let retention = match &raw.retention {
        Some(r) => problems
            .check(&at("retention"), retention(r).map_err(|e| e.to_string()))
            .map(Some),
        None => Some(None),
    };
    if problems.len() != before {
        return None;
    }
    Some(Job {
        name: name.to_string(),
        kind: kind?,
        database: database?,
        password_file: raw.password_file,
        schedule: schedule?,
        compression: compression?,
        pg_bin_dir: raw.pg_bin_dir,
        globals: raw.globals,
        retention: retention?,
        timeout: timeout?,
        max_age: max_age?,
        notifications,
        export,
        cluster,
        drill: drill?,
    })
}

fn drill_settings(
    at: &dyn Fn(&str) -> String,
    raw: &RawDrill,
    problems: &mut Problems,
) -> Option<DrillSettings> {
    let before = problems.len();
    let schedule = problems.check(&at("drill.schedule"), Schedule::parse(&raw.schedule));
    let target = if raw.target.trim().is_empty() {
        problems.add(
            at("drill.target"),
            "name the server to drill on (a conninfo or URL of its maintenance database)",
        );
        None
    } else {
        conninfo(&at("drill.target"), &raw.target, problems)
    };
    if let Some(pf) = &raw.password_file {
        problems.check(&at("drill.password_file"), checks::readable_file(pf));
    }
    let jobs = raw.jobs.unwrap_or(1);
    if !(1..=64).contains(&jobs) {
        problems.add(at("drill.jobs"), "must be between 1 and 64");
    }
    let max_age = match &raw.max_age {
        Some(t) => problems
            .check(&at("drill.max_age"), checks::duration(t))
            .map(Some),
        None => Some(None),
    };
    if problems.len() != before {
        return None;
    }
    Some(DrillSettings {
        schedule: schedule?,
        target: target?,
        password_file: raw.password_file.clone(),
        jobs: u32::try_from(jobs).unwrap_or(1),
        no_owner: raw.no_owner,
        max_age: max_age?,
    })
}

fn retention(r: &RawRetention) -> Result<Retention, crate::retention::EmptyPolicy> {
    let n = |v: Option<u32>| v.unwrap_or(0);
    Retention::new(
        n(r.keep_last),
        n(r.keep_hourly),
        n(r.keep_daily),
        n(r.keep_weekly),
        n(r.keep_monthly),
        n(r.keep_yearly),
    )
}

/// Export-only keys: refused on dump jobs, validated on export jobs.
fn export_settings(
    at: &dyn Fn(&str) -> String,
    raw: &RawJob,
    kind: Option<JobKind>,
    problems: &mut Problems,
) -> ExportSettings {
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
    let mut patterns = |key: &str, texts: &Option<Vec<String>>| -> Vec<TablePattern> {
        texts
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, p)| {
                problems.check(&format!("{}[{i}]", at(key)), TablePattern::parse(p))
            })
            .collect()
    };
    let include = patterns("include", &raw.include);
    let exclude = patterns("exclude", &raw.exclude);
    let parallel = raw.parallel.unwrap_or(2);
    if !(1..=64).contains(&parallel) {
        problems.add(at("parallel"), "must be between 1 and 64");
    }
    let migrations = raw.migrations.as_ref().map(|m| {
        if !m.dir.is_dir() {
            problems.add(
                at("migrations.dir"),
                format!("{} is not a directory", show(&m.dir.display().to_string())),
            );
        }
        problems.check(&at("migrations.table"), checks::sql_table_name(&m.table));
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

#[cfg(test)]
mod tests {
    use crate::codec::Compression;
    use crate::config::validate::validate;
    use crate::config::{ConfigSource, RawConfig, RawJob, RawMigrations, RawRetention};

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
    fn drill_settings_are_checked_key_by_key() {
        let found = problems(job(|j| {
            j.drill = Some(crate::config::RawDrill {
                schedule: "every day".into(),
                target: " ".into(),
                jobs: Some(0),
                max_age: Some("soon".into()),
                ..crate::config::RawDrill::default()
            });
        }));
        for key in ["schedule", "target", "jobs", "max_age"] {
            assert!(
                found
                    .iter()
                    .any(|p| p.starts_with(&format!("jobs.nightly.drill.{key}: "))),
                "{key}: {found:?}"
            );
        }
        let ok = validate(
            job(|j| {
                j.drill = Some(crate::config::RawDrill {
                    schedule: "0 0 4 * * Sun".into(),
                    target: "host=/run/postgresql dbname=postgres".into(),
                    max_age: Some("8d".into()),
                    ..crate::config::RawDrill::default()
                });
            }),
            ConfigSource::Defaults,
        )
        .expect("a valid drill");
        let d = ok.jobs["nightly"].drill.as_ref().expect("drill settings");
        assert_eq!(d.jobs, 1);
        assert_eq!(d.max_age, Some(std::time::Duration::from_hours(8 * 24)));
        assert_eq!(d.target.get("dbname"), Some("postgres"));
    }

    #[test]
    fn cluster_keys_are_checked() {
        let cfg = validate(
            job(|j| {
                j.databases = Some(vec!["*".into()]);
                j.exclude_databases = Some(vec!["scratch_*".into()]);
            }),
            ConfigSource::Defaults,
        )
        .expect("a valid cluster job");
        let cluster = cfg.jobs["nightly"]
            .cluster
            .as_ref()
            .expect("cluster settings");
        assert!(cluster.selects("app"));
        assert!(!cluster.selects("scratch_1"));
        assert!(cfg.jobs["nightly"].cluster.is_some());

        let found = problems(job(|j| {
            j.kind = "export".into();
            j.databases = Some(vec!["*".into()]);
        }));
        assert!(
            found[0].starts_with("jobs.nightly.databases: an export job reads one database"),
            "{found:?}"
        );
        let found = problems(job(|j| j.exclude_databases = Some(vec!["x".into()])));
        assert!(
            found[0]
                .starts_with("jobs.nightly.exclude_databases: applies to a job of a whole server"),
            "{found:?}"
        );
        let found = problems(job(|j| j.databases = Some(Vec::new())));
        assert!(
            found[0].starts_with("jobs.nightly.databases: name the databases"),
            "{found:?}"
        );
        let found = problems(job(|j| {
            j.databases = Some(vec!["ok".into(), String::new()]);
        }));
        assert!(
            found[0].starts_with("jobs.nightly.databases[1]: a database pattern may not be empty"),
            "{found:?}"
        );
    }

    #[test]
    fn retention_that_keeps_nothing_is_refused() {
        let found = problems(job(|j| j.retention = Some(RawRetention::default())));
        assert!(
            found[0].starts_with("jobs.nightly.retention: a retention policy must keep something"),
            "{found:?}"
        );
    }

    #[test]
    fn bad_job_names_are_refused() {
        let mut raw = job(|_| {});
        let j = raw.jobs.remove("nightly").unwrap();
        raw.jobs.insert("a/b".into(), j);
        let found = problems(raw);
        assert!(
            found[0].starts_with("jobs.\"a/b\": job names may contain only"),
            "{found:?}"
        );
    }

    #[test]
    fn a_good_job_holds_parsed_values() {
        let raw = job(|j| {
            j.database = "postgres://u@h:5432/app?sslmode=verify-full".into();
            j.schedule = Some("0 0 3 * * *".into());
            j.compression = "gzip:9".into();
            j.retention = Some(RawRetention {
                keep_last: Some(3),
                ..RawRetention::default()
            });
        });
        let cfg = validate(raw, ConfigSource::Defaults).unwrap();
        let job = &cfg.jobs["nightly"];
        assert_eq!(job.compression, Compression::Gzip(9));
        assert_eq!(job.database.get("host"), Some("h"));
        assert_eq!(
            job.schedule.as_ref().map(crate::schedule::Schedule::as_str),
            Some("0 0 3 * * *")
        );
        assert_eq!(
            job.retention.map(|r| r.to_string()).as_deref(),
            Some("keep_last=3")
        );
        assert_eq!(job.timeout, crate::config::DEFAULT_TIMEOUT);
    }

    #[test]
    fn export_settings_are_parsed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let raw = job(|j| {
            j.kind = "export".into();
            j.include = Some(vec!["public.*".into(), "a.b.c".into()]);
            j.exclude = Some(vec!["public.audit_*".into()]);
            j.migrations = Some(RawMigrations {
                dir: dir.path().to_path_buf(),
                table: "x; DROP TABLE y".into(),
            });
        });
        let found = problems(raw);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("jobs.nightly.include[1]: table pattern 'a.b.c'"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with(
                "jobs.nightly.migrations.table: 'x; DROP TABLE y' is not a table name"
            ),
            "{found:?}"
        );

        let raw = job(|j| {
            j.kind = "export".into();
            j.include = Some(vec!["public.*".into()]);
        });
        let cfg = validate(raw, ConfigSource::Defaults).unwrap();
        let export = &cfg.jobs["nightly"].export;
        assert!(export.include[0].matches("public", "film"));
        assert!(!export.include[0].matches("other", "film"));
    }

    #[test]
    fn zstd_levels_are_taken_and_out_of_range_ones_name_the_allowed_values() {
        for (text, want) in [
            ("zstd", Compression::Zstd(crate::codec::DEFAULT_ZSTD_LEVEL)),
            ("zstd:1", Compression::Zstd(1)),
            ("zstd:19", Compression::Zstd(19)),
        ] {
            let cfg = validate(job(|j| j.compression = text.into()), ConfigSource::Defaults);
            assert_eq!(cfg.unwrap().jobs["nightly"].compression, want, "{text}");
        }
        let found = problems(job(|j| j.compression = "zstd:22".into()));
        assert_eq!(
            found,
            vec![
                "jobs.nightly.compression: 'zstd:22' is not a compression; use \"gzip\", \
                 \"gzip:1\" to \"gzip:9\", \"zstd\", \"zstd:1\" to \"zstd:19\", or \"none\""
                    .to_string()
            ]
        );
    }

    #[test]
    fn compression_errors_are_shortened() {
        let long = format!("postgres://u:Secret@h/{}", "d".repeat(200));
        let found = problems(job(|j| j.compression = long.clone()));
        assert!(
            found[0].starts_with("jobs.nightly.compression: '"),
            "{found:?}"
        );
        assert!(
            !found[0].contains("Secret") && found[0].len() < 200,
            "{found:?}"
        );
    }
}
