//! The libpq password file (`~/.pgpass`, `PGPASSFILE`): `host:port:db:user:password` lines.

use std::path::Path;

/// The password of the first matching line, as libpq picks it; `None` when the file is
/// missing, unreadable, or has no match.
pub fn lookup(file: &Path, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let host = if host.starts_with('/') || host.is_empty() {
        "localhost"
    } else {
        host
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_fields(line);
            if fields.len() < 5 {
                return None;
            }
            let want = [host, port, db, user];
            let matches = fields[..4]
                .iter()
                .zip(want)
                .all(|(pattern, value)| pattern == "*" || pattern == value);
            matches.then(|| fields[4..].join(":"))
        })
}

/// Splits on unescaped `:`; `\:` and `\\` are literal.
fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("one field").push(n);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_line_wins_with_wildcards_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(
            &f,
            "# comment\nother:5432:*:bob:nope\ndb1:*:app:bob:p\\:w\\\\d\n*:*:*:*:fallback\n",
        )
        .unwrap();
        assert_eq!(
            lookup(&f, "db1", "5432", "app", "bob").as_deref(),
            Some("p:w\\d")
        );
        assert_eq!(lookup(&f, "x", "1", "y", "z").as_deref(), Some("fallback"));
        assert_eq!(
            lookup(&dir.path().join("missing"), "a", "b", "c", "d"),
            None
        );
    }
}
