//! The `wirechat` executable: parse arguments, set up logging on stderr, run, and turn the
//! outcome into one of the stable exit statuses of `wirechat::exit`.

use std::io::Write;
use wirechat::Status;
use wirechat::cli::{Cli, Command};
use wirechat::session::terminal::TtyGuard;

fn main() {
    let cli = match Cli::parse_checked() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    let filter = match cli.verbose {
        0 => "warn",
        1 => "wirechat=debug",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .init();
    // The room shuts down in order on Ctrl-C/SIGTERM and exits 0; it listens for them itself.
    let own_signals = matches!(cli.command, Command::Room(_));
    let tty = TtyGuard::save();
    let stdio = wirechat::session::terminal::BlockingStdio::take();
    // Also when the signal watcher ends the process itself (a second Ctrl-C).
    let forced = stdio.clone();
    wirechat::exit::on_forced_exit(move || forced.restore());
    // Signals are watched on a thread of their own, which ends the process if the
    // conversation does not end in time (see exit::watch_interrupts).
    let interrupted = (!own_signals).then(|| {
        let saved = tty.clone();
        wirechat::exit::watch_interrupts(move || saved.restore(None))
    });
    // A conversation is one task: a single-threaded runtime wakes it without cross-thread hops.
    // (The room builds a runtime of its own with a worker per core; see room::serve.)
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    // The error that ends wirechat is shown with the line editor's last output (see
    // flush_editor_output), so that it starts a line of its own.
    let (status, error) = match runtime {
        Ok(rt) => {
            let ended = rt.block_on(async {
                tokio::select! {
                    r = wirechat::run(cli) => match r {
                        Ok(()) => (Status::Ok, None),
                        Err(e) => (Status::classify(&e), Some(format!("wirechat: error: {e:#}"))),
                    },
                    () = async {
                        match interrupted {
                            Some(signal) => signal.await,
                            None => std::future::pending().await,
                        }
                    } => (Status::Interrupted, None),
                }
            });
            // Do not wait for threads still blocked reading stdin: the conversation is over.
            rt.shutdown_background();
            ended
        }
        Err(e) => (
            Status::Failure,
            Some(format!("wirechat: error: cannot start the runtime: {e}")),
        ),
    };
    wirechat::session::terminal::flush_editor_output(std::time::Duration::from_secs(1), error);
    let mut screen = wirechat::session::terminal::silence_editor();
    tty.restore(screen.as_mut());
    let _ = std::io::stdout().flush();
    stdio.restore();
    // Exit without waiting for threads blocked on stdin (the runtime would wait for them).
    std::process::exit(status.code());
}

/// Help and version go out as clap prints them; a usage error is one line and status 2.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // clap's first paragraph, on one line: the error and what it names on the lines below it
    // (the missing arguments, the possible values); the usage and tips after it are left out.
    let text = e.to_string();
    let mut lines = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim);
    let first = lines.next().unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let rest: Vec<&str> = lines.collect();
    let line = match (rest.is_empty(), first.ends_with(':')) {
        (true, _) => first.to_string(),
        (false, true) => format!("{first} {}", rest.join(", ")),
        (false, false) => format!("{first} {}", rest.join(" ")),
    };
    say(format_args!("wirechat: error: {line} (see --help)"));
    std::process::exit(Status::Usage.code());
}

/// One line on stderr; a closed stderr is no reason to panic.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
