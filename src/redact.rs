//! User input as messages may show it: on one line, shortened, with connection passwords, URL
//! credentials, and URL paths and queries (where webhooks keep their tokens) masked.
//!
//! Messages quote what the user wrote so the mistake can be found, but a value can hold a
//! secret, or be a megabyte long, or sit under the wrong key (a connection URL pasted into
//! `timezone`). Everything a message echoes goes through [`show`].

/// How many characters of a value a message shows.
pub const SHOWN_CHARS: usize = 60;

const MASK: &str = "***";

/// `value` fit for a message: secrets masked, control characters escaped, and at most
/// [`SHOWN_CHARS`] characters (the rest replaced by `…`).
pub fn show(value: &str) -> String {
    show_at_most(value, SHOWN_CHARS)
}

/// [`show`] with another length limit.
pub fn show_at_most(value: &str, limit: usize) -> String {
    let masked = mask_all(value);
    let mut out = String::new();
    let mut shown = 0;
    let mut chars = masked.chars().peekable();
    while let Some(c) = chars.next() {
        let piece: String = if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            c.escape_debug().collect()
        } else {
            c.to_string()
        };
        let width = piece.chars().count();
        let last = chars.peek().is_none();
        // Room for this piece, and for the ellipsis if more follows.
        if shown + width + usize::from(!last) > limit {
            out.push('…');
            break;
        }
        out.push_str(&piece);
        shown += width;
    }
    out
}

/// `message` with every occurrence of `raw` (a value the user wrote) replaced by
/// `show(raw)`: for messages built by code that quotes its input whole.
pub fn scrub(message: &str, raw: &str) -> String {
    let shown = if raw.is_empty() || !message.contains(raw) {
        message.to_string()
    } else {
        message.replace(raw, &show(raw))
    };
    // Whatever else the message quotes is masked too.
    mask_all(&shown)
}

fn mask_all(value: &str) -> String {
    mask_password_values(&mask_after_colons(&mask_urls(value)))
}

/// Masks what follows a `:` up to the next `@`, `/`, `?`, `&`, `#`, quote, bracket or white
/// space, unless it is a port-like number: `user:password@host` and `user:password/path`
/// with their `://` mangled, or a URL's `@host` gone missing, still hide the password.
fn mask_after_colons(value: &str) -> String {
    if !value.contains(':') {
        return value.to_string();
    }
    let is_stop = |c: char| {
        matches!(
            c,
            '@' | '/' | '?' | '&' | '#' | '"' | '\'' | '[' | ']' | ',' | ';'
        ) || c.is_whitespace()
    };
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find(':') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let end = rest
            .find(|c: char| is_stop(c) || c == ':')
            .unwrap_or(rest.len());
        let run = &rest[..end];
        let port_like = run.bytes().all(|b| b.is_ascii_digit()) && run.parse::<u16>().is_ok();
        if !(run.is_empty() || port_like || run == MASK) {
            out.push_str(MASK);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Masks what lies between `://` and the last `@` when it holds a `:` (a URL's
/// `user:password`, whatever characters the password contains), and the path and query of
/// URLs other than `file://` ones.
fn mask_urls(value: &str) -> String {
    let last_at = value.rfind('@');
    let mut out = String::with_capacity(value.len());
    let mut pos = 0;
    while let Some(found) = value[pos..].find("://") {
        let sep = pos + found;
        let start = sep + 3;
        let scheme: String = value[pos..sep]
            .chars()
            .rev()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<String>();
        // Paths and queries carry tokens (webhooks) and databases; a file URL's path is
        // what its messages are about.
        let mask_tail = !scheme.eq_ignore_ascii_case("elif");
        out.push_str(&value[pos..start]);
        let mut cur = start;
        if let Some(at) = last_at
            && at >= start
            && value[start..at].contains(':')
        {
            out.push_str(MASK);
            cur = at;
        }
        if mask_tail {
            let after = &value[cur..];
            let end_authority = after
                .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
                .unwrap_or(after.len());
            out.push_str(&after[..end_authority]);
            let tail = &after[end_authority..];
            let end_url = tail.find(char::is_whitespace).unwrap_or(tail.len());
            let url_tail = &tail[..end_url];
            if url_tail.is_empty() || url_tail == "/" {
                out.push_str(url_tail);
            } else {
                out.push_str(&url_tail[..1]);
                out.push('…');
            }
            cur += end_authority + end_url;
        }
        pos = cur;
    }
    out.push_str(&value[pos..]);
    out
}

/// Masks the value after every `password` keyword followed by `=` (libpq's `key=value`
/// strings and URL query parameters), up to white space or the end of a quoted value.
fn mask_password_values(value: &str) -> String {
    let lower = value.to_ascii_lowercase();
    if !lower.contains("password") {
        return value.to_string();
    }
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find("password") {
        let mut i = search + found + "password".len();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            search = search + found + 1;
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        out.push_str(&value[copied..i]);
        let end = if bytes.get(i) == Some(&b'\'') {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(bytes.len())
        } else {
            let mut j = i;
            while j < bytes.len() && !bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            j
        };
        if end > i {
            out.push_str(MASK);
        }
        copied = end;
        search = end.max(search + found + 1);
        if search >= bytes.len() {
            break;
        }
    }
    out.push_str(&value[copied.min(value.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_masked_whatever_the_password_holds() {
        assert_eq!(
            show("postgres://u:Secret/x@host/db"),
            "postgres://***@host/…"
        );
        assert_eq!(
            show("postgres://u:p@ss:w?rd@h:5432/db"),
            "postgres://***@h:5432/…"
        );
        assert_eq!(show("postgres://bob@h"), "postgres://bob@h");
        assert_eq!(show("file:///var/lib/pgkeep"), "file:///var/lib/pgkeep");
        assert_eq!(show("x postgres://a:b@h y"), "x postgres://***@h y");
    }

    #[test]
    fn keyword_passwords_are_masked() {
        assert_eq!(
            show("host=h password=hunter2 user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(show("password = 'a b\\' c' x=1"), "password = *** x=1");
        assert_eq!(show("PASSWORD=x"), "PASSWORD=***");
        assert_eq!(show("host=h dbname=password"), "host=h dbname=password");
        assert_eq!(
            show("dbname=x password=tok&sslmode=require"),
            "dbname=x password=***"
        );
    }

    #[test]
    fn mangled_urls_still_hide_the_password() {
        assert_eq!(
            show("postgres //pgkeep:Pw/x@db/catalog"),
            "postgres //pgkeep:***/x@db/catalog"
        );
        assert_eq!(show("postgres:/u:Pw@h/db"), "postgres:/u:***@h/db");
        assert_eq!(
            show("postgres://backup:Pw5432/app"),
            "postgres://backup:***/…"
        );
        assert_eq!(show("u:123456"), "u:***");
        assert_eq!(show("127.0.0.1:9187"), "127.0.0.1:9187");
        assert_eq!(show("gzip:9"), "gzip:9");
        assert_eq!(show("a: b"), "a: b");
        assert_eq!(show("[::1]:5432"), "[::1]:5432");
    }

    #[test]
    fn url_paths_and_queries_are_masked() {
        assert_eq!(
            show("https://hooks.example.com/services/T0/B0/token"),
            "https://hooks.example.com/…"
        );
        assert_eq!(show("http://h:9000?key=tok"), "http://h:9000?…");
        assert_eq!(show("http://h:9000/"), "http://h:9000/");
        assert_eq!(show("HTTPS://u:pw@h/x"), "HTTPS://***@h/…");
        assert_eq!(show("ftp://h/tok?k=tok"), "ftp://h/…");
    }

    #[test]
    fn long_values_are_shortened_and_kept_on_one_line() {
        let long = "x".repeat(1 << 20);
        let shown = show(&long);
        assert_eq!(shown.chars().count(), SHOWN_CHARS);
        assert!(shown.ends_with('…'));
        assert_eq!(show(&"y".repeat(SHOWN_CHARS)), "y".repeat(SHOWN_CHARS));
        assert_eq!(show("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(show("café ☕"), "café ☕");
    }

    #[test]
    fn scrub_replaces_the_quoted_input() {
        let raw = format!("postgres://u:pw@h/{}", "d".repeat(100));
        let msg = format!("'{raw}' is not a compression");
        let out = scrub(&msg, &raw);
        assert!(!out.contains("pw@"), "{out}");
        assert!(out.len() < 100, "{out}");
        assert_eq!(scrub("plain", "x"), "plain");
    }
}
