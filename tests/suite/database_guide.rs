//! docs/DATABASE.md stays true: its blocks fenced as ```` ```sql runnable db=NAME ```` and
//! ```` ```sh runnable ```` run in document order against a cluster of this test's own
//! (pg_stat_statements preloaded, since the guide changes server settings and creates roles by
//! their documented names), with the environment the guide describes; a failing block, or one
//! whose output lacks an `expect="..."` text, fails the test. The guide's links to its own
//! sections are checked too.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::pg::Cluster;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn guide() -> String {
    std::fs::read_to_string(repo().join("docs/DATABASE.md")).expect("reading docs/DATABASE.md")
}

#[derive(Debug, PartialEq)]
enum Lang {
    Sql { db: String },
    Sh,
}

/// A runnable block: where it starts (1-based line of its fence), what runs it, its text and
/// the texts its output must contain.
#[derive(Debug)]
struct Block {
    line: usize,
    lang: Lang,
    text: String,
    expect: Vec<String>,
}

/// The words of a fence's info string: `key=value` or `key="value with spaces"`.
fn info_words(info: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for ch in info.chars() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    assert!(!quoted, "an unterminated quote in the fence ```{info}");
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The runnable blocks of a Markdown text, in order.
fn runnable_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut body = String::new();
        for (_, inner) in lines.by_ref() {
            if inner.starts_with("```") {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        let words = info_words(info);
        if !words.iter().any(|w| w == "runnable") {
            continue;
        }
        let mut db = None;
        let mut expect = Vec::new();
        for w in &words[1..] {
            if let Some(v) = w.strip_prefix("db=") {
                db = Some(v.to_string());
            } else if let Some(v) = w.strip_prefix("expect=") {
                expect.push(v.to_string());
            } else {
                assert_eq!(w, "runnable", "line {}: unknown word {w:?}", n + 1);
            }
        }
        let lang = match words[0].as_str() {
            "sql" => Lang::Sql {
                db: db.unwrap_or_else(|| panic!("line {}: a sql block needs db=NAME", n + 1)),
            },
            "sh" => {
                assert!(db.is_none(), "line {}: db= is for sql blocks", n + 1);
                Lang::Sh
            }
            other => panic!("line {}: runnable {other:?}: only sql and sh run", n + 1),
        };
        blocks.push(Block {
            line: n + 1,
            lang,
            text: body,
            expect,
        });
    }
    blocks
}

/// The environment the guide's examples run in (its first section says so).
struct Setting {
    cluster: Cluster,
    work: tempfile::TempDir,
    config: PathBuf,
}

impl Setting {
    async fn new() -> Setting {
        let cluster = Cluster::start_with(&[
            "shared_preload_libraries=pg_stat_statements",
            "track_io_timing=on",
        ])
        .expect("starting the guide's own cluster");
        cluster.psql_sql("postgres", "CREATE DATABASE app").await;
        cluster.load_pagila("app").await;
        let work = tempfile::tempdir().expect("tempdir");
        let config = work.path().join("pgkeep.toml");
        std::fs::write(
            &config,
            format!(
                "[storage]\nurl = \"file://{}\"\n\n\
                 [catalog]\ndatabase = \"dbname=pgkeep user=pgkeep_catalog\"\n\n\
                 [jobs.app]\nkind = \"dump\"\ndatabase = \"dbname=app user=pgkeep_backup\"\n\
                 compression = \"gzip:1\"\n",
                work.path().join("store").display()
            ),
        )
        .expect("writing pgkeep.toml");
        std::fs::create_dir(work.path().join("cwd")).expect("mkdir");
        Setting {
            cluster,
            work,
            config,
        }
    }

    fn command(&self, program: &Path) -> tokio::process::Command {
        let pgkeep = PathBuf::from(env!("CARGO_BIN_EXE_pgkeep"));
        let path = format!(
            "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.cluster.bin_dir().display(),
            pgkeep.parent().expect("the binary's directory").display()
        );
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear()
            .current_dir(self.work.path().join("cwd"))
            .env("PATH", path)
            .env("HOME", self.work.path())
            .env("LANG", "C.UTF-8")
            .env("TZ", "UTC")
            .env("PGHOST", "localhost")
            .env("PGPORT", self.cluster.port().to_string())
            .env("PGUSER", "postgres")
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", self.cluster.ca_cert_path())
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGKEEP_CONFIG", &self.config)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs one block; its output (stdout then stderr) if it succeeds, else the panic message.
    async fn run(&self, block: &Block) -> Result<String, String> {
        let file = self.work.path().join(format!("block-{}", block.line));
        std::fs::write(&file, &block.text).expect("writing the block");
        let mut cmd = match &block.lang {
            Lang::Sql { db } => {
                let mut cmd = self.command(&self.cluster.bin_dir().join("psql"));
                cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-d", db, "-f"])
                    .arg(&file);
                cmd
            }
            Lang::Sh => {
                let mut cmd = self.command(Path::new("/bin/bash"));
                cmd.args(["-euo", "pipefail"]).arg(&file);
                cmd
            }
        };
        let out = tokio::time::timeout(Duration::from_mins(2), cmd.output())
            .await
            .map_err(|_| "still running after 2 minutes".to_string())?
            .map_err(|e| format!("cannot start: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(format!("exited with {}:\n{text}", out.status));
        }
        for e in &block.expect {
            if !text.contains(e.as_str()) {
                return Err(format!("the output lacks {e:?}:\n{text}"));
            }
        }
        Ok(text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_guide_runnable_examples_succeed() {
    let blocks = runnable_blocks(&guide());
    let sql = blocks
        .iter()
        .filter(|b| matches!(b.lang, Lang::Sql { .. }))
        .count();
    let sh = blocks.len() - sql;
    // So that a changed marker cannot quietly leave the guide untested.
    assert!(
        sql >= 40 && sh >= 10,
        "only {sql} sql and {sh} sh runnable blocks in docs/DATABASE.md"
    );

    let t = Instant::now();
    let setting = Setting::new().await;
    let set_up = t.elapsed();
    let mut slowest = (Duration::ZERO, 0);
    for block in &blocks {
        let t = Instant::now();
        if let Err(e) = setting.run(block).await {
            panic!(
                "docs/DATABASE.md line {} ({:?}) {e}\n--- the block\n{}",
                block.line, block.lang, block.text
            );
        }
        slowest = slowest.max((t.elapsed(), block.line));
    }

    // What the examples did is really there: the catalog they created holds the backups they
    // took, as the catalog role recorded them; the application got its migrations.
    let c = &setting.cluster;
    let catalog = c
        .psql_sql(
            "pgkeep",
            "\\pset tuples_only on\n\\pset format unaligned\n\
             SELECT count(*) FILTER (WHERE status = 'committed'), \
                    pg_get_userbyid(min(c.relowner)) \
               FROM pgkeep.backup_run, pg_class c WHERE c.oid = 'pgkeep.backup_run'::regclass;",
        )
        .await;
    assert_eq!(catalog.trim(), "2|pgkeep_catalog");
    let app = c
        .psql_sql(
            "app",
            "\\pset tuples_only on\n\\pset format unaligned\n\
             SELECT string_agg(column_name, ',' ORDER BY ordinal_position) \
               FROM information_schema.columns WHERE table_name = 'shop_order';",
        )
        .await;
    assert_eq!(app.trim(), "order_id,customer_id,placed_at,total,status");
    let mut timings = String::new();
    let _ = write!(
        timings,
        "{sql} sql and {sh} sh blocks, set-up {set_up:.1?}, slowest line {} {:.1?}, total {:.1?}",
        slowest.1,
        slowest.0,
        t.elapsed()
    );
    eprintln!("database guide: {timings}");
}

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            let base = slug(line.trim_start_matches('#'));
            let mut anchor = base.clone();
            let mut n = 0;
            while !seen.insert(anchor.clone()) {
                n += 1;
                anchor = format!("{base}-{n}");
            }
        }
    }
    seen
}

#[test]
fn links_to_the_database_guide_name_its_sections() {
    let known = anchors(&guide());
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.push(repo().join("README.md"));
    docs.push(repo().join("clients/python/README.md"));
    let mut broken = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("reading a doc");
        let own = doc.ends_with("docs/DATABASE.md");
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let target = &target[..target.find(')').unwrap_or(target.len())];
            let anchor = match target.split_once('#') {
                Some((file, anchor))
                    if file.ends_with("DATABASE.md") || (own && file.is_empty()) =>
                {
                    anchor
                }
                _ => continue,
            };
            if !known.contains(anchor) {
                broken.push(format!("{}: #{anchor}", doc.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to missing sections of docs/DATABASE.md: {broken:#?}"
    );
}

#[test]
fn fence_info_words_keep_quoted_spaces() {
    assert_eq!(
        info_words(r#"sql runnable db=pgkeep expect="Index Scan using x""#),
        ["sql", "runnable", "db=pgkeep", "expect=Index Scan using x"]
    );
    let blocks = runnable_blocks(
        "text\n```sql runnable db=app expect=\"a b\"\nSELECT 1;\n```\n```sql\nnot run\n```\n```sh runnable\necho\n```\n",
    );
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].line, 2);
    assert_eq!(blocks[0].lang, Lang::Sql { db: "app".into() });
    assert_eq!(blocks[0].expect, ["a b"]);
    assert_eq!(blocks[0].text, "SELECT 1;\n");
    assert_eq!(blocks[1].lang, Lang::Sh);
    assert_eq!(slug("Why not `SELECT *`"), "why-not-select-");
    assert_eq!(
        slug("The PostgreSQL container (`container/postgres`)"),
        "the-postgresql-container-containerpostgres"
    );
}
