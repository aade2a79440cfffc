//! libpq connection strings: URL and `key=value` forms, PG* environment defaults, and the
//! environment handed to pg_dump/pg_restore so no secret ever appears on a command line.

use std::collections::BTreeMap;
use std::fmt;

/// Parameters pgkeep understands, with the PG* variable libpq reads for each.
const PARAMS: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("application_name", "PGAPPNAME"),
    ("options", "PGOPTIONS"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("keepalives", ""),
    ("keepalives_idle", ""),
];

/// A malformed connection string. The message never contains the password: it quotes only
/// parameter names that look like names, and nothing of a URL's `user:password@` part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid connection string: {0}")]
pub struct ConnInfoError(pub String);

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, ConnInfoError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(ConnInfoError(format!(
                    "sslmode {} is not one of disable, allow, prefer, require, verify-ca, verify-full",
                    quoted_name(other)
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Connection parameters as written by the user, before PG* defaults are applied.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    params: BTreeMap<String, String>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnInfo({self})")
    }
}

/// Shows the parameters with any password masked, for logs and messages.
impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| {
                if k == "password" {
                    format!("{k}=********")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        f.write_str(&parts.join(" "))
    }
}

impl ConnInfo {
    /// Parses a `postgres://` / `postgresql://` URL or a `key=value ...` string; the empty
    /// string is valid and means "everything from the PG* environment".
    ///
    /// # Errors
    /// `ConnInfoError` for syntax errors and unknown parameters.
    pub fn parse(s: &str) -> Result<ConnInfo, ConnInfoError> {
        let s = s.trim();
        let params = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            parse_url(s)?
        } else {
            parse_keywords(s)?
        };
        for key in params.keys() {
            if !PARAMS.iter().any(|(k, _)| k == key) {
                return Err(ConnInfoError(format!(
                    "unknown parameter {}",
                    quoted_name(key)
                )));
            }
        }
        if let Some(mode) = params.get("sslmode") {
            SslMode::parse(mode)?;
        }
        Ok(ConnInfo { params })
    }

    /// The parameters as a libpq `key='value' ...` string, the password included: for
    /// handing on to another part of pgkeep, never for showing (`Display` masks it).
    pub fn to_keywords(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A parameter as written (not defaulted).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// Sets a parameter, e.g. to point the same server at another database.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.params.insert(key.to_string(), value.into());
    }

    /// Removes a parameter.
    pub fn remove(&mut self, key: &str) {
        self.params.remove(key);
    }

    /// Fills every unset parameter from the PG* variables in `env`, as libpq does.
    pub fn with_env_defaults(&self, env: &dyn Fn(&str) -> Option<String>) -> ConnInfo {
        let mut params = self.params.clone();
        for (key, var) in PARAMS {
            if var.is_empty() || params.contains_key(*key) {
                continue;
            }
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                params.insert((*key).to_string(), v);
            }
        }
        ConnInfo { params }
    }

    /// The effective sslmode (libpq's default is `prefer`).
    pub fn sslmode(&self) -> SslMode {
        self.get("sslmode")
            .and_then(|m| SslMode::parse(m).ok())
            .unwrap_or(SslMode::Prefer)
    }

    /// The environment for a libpq client program (pg_dump, pg_restore, psql) connecting
    /// with these parameters: every PG* variable set explicitly, so nothing inherited
    /// leaks in and no secret needs to go on the command line.
    pub fn child_env(&self) -> Vec<(String, String)> {
        PARAMS
            .iter()
            .filter(|(_, var)| !var.is_empty())
            .filter_map(|(key, var)| {
                self.params
                    .get(*key)
                    .map(|v| ((*var).to_string(), v.clone()))
            })
            .collect()
    }
}

/// The PG* variables that fill unset parameters (`with_env_defaults`).
pub(super) fn param_env_vars() -> impl Iterator<Item = &'static str> {
    PARAMS.iter().map(|(_, var)| *var).filter(|v| !v.is_empty())
}

/// `'name'` when `text` looks like a parameter name (so showing it cannot show a secret),
/// else a description: a string that failed to parse may hold a password anywhere.
fn quoted_name(text: &str) -> String {
    let plain = !text.is_empty()
        && text.len() <= 40
        && text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain && !text.to_ascii_lowercase().contains("pass") {
        format!("'{text}'")
    } else {
        "(not shown: it does not look like a parameter name)".to_string()
    }
}

/// Every PG* variable a libpq child could read; removed from the inherited environment.
pub fn libpq_env_vars() -> impl Iterator<Item = &'static str> {
    PARAMS
        .iter()
        .map(|(_, var)| *var)
        .filter(|v| !v.is_empty())
        .chain([
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGSSLCRL",
            "PGREQUIRESSL",
            "PGGSSENCMODE",
            "PGKRBSRVNAME",
            "PGSSLNEGOTIATION",
            "PGCHANNELBINDING",
        ])
}

fn parse_keywords(s: &str) -> Result<BTreeMap<String, String>, ConnInfoError> {
    let mut params = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            // Only a known name is quoted: a lone word may be a password whose `password=`
            // went missing.
            let after = if PARAMS.iter().any(|(k, _)| *k == key) {
                format!("'{key}'")
            } else {
                "a word".to_string()
            };
            return Err(ConnInfoError(format!(
                "missing '=' after {after} (expected key=value pairs or a postgres:// URL)"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(ConnInfoError(format!(
                            "unterminated quoted value for {}",
                            quoted_name(&key)
                        )));
                    }
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(ConnInfoError("trailing backslash".into())),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        params.insert(key, value);
    }
    Ok(params)
}

fn parse_url(s: &str) -> Result<BTreeMap<String, String>, ConnInfoError> {
    let rest = s
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| ConnInfoError("bad URL".into()))?;
    parse_url_rest(rest).map_err(|e| {
        // With a `user:password@` whose password holds '/', '?' or '#', the parts split
        // wrongly and any piece an error quotes may be the password: quote nothing.
        let userinfo = rest.rfind('@').map(|at| &rest[..at]);
        if userinfo.is_some_and(|u| u.contains(':') && u.contains(['/', '?', '#'])) {
            ConnInfoError(
                "the URL does not parse; if its password holds '/', '?', '#' or '@', percent-encode them (%2F, %3F, %23, %40)"
                    .into(),
            )
        } else {
            e
        }
    })
}

fn parse_url_rest(rest: &str) -> Result<BTreeMap<String, String>, ConnInfoError> {
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let mut params = BTreeMap::new();
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.insert("user".into(), decode(user)?);
            }
            if let Some(p) = password {
                params.insert("password".into(), decode(p)?);
            }
            hp
        }
        None => authority,
    };
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for hp in hostport.split(',').filter(|h| !h.is_empty()) {
        let (host, port) = if let Some(v6) = hp.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| ConnInfoError("unterminated '[' in host".into()))?;
            (h.to_string(), tail.strip_prefix(':').map(str::to_string))
        } else {
            match hp.rsplit_once(':') {
                Some((h, p)) => (decode(h)?, Some(p.to_string())),
                None => (decode(hp)?, None),
            }
        };
        if let Some(p) = &port
            && p.parse::<u16>().is_err()
        {
            // Not quoted: without an '@', `user:password` reads as `host:port`.
            return Err(ConnInfoError(
                "invalid port (a number from 1 to 65535; a password in the URL needs user:password@host)"
                    .into(),
            ));
        }
        hosts.push(host);
        ports.push(port.unwrap_or_default());
    }
    if !hosts.is_empty() && hosts.iter().any(|h| !h.is_empty()) {
        params.insert("host".into(), hosts.join(","));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        params.insert("port".into(), ports.join(","));
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        params.insert("dbname".into(), decode(db)?);
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            ConnInfoError(format!("query parameter {} has no '='", quoted_name(pair)))
        })?;
        params.insert(decode(k)?, decode(v)?);
    }
    Ok(params)
}

fn decode(s: &str) -> Result<String, ConnInfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ConnInfoError("invalid percent-encoding".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConnInfoError("percent-encoding is not UTF-8".into()))
}

#[cfg(test)]
mod tests;
