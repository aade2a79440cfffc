//! The `pgkeep` command line: parses arguments, sets up logging, runs one command, maps errors to exit codes.

mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{CatalogCommand, Cli, Command, LogFormat};
use pgkeep::commands::{self, PlanFormat};
use pgkeep::error::{Cancel, Stop, report_anyhow};
use pgkeep::restore::{RestoreOptions, RolesOptions, SchemaFrom};

fn main() -> ExitCode {
    pgkeep::malloc::tune();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cancel = Cancel::new();
    match runtime.block_on(run(cli, &cancel)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report_anyhow(&e));
            let code = match cancel.signal() {
                Some(signal) => 128 + signal,
                None => pgkeep::exit_code(&e),
            };
            ExitCode::from(code as u8)
        }
    }
}

/// SIGINT and SIGTERM stop the command cleanly: `cancel` fires, the command undoes what it
/// started (uploads aborted, the run's objects or the unfinished restore removed) and fails;
/// a second signal exits at once.
fn stop_on_signals(cancel: &Cancel) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let cancel = cancel.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let signal = tokio::select! {
                _ = term.recv() => 15,
                _ = int.recv() => 2,
            };
            if !first {
                eprintln!("error: stopped by a second signal before cleaning up");
                std::process::exit(128 + signal);
            }
            first = false;
            let _ = writeln!(
                pgkeep::progress::display::Above(std::io::stderr()),
                "stopping: undoing what was started (a second Ctrl-C exits at once)"
            );
            cancel.cancel(Stop::Signal(signal));
        }
    });
}

async fn run(cli: Cli, cancel: &Cancel) -> anyhow::Result<()> {
    // `migrate` names its database on the command line and needs no configuration file.
    if let Command::Migrate {
        database,
        dir,
        target_version,
        table,
    } = &cli.command
    {
        let out =
            commands::migrate(database, dir.as_deref(), *target_version, table.as_deref()).await?;
        print!("{out}");
        return Ok(());
    }
    let config = pgkeep::config::load(cli.config.as_deref())?;
    if matches!(
        cli.command,
        Command::Backup { .. }
            | Command::Restore { .. }
            | Command::Verify { .. }
            | Command::Drill { .. }
    ) {
        stop_on_signals(cancel);
    }
    let mut progress = match cli.command {
        Command::Backup { .. }
        | Command::Restore { .. }
        | Command::Verify { .. }
        | Command::Drill { .. } => {
            use pgkeep::progress::display::{Mode, start};
            start(match cli.progress {
                cli::ProgressArg::Never => Mode::Never,
                cli::ProgressArg::Auto => Mode::Auto,
                cli::ProgressArg::Always => Mode::Always,
            })
        }
        _ => None,
    };
    match cli.command {
        Command::Backup { job } => {
            let m = commands::backup(&config, job.as_deref(), cancel).await?;
            drop(progress.take());
            println!(
                "backup {} of job '{}' committed: {} in {:.1}s",
                m.id,
                m.job,
                pgkeep::human::bytes(m.stored_bytes()),
                pgkeep::human::seconds_between(m.started_at, m.finished_at)
            );
            println!("{}", m.id);
        }
        Command::List { job, json, verify } => {
            print!(
                "{}",
                commands::list(&config, job.as_deref(), json, verify).await?
            );
        }
        Command::Show {
            backup,
            job,
            json,
            globals,
            identity,
        } => {
            if globals {
                let sql =
                    commands::show_globals(&config, job.as_deref(), &backup, &identity).await?;
                print!("{sql}");
            } else {
                print!(
                    "{}",
                    commands::show(&config, job.as_deref(), &backup, json).await?
                );
            }
        }
        Command::Restore {
            backup,
            job,
            target,
            jobs,
            clean,
            create,
            in_place,
            keep_old,
            dry_run,
            json,
            no_owner,
            schema_from,
            tables,
            allow_drift,
            database,
            identity,
            globals_only,
            update_roles,
            role_passwords,
        } => {
            if globals_only {
                let options = RolesOptions {
                    target,
                    update_existing: update_roles,
                    passwords: role_passwords,
                    dry_run,
                };
                let out = commands::restore_roles(
                    &config,
                    job.as_deref(),
                    &backup,
                    &options,
                    &identity,
                    cancel,
                )
                .await?;
                drop(progress.take());
                print!("{out}");
                return Ok(());
            }
            let options = RestoreOptions {
                target,
                jobs,
                clean,
                create,
                no_owner,
                in_place,
                keep_old,
                staging_dir: None,
                schema_from: schema_from.map(|s| match s {
                    cli::SchemaFromArg::Dump => SchemaFrom::Dump,
                    cli::SchemaFromArg::Migrations => SchemaFrom::Migrations,
                }),
                migrations: None,
                pg_bin_dir: None,
                tables,
                allow_drift,
                database,
            };
            let restored = commands::restore(
                &config,
                job.as_deref(),
                &backup,
                options,
                &identity,
                dry_run.then_some(if json {
                    PlanFormat::Json
                } else {
                    PlanFormat::Text
                }),
                cancel,
            )
            .await?;
            drop(progress.take());
            match restored {
                Ok(r) => println!(
                    "restored backup {} of job '{}' into database '{}': {} of data in {:.1}s; {}",
                    r.backup,
                    r.job,
                    r.database,
                    pgkeep::human::bytes(r.raw_bytes),
                    r.duration.as_secs_f64(),
                    r.previous
                ),
                Err(plan) => print!("{plan}"),
            }
        }
        Command::Verify {
            backup,
            all,
            job,
            identity,
        } => {
            let mut out = pgkeep::progress::display::Above(std::io::stdout());
            commands::verify(
                &config,
                job.as_deref(),
                backup.as_deref(),
                all,
                &identity,
                &mut out,
                cancel,
            )
            .await?;
        }
        Command::Drill {
            job,
            backup,
            target,
            jobs,
            no_owner,
            schema_from,
            identity,
        } => {
            let options = pgkeep::drill::DrillOptions {
                server: target,
                password_file: None,
                jobs,
                no_owner,
                staging_dir: None,
                schema_from: schema_from.map(|s| match s {
                    cli::SchemaFromArg::Dump => SchemaFrom::Dump,
                    cli::SchemaFromArg::Migrations => SchemaFrom::Migrations,
                }),
                migrations: None,
                pg_bin_dir: None,
            };
            let report =
                commands::drill(&config, job.as_deref(), &backup, options, &identity, cancel)
                    .await?;
            drop(progress.take());
            print!("{}", commands::drill_summary(&report));
        }
        Command::Prune { job, dry_run } => {
            let mut out = std::io::stdout();
            commands::prune(&config, job.as_deref(), dry_run, &mut out).await?;
        }
        Command::Catalog {
            command: CatalogCommand::Sync,
        } => {
            print!("{}", commands::catalog_sync(&config).await?);
        }
        Command::Run => pgkeep::daemon::run(config).await?,
        Command::Check => {
            let report = pgkeep::check::run(&config).await;
            print!("{}", report.render());
            let failed = report.failures();
            if failed > 0 {
                anyhow::bail!("{failed} of {} checks failed", report.checks.len());
            }
        }
        Command::Migrate { .. } => unreachable!("handled before the configuration is loaded"),
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PGKEEP_LOG")
        .unwrap_or_else(|_| EnvFilter::new("pgkeep=info,warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(pgkeep::progress::display::LogWriter)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
