//! Checks of single values (URLs, bucket names, durations, SQL names, paths), each
//! returning the sentence a problem shows; values are quoted through `redact::show`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::redact::show;

/// `file:///path` or `s3://bucket/prefix`.
pub(super) fn storage_url(url: &str) -> Result<(), String> {
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err("a file:// URL needs a directory, e.g. file:///var/lib/pgkeep".into());
        }
        Ok(())
    } else if let Some(rest) = url.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or("");
        if bucket.is_empty() {
            return Err("an s3:// URL needs a bucket, e.g. s3://my-bucket/prefix".into());
        }
        bucket_name(bucket)
    } else {
        Err(format!(
            "'{}' is not a storage URL; use file:///path or s3://bucket/prefix",
            show(url)
        ))
    }
}

/// S3's bucket naming rules: 3 to 63 lower-case letters, digits, dots and hyphens, starting
/// and ending with a letter or digit.
pub(super) fn bucket_name(bucket: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "'{}' is not a valid bucket name: {why}",
            show(bucket)
        ))
    };
    if !(3..=63).contains(&bucket.len()) {
        return bad("it must be 3 to 63 characters long");
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("use only lower-case letters, digits, '.' and '-'");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(bucket.as_bytes()[0]) || !edge(bucket.as_bytes()[bucket.len() - 1]) {
        return bad("it must start and end with a letter or digit");
    }
    Ok(())
}

/// What an http(s) URL may carry besides scheme and host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UrlKind {
    /// `scheme://host[:port]`, optionally with a trailing `/`: an S3 endpoint.
    Endpoint,
    /// Any path and query (notification targets).
    WithPath,
}

/// An `http://` or `https://` URL with a host and an optional port.
pub(super) fn http_url(url: &str, kind: UrlKind) -> Result<(), String> {
    let shown = show(url);
    let rest = match url.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest
        }
        _ => return Err(format!("'{shown}' must be an http:// or https:// URL")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let hostport = match authority.rsplit_once('@') {
        Some(_) if kind == UrlKind::Endpoint => {
            return Err(format!(
                "'{shown}' must not hold credentials; they come from the AWS chain (AWS_ACCESS_KEY_ID, ...)"
            ));
        }
        Some((_, hp)) => hp,
        None => authority,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(format!("'{shown}' has an unterminated '[' in its host"));
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("'{shown}' has an invalid IPv6 address"));
        }
        match after {
            "" => (h, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("'{shown}' has text after its IPv6 address")),
            },
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("'{shown}' has no host"));
    }
    if !hostport.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!(
            "'{shown}' has an invalid host (letters, digits, '-', '.' only)"
        ));
    }
    if let Some(p) = port
        && !(p.bytes().all(|b| b.is_ascii_digit()) && matches!(p.parse::<u16>(), Ok(1..)))
    {
        return Err(format!("'{shown}' has an invalid port (1 to 65535)"));
    }
    if kind == UrlKind::Endpoint && !(tail.is_empty() || tail == "/") {
        return Err(format!(
            "'{shown}' must be just scheme://host[:port], without a path or query"
        ));
    }
    Ok(())
}

/// A duration such as "30s", "2h" or "1d 12h", longer than zero.
pub(super) fn duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(d) if d.is_zero() => Err(format!("'{}' must be longer than zero", show(value))),
        Ok(d) => Ok(d),
        Err(e) => {
            let detail = match &e {
                humantime::DurationError::UnknownUnit { unit, .. } => {
                    format!(" (unknown unit '{}')", show(unit))
                }
                humantime::DurationError::NumberOverflow => " (too long)".to_string(),
                _ => String::new(),
            };
            Err(format!(
                "'{}' is not a duration{detail}; write e.g. \"30s\", \"2h\", \"1d\"",
                show(value)
            ))
        }
    }
}

/// `host:port` with an IP address, for the daemon's HTTP server.
pub(super) fn socket_addr(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!(
            "'{}' is not an address:port such as \"127.0.0.1:9187\"",
            show(value)
        )
    })
}

/// `table` or `schema.table`: each part an unquoted SQL identifier (letters, digits, `_`
/// and `$`, not starting with a digit or `$`) or a double-quoted one, at most 63 bytes.
pub(super) fn sql_table_name(name: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "'{}' is not a table name: write table or schema.table, each an identifier (letters, digits, _ and $, not starting with a digit) or a \"double-quoted\" name",
            show(name)
        ))
    };
    let mut parts = 0;
    let mut rest = name;
    loop {
        let (len, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut len = 0;
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if chars.peek().is_some_and(|(_, n)| *n == '"') {
                        chars.next();
                        len += 1;
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    len += c.len_utf8();
                }
            }
            let Some(end) = end else { return bad() };
            (len, &quoted[end..])
        } else {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(rest.len());
            if rest[..len].starts_with(|c: char| c.is_ascii_digit() || c == '$') {
                return bad();
            }
            (len, &rest[len..])
        };
        if len == 0 || len > 63 {
            return bad();
        }
        parts += 1;
        match after.strip_prefix('.') {
            Some(next) if parts < 2 => rest = next,
            None if after.is_empty() => return Ok(()),
            _ => return bad(),
        }
    }
}

/// A file pgkeep can open for reading.
pub(super) fn readable_file(path: &Path) -> Result<(), String> {
    let shown = show(&path.display().to_string());
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(format!("{shown} is a directory, not a file")),
        Ok(_) => {}
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    }
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read {shown}: {e}"))
}

/// A directory holding the client programs a job runs: pg_dump, and pg_dumpall when the job
/// saves globals.
pub(super) fn pg_bin_dir(dir: &Path, globals: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = show(&dir.display().to_string());
    if !dir.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    let needed: &[&str] = if globals {
        &["pg_dump", "pg_dumpall"]
    } else {
        &["pg_dump"]
    };
    for tool in needed {
        let executable = std::fs::metadata(dir.join(tool))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            let why = if *tool == "pg_dumpall" {
                " (needed for globals = true; set globals = false to skip roles and tablespaces)"
            } else {
                ""
            };
            return Err(format!("{shown} holds no executable {tool}{why}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "my-bucket.prod", "0bucket9", &"a".repeat(63)] {
            assert_eq!(bucket_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("ab", "3 to 63"),
            ("bucket name", "lower-case"),
            ("Bucket", "lower-case"),
            ("under_score", "lower-case"),
            ("-bucket", "start and end"),
            ("bucket.", "start and end"),
        ] {
            let e = bucket_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(
            storage_url("s3://bucket name/x")
                .unwrap_err()
                .contains("'bucket name'")
        );
        assert!(storage_url("s3://ok-bucket/any/prefix").is_ok());
        assert!(storage_url("file://./rel").is_ok());
        assert!(storage_url("file://").is_err());
    }

    #[test]
    fn endpoints_are_scheme_host_and_port() {
        for good in [
            "http://127.0.0.1:3900",
            "https://s3.example.com",
            "http://[::1]:9000/",
            "HTTP://minio",
        ] {
            assert_eq!(http_url(good, UrlKind::Endpoint), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("http://", "no host"),
            ("http://:9000", "no host"),
            ("ftp://h", "http:// or https://"),
            ("127.0.0.1:3900", "http:// or https://"),
            ("http://h:0", "invalid port"),
            ("http://h:99999", "invalid port"),
            ("http://h:x", "invalid port"),
            ("http://h/path", "without a path"),
            ("http://a b", "invalid host"),
            ("http://key:secret@h", "credentials"),
            ("http://[::1", "unterminated"),
        ] {
            let e = http_url(bad, UrlKind::Endpoint).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
        assert!(http_url("https://hooks.example.com/a?token=t", UrlKind::WithPath).is_ok());
        let e = http_url("https:///a?token=tok", UrlKind::WithPath).unwrap_err();
        assert!(e.contains("no host") && !e.contains("tok"), "{e}");
    }

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(duration("2h"), Ok(Duration::from_hours(2)));
        assert!(duration("0s").unwrap_err().contains("longer than zero"));
        assert!(
            duration("5 fortnights")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(duration("").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn table_names_are_identifiers() {
        for good in [
            "pgkeep_schema_migrations",
            "app.schema_migrations",
            "\"Odd \"\"Name\"\"\".t$1",
            "_x",
        ] {
            assert_eq!(sql_table_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "$x",
            "a.b.c",
            "a-b",
            "a.",
            "\"open",
            "x; DROP TABLE y",
            "\"\"",
            &"a".repeat(64),
        ] {
            assert!(sql_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_checked() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(readable_file(&file), Ok(()));
        assert!(readable_file(dir.path()).unwrap_err().contains("directory"));
        assert!(
            readable_file(&dir.path().join("nope"))
                .unwrap_err()
                .contains("cannot read")
        );

        let dump = dir.path().join("pg_dump");
        std::fs::write(&dump, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            pg_bin_dir(dir.path(), false)
                .unwrap_err()
                .contains("no executable pg_dump")
        );
        std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(pg_bin_dir(dir.path(), false), Ok(()));
        assert!(
            pg_bin_dir(dir.path(), true)
                .unwrap_err()
                .contains("pg_dumpall")
        );
        assert!(
            pg_bin_dir(&file, false)
                .unwrap_err()
                .contains("not a directory")
        );
    }
}
