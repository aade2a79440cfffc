//! The `pgkeep` command line: parses arguments, sets up logging, runs one command, maps errors to exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, LogFormat};
use pgkeep::commands;
use pgkeep::restore::RestoreOptions;

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
        } => {
            let options = RestoreOptions {
                target,
                jobs,
                clean,
                create,
                no_owner,
                staging_dir: None,
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
