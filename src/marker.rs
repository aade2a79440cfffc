//! The mark a database carries, as its comment, while pgkeep builds it (a restore's new
//! database, a drill's scratch database): what it is for, and which process on which host
//! since when. From the mark a later pgkeep tells a database whose builder was killed (drop
//! it) from one another pgkeep is still building (leave it).

use chrono::{DateTime, Utc};

/// `<what> by pid <pid> on <host> since <RFC 3339 time>`.
pub fn mark(what: &str) -> String {
    format!(
        "{what} by pid {} on {} since {}",
        std::process::id(),
        hostname(),
        crate::human::time(Utc::now())
    )
}

/// Whether the process a mark names is gone: it ran on this host, and no process with its pid
/// is alive, or the one that is started after the mark was made (its pid was reused, as
/// happens when a container restarts and pgkeep is pid 1 again). A mark made on another host
/// is never taken for gone: nobody here can tell.
pub fn builder_gone(comment: &str) -> bool {
    let Some(parsed) = parse(comment) else {
        return false;
    };
    if parsed.host != hostname() {
        return false;
    }
    match process_started(parsed.pid) {
        None => !std::path::Path::new(&format!("/proc/{}", parsed.pid)).exists(),
        Some(started) => {
            // /proc times are to the clock tick; the mark is to the second.
            started > parsed.since + chrono::Duration::seconds(2)
        }
    }
}

/// Whether a database comment is a pgkeep mark (a restore's or drill's database being built),
/// whoever made it and whether its builder still runs.
pub fn is_mark(comment: &str) -> bool {
    comment.starts_with("pgkeep: ") && parse(comment).is_some()
}

/// This host's name, as the marks record it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

struct Parsed {
    pid: u32,
    host: String,
    since: DateTime<Utc>,
}

fn parse(comment: &str) -> Option<Parsed> {
    let after_pid = comment.rsplit_once(" by pid ")?.1;
    let (pid, rest) = after_pid.split_once(" on ")?;
    let (host, since) = rest.split_once(" since ")?;
    Some(Parsed {
        pid: pid.parse().ok()?,
        host: host.to_string(),
        since: DateTime::parse_from_rfc3339(since.split(' ').next()?)
            .ok()?
            .with_timezone(&Utc),
    })
}

/// When process `pid` started, from `/proc/<pid>/stat` (clock ticks after boot) and the boot
/// time in `/proc/stat`; `None` when there is no such process or the files cannot be read.
pub fn process_started(pid: u32) -> Option<DateTime<Utc>> {
    // USER_HZ, which /proc reports in, is 100 on every architecture Linux runs pgkeep on.
    const TICKS_PER_SECOND: i64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = stat.rsplit_once(')')?.1;
    let start_ticks: i64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let millis = boot * 1000 + start_ticks * 1000 / TICKS_PER_SECOND;
    DateTime::from_timestamp_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_names_this_process_which_is_alive() {
        let m = mark("pgkeep: drill of backup 20261201T000000.000Z");
        let parsed = parse(&m).expect("a mark parses back");
        assert_eq!(parsed.pid, std::process::id());
        assert_eq!(parsed.host, hostname());
        assert!(!builder_gone(&m), "{m}");
    }

    #[test]
    fn this_process_started_before_now() {
        let started = process_started(std::process::id()).expect("readable /proc");
        assert!(started <= Utc::now() + chrono::Duration::seconds(1));
        assert!(started > Utc::now() - chrono::Duration::days(2));
    }

    #[test]
    fn dead_reused_and_foreign_builders() {
        let since = crate::human::time(Utc::now());
        // No process has pid 4194304 (one above the kernel's highest).
        let dead = format!("x by pid 4194304 on {} since {since}", hostname());
        assert!(builder_gone(&dead));
        // pid 1 is alive and started before the mark: it may be the builder, so it stays.
        let old_process = format!("x by pid 1 on {} since {since}", hostname());
        assert!(!builder_gone(&old_process));
        // A mark older than the process with that pid: the pid was reused.
        let reused = format!(
            "x by pid {} on {} since 2000-01-01T00:00:00Z",
            std::process::id(),
            hostname()
        );
        assert!(builder_gone(&reused));
        let foreign = format!("x by pid 4194304 on elsewhere-{} since {since}", hostname());
        assert!(!builder_gone(&foreign));
        assert!(!builder_gone("someone's own comment"));
    }
}
