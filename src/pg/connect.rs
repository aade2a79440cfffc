//! Opening connections: PG* defaults, password sources, and TLS with libpq's sslmode meanings.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use native_tls::{Certificate, Identity, TlsConnector};
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::Client;

use super::PgError;
use super::conninfo::{ConnInfo, SslMode};
use super::passfile;

/// Fully resolved connection settings for one database: what pgkeep connects with and what
/// its child processes (pg_dump, pg_restore) receive in their environment.
#[derive(Clone)]
pub struct Target {
    info: ConnInfo,
    password: Option<String>,
    /// The TLS connector, built on first use and shared by clones: building one loads the
    /// certificate store, which costs tens of milliseconds per connection otherwise.
    tls: Arc<OnceLock<MakeTlsConnector>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.describe())
    }
}

impl Target {
    /// The environment variables resolving a target reads: the PG* defaults, and `USER`,
    /// `LOGNAME` and `HOME` for the default user and passfile.
    pub fn env_vars() -> impl Iterator<Item = &'static str> {
        super::conninfo::param_env_vars().chain(["USER", "LOGNAME", "HOME"])
    }

    /// Parses `conninfo` (a string from the command line) and resolves it as
    /// [`Target::from_conninfo`] does.
    ///
    /// # Errors
    /// A malformed conninfo, as `from_conninfo`.
    pub fn resolve(conninfo: &str, password_file: Option<&Path>) -> Result<Target, PgError> {
        Self::from_conninfo(&ConnInfo::parse(conninfo)?, password_file)
    }

    /// Resolves connection parameters the way libpq would: parameters, then PG* variables,
    /// then the built-in defaults; the password from the parameters, `password_file`,
    /// `PGPASSWORD`, or the passfile, in that order.
    ///
    /// # Errors
    /// An environment variable it reads that is not UTF-8 (named, never shown), or an
    /// unreadable `password_file`.
    pub fn from_conninfo(info: &ConnInfo, password_file: Option<&Path>) -> Result<Target, PgError> {
        for var in Self::env_vars() {
            if std::env::var_os(var).is_some_and(|v| v.to_str().is_none()) {
                return Err(PgError::Config {
                    reason: format!("environment variable {var} is not valid UTF-8"),
                });
            }
        }
        let env = |k: &str| std::env::var(k).ok();
        Self::from_conninfo_with(info, password_file, &env)
    }

    /// `resolve` with an explicit environment lookup (tests).
    pub fn resolve_with(
        conninfo: &str,
        password_file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Target, PgError> {
        Self::from_conninfo_with(&ConnInfo::parse(conninfo)?, password_file, env)
    }

    /// `from_conninfo` with an explicit environment lookup (tests).
    pub fn from_conninfo_with(
        written: &ConnInfo,
        password_file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Target, PgError> {
        let mut info = written.with_env_defaults(env);
        if info.get("host").is_none() && info.get("hostaddr").is_none() {
            info.set("host", default_socket_dir());
        }
        if info.get("port").is_none() {
            info.set("port", "5432");
        }
        if info.get("user").is_none() {
            let user = env("USER")
                .or_else(|| env("LOGNAME"))
                .unwrap_or_else(|| "postgres".into());
            info.set("user", user);
        }
        if info.get("dbname").is_none() {
            let user = info.get("user").unwrap_or("postgres").to_string();
            info.set("dbname", user);
        }
        let mut password = written.get("password").map(str::to_string);
        if password.is_none()
            && let Some(pf) = password_file
        {
            let text = std::fs::read_to_string(pf).map_err(|source| PgError::PasswordFile {
                path: pf.to_path_buf(),
                source,
            })?;
            password = Some(text.trim_end_matches(['\n', '\r']).to_string());
        }
        if password.is_none() {
            password = info.get("password").map(str::to_string);
        }
        if password.is_none() {
            let file = info
                .get("passfile")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
            if let Some(file) = file {
                password = passfile::lookup(
                    &file,
                    info.get("host").unwrap_or(""),
                    info.get("port").unwrap_or("5432"),
                    info.get("dbname").unwrap_or(""),
                    info.get("user").unwrap_or(""),
                );
            }
        }
        info.remove("password");
        Ok(Target {
            info,
            password,
            tls: Arc::default(),
        })
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> Target {
        let mut t = self.clone();
        t.info.set("dbname", dbname);
        t
    }

    /// The same settings for sessions that only look: every transaction in them is
    /// read-only (`default_transaction_read_only`), so a mistake cannot write.
    pub fn read_only(&self) -> Target {
        let mut t = self.clone();
        let setting = "-c default_transaction_read_only=on";
        let options = match t.info.get("options").filter(|o| !o.trim().is_empty()) {
            Some(o) => format!("{o} {setting}"),
            None => setting.to_string(),
        };
        t.info.set("options", options);
        t
    }

    pub fn dbname(&self) -> &str {
        self.info.get("dbname").unwrap_or("")
    }

    /// The password resolved for this target (parameters, password file, PGPASSWORD or the
    /// passfile), if any: for handing the same credentials to another database's conninfo.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn user(&self) -> &str {
        self.info.get("user").unwrap_or("")
    }

    /// `user@host:port/dbname`, never with a password.
    pub fn describe(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user(),
            self.info
                .get("host")
                .or(self.info.get("hostaddr"))
                .unwrap_or(""),
            self.info.get("port").unwrap_or(""),
            self.dbname()
        )
    }

    /// The environment for a libpq child program; includes `PGPASSWORD` when one is known.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .info
            .child_env()
            .into_iter()
            .filter(|(k, _)| k != "PGPASSWORD" && k != "PGPASSFILE")
            .collect();
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD".into(), p.clone()));
        }
        env
    }

    /// Connects, spawning the connection's I/O task on the current runtime.
    ///
    /// # Errors
    /// `PgError::Connect` with the server's own message (wrong password, missing database...).
    pub async fn connect(&self) -> Result<Client, PgError> {
        let config = self.pg_config()?;
        let tls = if let Some(tls) = self.tls.get() {
            tls.clone()
        } else {
            let tls = self.tls()?;
            self.tls.get_or_init(|| tls.clone()).clone()
        };
        let (client, connection) = config.connect(tls).await.map_err(|e| PgError::Connect {
            target: self.describe(),
            source: super::DbError(e),
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
        Ok(client)
    }

    fn pg_config(&self) -> Result<tokio_postgres::Config, PgError> {
        let mut c = tokio_postgres::Config::new();
        let hosts = self.info.get("host").unwrap_or("");
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            c.host(h);
        }
        if let Some(addrs) = self.info.get("hostaddr") {
            for a in addrs.split(',').filter(|a| !a.is_empty()) {
                let ip = a.parse().map_err(|_| PgError::Config {
                    reason: format!("hostaddr '{a}' is not an IP address"),
                })?;
                c.hostaddr(ip);
            }
        }
        for p in self.info.get("port").unwrap_or("5432").split(',') {
            let port = p.parse::<u16>().map_err(|_| PgError::Config {
                reason: format!("port '{p}' is not a number"),
            })?;
            c.port(port);
        }
        c.user(self.user());
        c.dbname(self.dbname());
        if let Some(p) = &self.password {
            c.password(p);
        }
        if let Some(app) = self.info.get("application_name") {
            c.application_name(app);
        } else {
            c.application_name("pgkeep");
        }
        if let Some(o) = self.info.get("options") {
            c.options(o);
        }
        // libpq waits forever without connect_timeout; pgkeep never does.
        let connect_timeout = self
            .info
            .get("connect_timeout")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|secs| *secs > 0)
            .map_or(DEFAULT_CONNECT_TIMEOUT, |secs| {
                Duration::from_secs(secs.max(2))
            });
        c.connect_timeout(connect_timeout);
        // A server that vanishes mid-COPY (host down, network cut) is noticed by TCP
        // keepalives within about a minute instead of the kernel's two hours.
        c.keepalives(true);
        c.keepalives_idle(Duration::from_secs(30));
        c.keepalives_interval(Duration::from_secs(10));
        c.keepalives_retries(3);
        c.ssl_mode(match self.info.sslmode() {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        Ok(c)
    }

    fn tls(&self) -> Result<MakeTlsConnector, PgError> {
        let mode = self.info.sslmode();
        let rootcert = self.info.get("sslrootcert").filter(|r| !r.is_empty());
        let tls_err = |reason: String| PgError::Tls { reason };
        let mut b = TlsConnector::builder();
        // libpq: `require` with a root certificate configured behaves like `verify-ca`.
        let verify_chain = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull)
            || (mode == SslMode::Require && rootcert.is_some());
        let verify_host = mode == SslMode::VerifyFull;
        if verify_chain {
            match rootcert {
                Some("system") => {}
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| tls_err(format!("cannot read sslrootcert {path}: {e}")))?;
                    let certs = Certificate::stack_from_pem(&pem)
                        .map_err(|e| tls_err(format!("sslrootcert {path}: {e}")))?;
                    if certs.is_empty() {
                        return Err(tls_err(format!("sslrootcert {path} holds no certificate")));
                    }
                    for cert in certs {
                        b.add_root_certificate(cert);
                    }
                    b.disable_built_in_roots(true);
                }
                None => {
                    let home_root = std::env::var("HOME")
                        .map(|h| Path::new(&h).join(".postgresql/root.crt"))
                        .ok()
                        .filter(|p| p.is_file());
                    let Some(path) = home_root else {
                        return Err(tls_err(format!(
                            "sslmode={} needs sslrootcert (a CA file, or \"system\" for the system store)",
                            mode.as_str()
                        )));
                    };
                    let pem = std::fs::read(&path)
                        .map_err(|e| tls_err(format!("cannot read {}: {e}", path.display())))?;
                    for cert in Certificate::stack_from_pem(&pem)
                        .map_err(|e| tls_err(format!("{}: {e}", path.display())))?
                    {
                        b.add_root_certificate(cert);
                    }
                    b.disable_built_in_roots(true);
                }
            }
            b.danger_accept_invalid_hostnames(!verify_host);
        } else {
            b.danger_accept_invalid_certs(true);
            b.danger_accept_invalid_hostnames(true);
        }
        if let (Some(cert), Some(key)) = (self.info.get("sslcert"), self.info.get("sslkey")) {
            let c = std::fs::read(cert)
                .map_err(|e| tls_err(format!("cannot read sslcert {cert}: {e}")))?;
            let k = std::fs::read(key)
                .map_err(|e| tls_err(format!("cannot read sslkey {key}: {e}")))?;
            let id = Identity::from_pkcs8(&c, &k).map_err(|e| {
                tls_err(format!("sslcert/sslkey (the key must be PKCS#8 PEM): {e}"))
            })?;
            b.identity(id);
        }
        let connector = b.build().map_err(|e| tls_err(e.to_string()))?;
        Ok(MakeTlsConnector::new(connector))
    }
}

/// How long a connection attempt may take unless the conninfo's `connect_timeout` says.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// libpq's compiled-in socket directory on Debian-family systems, else /tmp.
fn default_socket_dir() -> &'static str {
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql"
    } else {
        "/tmp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_sources_in_order_and_never_in_description() {
        let dir = tempfile::tempdir().unwrap();
        let pf = dir.path().join("pw");
        std::fs::write(&pf, "from-file\n").unwrap();
        let env = |k: &str| match k {
            "PGPASSWORD" => Some("from-env".to_string()),
            "PGUSER" => Some("envuser".to_string()),
            _ => None,
        };
        let t = Target::resolve_with("postgres://u:inline@h/db", Some(&pf), &env).unwrap();
        assert_eq!(t.password.as_deref(), Some("inline"));
        let t = Target::resolve_with("host=h dbname=db", Some(&pf), &env).unwrap();
        assert_eq!(t.password.as_deref(), Some("from-file"));
        assert_eq!(t.user(), "envuser");
        let t = Target::resolve_with("host=h dbname=db", None, &env).unwrap();
        assert_eq!(t.password.as_deref(), Some("from-env"));
        assert!(!t.describe().contains("from-env"));
        assert!(!format!("{t:?}").contains("from-env"));
        let env_vars = t.child_env();
        assert!(env_vars.contains(&("PGPASSWORD".into(), "from-env".into())));
        assert!(env_vars.contains(&("PGHOST".into(), "h".into())));
    }

    #[test]
    fn defaults_follow_libpq() {
        let env = |k: &str| (k == "USER").then(|| "alice".to_string());
        let t = Target::resolve_with("", None, &env).unwrap();
        assert_eq!(t.user(), "alice");
        assert_eq!(t.dbname(), "alice");
        assert!(t.describe().contains(":5432/alice"));
    }
}
