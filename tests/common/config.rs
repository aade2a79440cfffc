//! A small builder for the TOML configurations tests write, instead of one `format!` per test:
//! tables in order, string values quoted, other values as written.
//!
//! ```ignore
//! let toml = Toml::local(&store_dir)
//!     .job("main", "export", &c.url(&db))
//!     .set("parallel", 2)
//!     .table("jobs.main.retention")
//!     .set("keep_last", 2)
//!     .render();
//! ```

use std::fmt::Write as _;
use std::path::Path;

/// A value in a TOML table: strings are quoted, numbers and booleans are not.
pub trait TomlValue {
    fn render(&self) -> String;
}

impl TomlValue for &str {
    fn render(&self) -> String {
        format!("\"{}\"", self.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

impl TomlValue for String {
    fn render(&self) -> String {
        self.as_str().render()
    }
}

impl TomlValue for i64 {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for i32 {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for bool {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for &[&str] {
    fn render(&self) -> String {
        let items: Vec<String> = self.iter().map(TomlValue::render).collect();
        format!("[{}]", items.join(", "))
    }
}

/// A configuration being built: `[table]` sections with their keys, in order.
#[derive(Debug, Clone, Default)]
pub struct Toml {
    tables: Vec<(String, Vec<(String, String)>)>,
}

impl Toml {
    /// `[storage] url = URL`.
    pub fn storage(url: &str) -> Toml {
        Toml::default().table("storage").set("url", url)
    }

    /// `[storage] url = "file://DIR"`.
    pub fn local(dir: &Path) -> Toml {
        Toml::storage(&format!("file://{}", dir.display()))
    }

    /// Starts (or goes back to) the table `name`; later `set`s go into it.
    #[must_use]
    pub fn table(mut self, name: &str) -> Toml {
        if let Some(at) = self.tables.iter().position(|(n, _)| n == name) {
            let table = self.tables.remove(at);
            self.tables.push(table);
        } else {
            self.tables.push((name.to_string(), Vec::new()));
        }
        self
    }

    /// `key = value` in the current table (replacing an earlier value of `key`).
    #[must_use]
    #[allow(clippy::needless_pass_by_value)] // values are literals: `set("parallel", 2)`
    pub fn set(mut self, key: &str, value: impl TomlValue) -> Toml {
        let (_, keys) = self.tables.last_mut().expect("a table first");
        keys.retain(|(k, _)| k != key);
        keys.push((key.to_string(), value.render()));
        self
    }

    /// Lines written as they are at the end of the current table (keys a test passes through).
    #[must_use]
    pub fn raw(mut self, lines: &str) -> Toml {
        let (_, keys) = self.tables.last_mut().expect("a table first");
        for line in lines.lines().filter(|l| !l.trim().is_empty()) {
            keys.push((String::new(), line.to_string()));
        }
        self
    }

    /// `[jobs.NAME]` with its kind and database, gzip:1 (fast in tests).
    #[must_use]
    pub fn job(self, name: &str, kind: &str, database: &str) -> Toml {
        self.table(&format!("jobs.{name}"))
            .set("kind", kind)
            .set("database", database)
            .set("compression", "gzip:1")
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, keys) in &self.tables {
            let _ = writeln!(out, "[{name}]");
            for (k, v) in keys {
                if k.is_empty() {
                    let _ = writeln!(out, "{v}");
                } else {
                    let _ = writeln!(out, "{k} = {v}");
                }
            }
            out.push('\n');
        }
        out
    }
}
