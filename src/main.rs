//! The `wirechat` executable: parse arguments, set up logging on stderr, run, and turn the
//! outcome into one of the stable exit statuses of `wirechat::exit`.

use clap::Parser;
use std::io::Write;
use wirechat::Status;
use wirechat::cli::{Cli, Command};
use wirechat::session::terminal::TtyGuard;

fn main() {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "wirechat=debug",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .init();
    // The room shuts down in order on Ctrl-C/SIGTERM and exits 0; it listens for them itself.
    let own_signals = matches!(cli.command, Command::Room(_));
    let tty = TtyGuard::save();
    let status = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(async {
            tokio::select! {
                r = wirechat::run(cli) => match r {
                    Ok(()) => Status::Ok,
                    Err(e) => {
                        eprintln!("wirechat: error: {e:#}");
                        Status::classify(&e)
                    }
                },
                () = interrupted(), if !own_signals => Status::Interrupted,
            }
        }),
        Err(e) => {
            eprintln!("wirechat: error: cannot start the runtime: {e}");
            Status::Failure
        }
    };
    tty.restore();
    let _ = std::io::stdout().flush();
    // Exit without waiting for threads blocked on stdin (the runtime would wait for them).
    std::process::exit(status.code());
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
