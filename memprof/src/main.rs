//! The memprof command: configuration, logging, and the daemon's exit codes
//! (0 clean shutdown, 1 runtime failure, 2 bad configuration).
use memprof::{
    commands,
    config::{self, Command},
    daemon,
};

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match config::Args::try_parse() {
        Ok(a) => a,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.render().to_string();
            eprintln!(
                "memprof: {}",
                text.lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let cfg = match config::Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("memprof: {e}");
            return ExitCode::from(2);
        }
    };
    // The daemon logs to stdout as it always did; the commands keep stdout for their output.
    let (default_level, to_stderr) = match cfg.command {
        None => ("info", false),
        Some(Command::Capture { .. }) => ("info", true),
        Some(Command::Top { .. } | Command::Doctor { .. } | Command::Report(_)) => ("warn", true),
    };
    let json = cfg.log_format == config::LogFormat::Json;
    memprof::logs::init(default_level, to_stderr, json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("memprof: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let is_daemon = cfg.command.is_none();
    let result = rt.block_on(async {
        let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
        match cfg.command.clone() {
            None => done(daemon::run(cfg).await),
            Some(Command::Capture { pid }) => done(commands::capture::run(&cfg, pid).await),
            Some(Command::Top {
                interval_ms,
                iterations,
            }) => {
                let every = std::time::Duration::from_millis(interval_ms.max(100));
                done(commands::top::run(&cfg, every, iterations).await)
            }
            // Its own exit code: 1 when a check failed.
            Some(Command::Doctor { pid }) => Ok(commands::doctor::run(&cfg, pid).await),
            Some(Command::Report(args)) => commands::report::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) if is_daemon => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("memprof: {e:#}");
            ExitCode::from(1)
        }
    }
}
