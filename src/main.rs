//! The `pgkeep` command line: parses arguments, sets up logging, runs one command, maps errors to exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{CatalogCommand, Cli, Command, LogFormat};
use pgkeep::commands;
use pgkeep::restore::{RestoreOptions, SchemaFrom};

fn main() -> ExitCode {
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(pgkeep::exit_code(&e) as u8)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // `migrate` names its database on the command line and needs no configuration file.
    if let Command::Migrate {
        database,
        dir,
        target_version,
        table,
    } = &cli.command
    {
        let out =
            pgkeep::migrate::command(database, dir.as_deref(), *target_version, table.as_deref())
                .await?;
        print!("{out}");
        return Ok(());
    }
    let config = pgkeep::config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Backup { job } => {
            let m = commands::backup(&config, job.as_deref()).await?;
            println!(
                "backup {} of job '{}' committed: {} in {:.1}s",
                m.id,
                m.job,
                commands::human_bytes(m.stored_bytes()),
                (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0
            );
            println!("{}", m.id);
        }
        Command::List { job, json } => {
            print!("{}", commands::list(&config, job.as_deref(), json).await?);
        }
        Command::Show { backup, job, json } => {
            print!(
                "{}",
                commands::show(&config, job.as_deref(), &backup, json).await?
            );
        }
        Command::Restore {
            backup,
            job,
            target,
            jobs,
            clean,
            create,
            no_owner,
            schema_from,
            tables,
            allow_drift,
        } => {
            let options = RestoreOptions {
                target,
                jobs,
                clean,
                create,
                no_owner,
                staging_dir: None,
                schema_from: schema_from.map(|s| match s {
                    cli::SchemaFromArg::Dump => SchemaFrom::Dump,
                    cli::SchemaFromArg::Migrations => SchemaFrom::Migrations,
                }),
                migrations: None,
                tables,
                allow_drift,
            };
            let r = commands::restore(&config, job.as_deref(), &backup, options).await?;
            println!(
                "restored backup {} of job '{}' into database '{}': {} of dump data in {:.1}s",
                r.backup,
                r.job,
                r.database,
                commands::human_bytes(r.raw_bytes),
                r.duration.as_secs_f64()
            );
        }
        Command::Verify { backup, all, job } => {
            let mut out = std::io::stdout();
            commands::verify(&config, job.as_deref(), backup.as_deref(), all, &mut out).await?;
        }
        Command::Prune { job, dry_run } => {
            let mut out = std::io::stdout();
            commands::prune(&config, job.as_deref(), dry_run, &mut out).await?;
        }
        Command::Catalog {
            command: CatalogCommand::Sync,
        } => {
            print!("{}", pgkeep::catalog::sync_command(&config).await?);
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
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
