//! The stable exit statuses, in one place.
//!
//! Scripts depend on these numbers, so they never change meaning. The README's table is written
//! from [`Status::ALL`]; `classify` maps an error chain to the status that names its cause.

use std::io;

/// Why wirechat exited. The discriminant is the process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The conversation ended normally (stdin EOF and peer EOF, the quit word, idle timeout).
    Ok = 0,
    /// An error during the conversation: reset by the peer, an I/O error.
    Failure = 1,
    /// Bad arguments (clap's own status for usage errors).
    Usage = 2,
    /// The address to bind is already in use.
    AddrInUse = 3,
    /// The peer refused the connection: nothing listens there.
    Refused = 4,
    /// The host name could not be resolved.
    UnknownHost = 5,
    /// The operating system denied the operation (a port below 1024 without privileges).
    PermissionDenied = 6,
    /// A connect `--timeout` expired.
    TimedOut = 7,
    /// No route to the host or network.
    Unreachable = 8,
    /// Interrupted by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
    Interrupted = 130,
}

impl Status {
    /// Every status with a one-line description, for the README and `--help`.
    pub const ALL: [(Status, &'static str); 10] = [
        (
            Status::Ok,
            "conversation ended normally (both sides closed, quit word, idle timeout)",
        ),
        (
            Status::Failure,
            "error during the conversation (connection reset, I/O error)",
        ),
        (
            Status::Usage,
            "bad arguments (an address that is not this machine's to listen on, a `--log` path that cannot name a file)",
        ),
        (Status::AddrInUse, "address already in use"),
        (Status::Refused, "connection refused"),
        (Status::UnknownHost, "unknown host"),
        (
            Status::PermissionDenied,
            "permission denied (a port below 1024; live capture without CAP_NET_RAW; a `--log` file that may not be written)",
        ),
        (Status::TimedOut, "connect timed out"),
        (Status::Unreachable, "host or network unreachable"),
        (Status::Interrupted, "interrupted (Ctrl-C, SIGTERM)"),
    ];

    /// The numeric exit status.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The status that names the cause of `err`: the first I/O error in its chain decides.
    pub fn classify(err: &anyhow::Error) -> Status {
        for cause in err.chain() {
            if let Some(t) = cause.downcast_ref::<crate::transport::Error>() {
                if let Some(s) = t.status() {
                    return s;
                }
            }
            if let Some(s) = cause
                .downcast_ref::<crate::room::Error>()
                .and_then(crate::room::Error::status)
            {
                return s;
            }
            if let Some(s) = cause.downcast_ref::<crate::session::Error>() {
                if let Some(s) = s.status() {
                    return s;
                }
            }
            if let Some(io) = cause.downcast_ref::<io::Error>() {
                if let Some(s) = Status::from_io(io.kind()) {
                    return s;
                }
            }
        }
        Status::Failure
    }

    /// The status for an I/O error kind, when that kind has one of its own.
    pub fn from_io(kind: io::ErrorKind) -> Option<Status> {
        use io::ErrorKind as K;
        Some(match kind {
            K::AddrInUse => Status::AddrInUse,
            K::ConnectionRefused => Status::Refused,
            K::PermissionDenied => Status::PermissionDenied,
            K::TimedOut => Status::TimedOut,
            K::HostUnreachable | K::NetworkUnreachable => Status::Unreachable,
            _ => return None,
        })
    }
}

/// Completes on Ctrl-C or SIGTERM, the signals that end wirechat ([`Status::Interrupted`] for a
/// conversation; the room shuts down in order and exits 0).
pub async fn interrupted() {
    Interrupts::new().next().await;
}

/// Completes on Ctrl-C, SIGTERM, or SIGHUP (the terminal or ssh session that started wirechat
/// went away): what ends a server. A SIGHUP that was ignored when wirechat started (`nohup`)
/// stays ignored.
pub async fn interrupted_or_hung_up() {
    Interrupts::with_hangup().next().await;
}

/// True if SIGHUP is ignored, as `nohup` leaves it: the `SigIgn` mask in /proc/self/status
/// (reading it needs no unsafe code, unlike asking sigaction).
#[cfg(target_os = "linux")]
fn hangup_ignored() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGHUP - 1)) != 0)
}

/// How long a conversation has, after Ctrl-C or SIGTERM, to end in order before
/// [`watch_interrupts`] ends the process itself.
pub const INTERRUPT_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Signals this soon after the first are the same interrupt: `timeout(1)` delivers its signal
/// twice (to the child and to its process group), microseconds apart, while a person pressing
/// Ctrl-C twice takes longer.
pub const SAME_INTERRUPT: std::time::Duration = std::time::Duration::from_millis(200);

/// What must still happen when [`watch_interrupts`] ends the process itself: files to complete
/// (a capture's `--write` file), whatever the stuck thread was doing.
static FORCED_EXIT: std::sync::Mutex<Vec<Box<dyn FnOnce() + Send>>> =
    std::sync::Mutex::new(Vec::new());

/// Runs `f` if the process is ended by [`watch_interrupts`] after the grace time, before it
/// exits. `f` must not wait long for the stuck thread: it runs while that thread is stuck.
pub fn on_forced_exit(f: impl FnOnce() + Send + 'static) {
    FORCED_EXIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Box::new(f));
}

fn run_forced_exit_hooks() {
    let hooks = std::mem::take(
        &mut *FORCED_EXIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for hook in hooks {
        hook();
    }
}

/// Watches for Ctrl-C and SIGTERM on a thread of its own, so that they work even when the
/// thread running the conversation is stuck (writing to a stderr nobody reads, or a bug that
/// never yields). The returned future completes at the first signal; the caller then ends in
/// order. If the process is still running [`INTERRUPT_GRACE`] later, or at a second signal,
/// the watching thread runs the [`on_forced_exit`] hooks, calls `before_exit` (put the
/// terminal back) and exits with
/// [`Status::Interrupted`] itself, writing nothing (stderr may be what is stuck). A signal
/// within [`SAME_INTERRUPT`] of the first is the same interrupt, not a second one.
pub fn watch_interrupts(
    before_exit: impl FnOnce() + Send + 'static,
) -> impl Future<Output = ()> + Send {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let watching = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                // Dropping `tx` hands the signals back to the caller's runtime.
                return;
            };
            rt.block_on(async {
                let mut signals = Interrupts::new();
                signals.next().await;
                let first = tokio::time::Instant::now();
                let _ = tx.send(());
                let end = first + INTERRUPT_GRACE;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(end) => break,
                        () = signals.next() => {
                            // The same interrupt delivered twice (`timeout` sends its signal
                            // to the child and to its process group) is not a second one.
                            if first.elapsed() >= SAME_INTERRUPT {
                                break;
                            }
                        }
                    }
                }
            });
            run_forced_exit_hooks();
            before_exit();
            std::process::exit(Status::Interrupted.code());
        })
        .is_ok();
    async move {
        if !watching || rx.await.is_err() {
            interrupted().await;
        }
    }
}

/// Ctrl-C and SIGTERM (and SIGHUP, for a server), registered once so that a second one is
/// seen too.
struct Interrupts {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Interrupts {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
                hup: None,
            }
        }
        #[cfg(not(unix))]
        Interrupts {}
    }

    /// With SIGHUP too, unless it was ignored at start-up (Linux only: see [`hangup_ignored`]).
    fn with_hangup() -> Self {
        #[allow(unused_mut)]
        let mut signals = Interrupts::new();
        #[cfg(target_os = "linux")]
        if !hangup_ignored() {
            use tokio::signal::unix::{SignalKind, signal};
            signals.hup = signal(SignalKind::hangup()).ok();
        }
        signals
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = one(&mut self.int) => {}
                () = one(&mut self.term) => {}
                () = one(&mut self.hup) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statuses of errors whose I/O error is part of the message rather than the source.
    #[cfg(unix)]
    #[test]
    fn errors_that_describe_their_cause_still_name_the_status() {
        let os = |e: nix::errno::Errno| io::Error::from_raw_os_error(e as i32);
        let socket = crate::session::Error::Socket(os(nix::errno::Errno::EHOSTUNREACH));
        assert_eq!(
            Status::classify(&anyhow::Error::new(socket).context("sending")),
            Status::Unreachable
        );
        let listen = crate::room::Error::Listen(crate::transport::Error::Bind {
            what: "listen on",
            addr: ([127, 0, 0, 1], 9).into(),
            error: os(nix::errno::Errno::EADDRINUSE),
        });
        assert_eq!(
            Status::classify(&anyhow::Error::new(listen)),
            Status::AddrInUse
        );
    }

    /// The README's table of exit statuses is this table.
    #[test]
    fn readme_lists_every_status() {
        let readme = include_str!("../README.md");
        for (status, what) in Status::ALL {
            let row = format!("| {} | {} |", status.code(), what);
            assert!(readme.contains(&row), "README lacks {row:?}");
        }
    }
}
