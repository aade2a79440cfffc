//! The progress line: drawn on stderr when it is a terminal (a pseudo-terminal from `script`),
//! or with `--progress always`; never in piped output by default, nor with `--progress never`.

use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::cluster;

/// What erases the line before each redraw.
const ERASE: &str = "\r\x1b[2K";

/// Runs `pgkeep ARGS` on a pseudo-terminal; returns its exit code and everything it wrote.
async fn on_a_terminal(p: &Pgkeep, args: &[&str]) -> (i32, String) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut line = format!(
        "{} --config {}",
        quote(env!("CARGO_BIN_EXE_pgkeep")),
        quote(p.config_path().to_str().unwrap())
    );
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qefc", &line, "/dev/null"])
        .current_dir(p.dir.path())
        .env("HOME", p.dir.path())
        .env("PGKEEP_LOG", "pgkeep=info");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    let out = tokio::time::timeout(std::time::Duration::from_mins(2), cmd.output())
        .await
        .expect("no hang")
        .expect("running script");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The phases a progress line of a restore may show.
fn shows_progress(output: &str) -> bool {
    output.split(ERASE).skip(1).any(|drawn| {
        [
            "schema",
            "load",
            "indexes and keys",
            "analyze",
            "swap",
            "verify",
        ]
        .iter()
        .any(|phase| drawn.starts_with(&format!("{phase} · ")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_shows_on_a_terminal_and_not_in_pipes() {
    let c = cluster();
    let db = c.pagila_db("progress_src").await;
    let p = Pgkeep::configured(|store| {
        Toml::local(store)
            .job("main", "export", &c.url(&db))
            .set("globals", false)
    });
    let id = p.backup_ok().await;

    // A terminal: the restore draws its phase, tables and bytes, and erases the line at the end.
    let target = c.unique_name("progress_tty");
    let (code, output) = on_a_terminal(
        &p,
        &["restore", &id, "--target", &c.url(&target), "--create"],
    )
    .await;
    assert_eq!(code, 0, "{output}");
    assert!(shows_progress(&output), "no progress line:\n{output:?}");
    assert!(output.contains(" · tables "), "{output:?}");
    let (code, output) = on_a_terminal(&p, &["verify", &id]).await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("verify · objects "), "{output:?}");
    // What verify prints goes above the progress line, never after its text on the same line.
    let printed: Vec<&str> = output
        .lines()
        .flat_map(|l| l.split(ERASE))
        .filter(|segment| segment.contains("verified ") || segment.contains("backup "))
        .collect();
    assert!(!printed.is_empty(), "{output:?}");
    for segment in printed {
        assert!(
            segment.starts_with("verified ")
                || segment.starts_with("backup ")
                || segment.contains(" INFO ")
                || segment.contains(" WARN "),
            "{segment:?} in {output:?}"
        );
    }

    // --progress never on a terminal: nothing drawn.
    let target = c.unique_name("progress_never");
    let (code, output) = on_a_terminal(
        &p,
        &[
            "--progress",
            "never",
            "restore",
            &id,
            "--target",
            &c.url(&target),
            "--create",
        ],
    )
    .await;
    assert_eq!(code, 0, "{output}");
    assert!(!output.contains(ERASE), "{output:?}");

    // Piped (the default): stderr holds the log only; --progress always draws anyway.
    let target = c.unique_name("progress_pipe");
    let r = p
        .run(&["restore", &id, "--target", &c.url(&target), "--create"])
        .await
        .expect_code(0);
    assert!(!r.stderr.contains(ERASE), "{}", r.stderr);
    let target = c.unique_name("progress_always");
    let r = p
        .run(&[
            "--progress",
            "always",
            "restore",
            &id,
            "--target",
            &c.url(&target),
            "--create",
        ])
        .await
        .expect_code(0);
    assert!(shows_progress(&r.stderr), "{:?}", r.stderr);
}
