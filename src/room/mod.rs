//! `wirechat room`: a chat room over plain TCP for any line-based client (wirechat, nc, telnet,
//! a Python socket, a GUI network assistant).
//!
//! - [`server`]: the listener task. Accepts with a large backlog, caps connections with a
//!   semaphore (a client over the cap is told the room is full), backs off on accept errors.
//! - [`client`]: one task per connection. Takes telnet commands out of what the client sends,
//!   reads bounded lines (a message without a line end is a line after a short pause), decodes
//!   them with the client's encoding, applies the rate limit and idle timeout, parses commands;
//!   takes over writing while the client's socket is full, and writes its last lines when it
//!   leaves.
//! - [`state`]: members by nickname; a line for everyone is appended once to a shared log, a
//!   line for one member is queued on it; a member too far behind that is not reading is cut
//!   off.
//! - [`outbox`]: the log, each member's cursor into it, and the flushers that write every
//!   member's backlog in one gather write per pass (one flusher per worker thread).
//! - [`commands`]: the slash commands and the nickname rules.
//! - [`limits`]: the token bucket and the open-files limit.
//! - [`transcript`]: the `--log` file, written by a thread of its own behind a bounded queue, so
//!   a file that does not keep up never stalls the chat; it survives a full disk.
//!
//! Shutdown: one `CancellationToken` is seen by every task. On Ctrl-C, SIGTERM or SIGHUP everyone is
//! sent `* server shutting down`, the writers drain, and the transcript is written out last
//! (within [`transcript::CLOSE_GRACE`]: a stuck file does not keep the room from exiting).

pub mod client;
pub mod commands;
pub mod limits;
pub mod outbox;
pub mod server;
pub mod state;
pub mod transcript;

use crate::session::Event;
use crate::transport::{self, HostPort, display_addr};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use state::Room;
pub use transcript::Transcript;

/// What can stop the room from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be opened.
    #[error(transparent)]
    Listen(#[from] transport::Error),
    /// The `--log` file could not be opened for appending. The reason is put in words, with
    /// what to do, in the message itself (not as a source, whose OS text would follow it).
    #[error("cannot open the log {}: {}", .path.display(), describe_log_error(.path, .error))]
    Log {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A setting is out of range (a usage error).
    #[error("{0}")]
    Setting(String),
    /// The room could not start (no thread, no runtime).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The exit status that names the cause, when it has one of its own.
    pub fn status(&self) -> Option<crate::exit::Status> {
        use crate::exit::Status;
        use std::io::ErrorKind as K;
        match self {
            Error::Listen(e) => e.status(),
            Error::Setting(_) => Some(Status::Usage),
            Error::Log { error, .. } => match error.kind() {
                // The path cannot name a file: a bad argument, like a bad setting, and the
                // room never started.
                K::IsADirectory | K::NotFound | K::NotADirectory => Some(Status::Usage),
                #[cfg(unix)]
                _ if error.raw_os_error() == Some(nix::errno::Errno::ENAMETOOLONG as i32) => {
                    Some(Status::Usage)
                }
                // Not allowed to write there, like a port that needs privileges.
                K::ReadOnlyFilesystem => Some(Status::PermissionDenied),
                kind => Status::from_io(kind),
            },
            Error::Config(_) => None,
        }
    }
}

/// Why the `--log` file `path` could not be opened, in words (as [`transport::describe`] puts
/// them), with what to do where that is clear.
fn describe_log_error(path: &Path, error: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    // The directory the file would be created in, when it is named.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    match error.kind() {
        K::IsADirectory => "is a directory (give a file name)".into(),
        // With create(true), a missing file is created: it is the directory that is missing
        // (unless the path is a dangling symbolic link into one).
        K::NotFound => match dir {
            Some(dir) if !dir.is_dir() => {
                format!("no such directory (create {} first)", dir.display())
            }
            _ => transport::describe(error),
        },
        K::NotADirectory => "a part of the path is a file, not a directory".into(),
        K::PermissionDenied => {
            "permission denied (give a file you may write, in a directory you may write to)".into()
        }
        K::ReadOnlyFilesystem => "read-only file system (give a file elsewhere)".into(),
        _ => transport::describe(error),
    }
}

/// `n` and `noun`, which takes an s unless `n` is 1: "1 line", "2 lines", "0.5 lines".
pub(crate) fn count<N: fmt::Display + PartialEq + From<u8>>(n: N, noun: &str) -> String {
    let s = if n == N::from(1) { "" } else { "s" };
    format!("{n} {noun}{s}")
}

/// The largest `--max-clients`: far above what one machine's descriptors allow, and within what
/// the connection cap (a semaphore) can count.
pub const MAX_CLIENTS: usize = 100_000_000;

/// The largest `--history`: a joiner is sent at most this many lines first.
pub const MAX_HISTORY: usize = 10_000;

/// The smallest `--rate` other than 0 (off): one line in 1,000 seconds.
pub const MIN_RATE: f64 = 0.001;

/// The largest `--max-line`: each client may hold this much of an unfinished line.
pub const MAX_LINE: usize = 1 << 20;

/// How the room behaves; the command line fills it in.
#[derive(Clone, Debug)]
pub struct Config {
    /// Connections served at once; one more is told the room is full.
    pub max_clients: usize,
    /// The longest line a client may send, in bytes on the wire (without the newline).
    pub max_line: usize,
    /// Lines a second per client on average and the burst allowed; `None` for no limit.
    pub rate: Option<(f64, u32)>,
    /// A client that sends nothing for this long is disconnected.
    pub idle_timeout: Option<Duration>,
    /// Chat lines kept and sent to each joiner.
    pub history: usize,
    /// Each client's wire encoding until it picks another with /encoding.
    pub encoding: crate::codec::Encoding,
    /// Transcript file, appended to.
    pub log: Option<PathBuf>,
    /// Lines a client may fall behind while its socket is full (it is not reading) before it
    /// is cut off. The lines are kept once for everyone, not per client.
    pub queue: usize,
    /// Bytes a client may fall behind likewise: with `queue` this bounds the shared log.
    pub queue_bytes: u64,
    /// Joins and leaves are announced while the room has at most this many members.
    pub announce_max: usize,
    /// Flusher tasks writing to clients (each serves a share of them).
    pub flushers: usize,
    /// How long writers may take to deliver their last lines at shutdown.
    pub grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_clients: 10_000,
            max_line: 4096,
            rate: Some((20.0, 40)),
            idle_timeout: None,
            history: 0,
            encoding: crate::codec::Encoding::UTF8,
            log: None,
            queue: 16_384,
            queue_bytes: 16 << 20,
            announce_max: 1000,
            flushers: 1,
            grace: Duration::from_secs(2),
        }
    }
}

impl Config {
    fn check(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Setting(m.to_string()));
        if self.max_clients == 0 {
            return bad("--max-clients must be at least 1");
        }
        if self.max_clients > MAX_CLIENTS {
            return bad(&format!("--max-clients must be at most {MAX_CLIENTS}"));
        }
        if self.max_line < 16 {
            return bad("--max-line must be at least 16 bytes");
        }
        if self.max_line > MAX_LINE {
            return bad(&format!("--max-line must be at most {MAX_LINE} bytes"));
        }
        if self.history > MAX_HISTORY {
            return bad(&format!("--history must be at most {MAX_HISTORY} lines"));
        }
        if self.queue < 16 {
            return bad("--queue must be at least 16 lines");
        }
        if let Some((rate, _)) = self.rate {
            if !rate.is_finite() {
                return bad("--rate must be a number of lines a second (0 turns the limit off)");
            }
            if rate < MIN_RATE {
                return bad("--rate must be at least 0.001 lines a second (0 turns the limit off)");
            }
        }
        Ok(())
    }
}

/// Something the server's operator should know, printed on stderr.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomEvent {
    /// The room is open on this address.
    Listening(SocketAddr),
    /// The open-files limit allows fewer connections than `--max-clients`.
    FileLimit { hard: u64, max_clients: usize },
    /// A client joined.
    Joined { nick: String, peer: SocketAddr },
    /// A client left.
    Left { nick: String, reason: String },
    /// A client changed its nickname.
    Renamed { old: String, new: String },
    /// A connection was turned away.
    Refused { peer: SocketAddr, reason: String },
    /// Something went wrong but the room goes on.
    Warning(String),
    /// Shutdown began.
    ShuttingDown,
    /// Shutdown is complete.
    Closed,
}

impl fmt::Display for RoomEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomEvent::Listening(addr) => Event::Listening {
                addr: *addr,
                proto: "tcp",
            }
            .fmt(f),
            RoomEvent::FileLimit { hard, max_clients } => write!(
                f,
                "warning: the open-files limit is {hard}, so fewer than --max-clients {max_clients} \
                 can connect (raise it with ulimit -n)"
            ),
            RoomEvent::Joined { nick, peer } => {
                write!(f, "{nick} joined from {}", display_addr(*peer))
            }
            RoomEvent::Left { nick, reason } => write!(f, "{nick} left ({reason})"),
            RoomEvent::Renamed { old, new } => write!(f, "{old} is now {new}"),
            RoomEvent::Refused { peer, reason } => {
                write!(f, "refused {}: {reason}", display_addr(*peer))
            }
            RoomEvent::Warning(w) => write!(f, "warning: {w}"),
            RoomEvent::ShuttingDown => write!(f, "shutting down"),
            RoomEvent::Closed => write!(f, "closed"),
        }
    }
}

/// Where room events go: the conversation's event sink, carrying room events.
pub type EventSink = crate::session::Events<RoomEvent>;

impl RoomEvent {
    /// Shown even with `--quiet`: the listening line and warnings.
    fn shown_when_quiet(&self) -> bool {
        matches!(
            self,
            RoomEvent::Listening(_) | RoomEvent::Warning(_) | RoomEvent::FileLimit { .. }
        )
    }
}

/// Opens the room on `addr` and serves it until Ctrl-C, SIGTERM or SIGHUP: the command line's entry.
///
/// The room runs on a runtime of its own with `threads` workers (0: one per core) and as many
/// flushers. One worker (a current-thread runtime) avoids cross-thread wake-ups and work
/// stealing; on the 2-core benchmark machine, where the clients take the other core, it gave
/// the lowest latency at 1,000 and 10,000 clients (bench/RESULTS.md).
pub async fn serve(
    addr: &HostPort,
    mut config: Config,
    quiet: bool,
    threads: usize,
) -> Result<(), Error> {
    config.check()?;
    config.flushers = match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let addr = addr.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("room".into())
        .spawn(move || {
            let rt = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                if threads > 1 {
                    b.worker_threads(threads);
                }
                b.enable_all().build()
            };
            let result = match rt {
                Ok(rt) => rt.block_on(serve_here(&addr, config, quiet)),
                Err(e) => Err(Error::Config(format!("cannot start the runtime: {e}"))),
            };
            let _ = tx.send(result);
        })
        .map_err(|e| Error::Config(format!("cannot start the room's thread: {e}")))?;
    rx.await
        .unwrap_or_else(|_| Err(Error::Config("the room's thread ended early".into())))
}

async fn serve_here(addr: &HostPort, config: Config, quiet: bool) -> Result<(), Error> {
    // Written by a thread of their own: a stderr nobody reads must not stop the room.
    let (events, drain) = EventSink::stderr_detached(quiet, RoomEvent::shown_when_quiet);
    let result = serve_with(addr, config, events).await;
    drain.wait(Duration::from_secs(1));
    result
}

async fn serve_with(addr: &HostPort, config: Config, events: EventSink) -> Result<(), Error> {
    if let Some(limit) = limits::raise_file_limit() {
        let needed = (config.max_clients as u64).saturating_add(limits::SPARE_FILES);
        if limit.soft < needed {
            events.emit(RoomEvent::FileLimit {
                hard: limit.hard,
                max_clients: config.max_clients,
            });
        }
    }
    let listener = transport::tcp_listen(addr).await?;
    // Read by a thread that leaves the terminal alone while the room is in the background
    // (`wirechat room 8080 &`): the keyboard is the room's after `fg`.
    let stdin = crate::session::terminal::stdin_reader(false)
        .map_err(|e| Error::Config(format!("cannot start the stdin thread: {e}")))?;
    run(
        listener,
        config,
        Some(stdin),
        events,
        crate::exit::interrupted_or_hung_up(),
    )
    .await
}

/// Opens the `--log` file `path` and starts its writer, which warns the operator through
/// `events`.
fn start_transcript(path: &Path, events: &EventSink) -> Result<Transcript, Error> {
    let opened = transcript::open(path).map_err(|error| Error::Log {
        path: path.to_path_buf(),
        error,
    })?;
    if opened.waits_for_reader {
        events.emit(RoomEvent::Warning(format!(
            "the log {} is a FIFO that nobody reads yet: lines wait for a reader",
            path.display()
        )));
    }
    // Told as it happens (a failure, lines dropped, a recovery): the sink never waits.
    let events = events.clone();
    let report = move |news: transcript::News| {
        events.emit(RoomEvent::Warning(news.to_string()));
    };
    Transcript::start(opened.out, opened.at_line_start, report)
        .map_err(|e| Error::Config(format!("cannot start the transcript's thread: {e}")))
}

/// Serves the room on `listener` until `shutdown` completes, then closes it in order: everyone
/// is told, queued lines are delivered (within `Config::grace`), and the transcript is written
/// out (within [`transcript::CLOSE_GRACE`]).
/// `input` is the operator's keyboard: each line goes to everyone as `<server> text`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    input: Option<impl AsyncRead + Unpin + Send + 'static>,
    events: EventSink,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    config.check()?;
    let transcript = match &config.log {
        Some(path) => Some(start_transcript(path, &events)?),
        None => None,
    };
    #[cfg(unix)]
    if transcript.is_some() {
        // A transcript that reaches the open-files size limit (`ulimit -f`) must not kill the
        // room with SIGXFSZ: with the signal caught, the write fails with EFBIG instead and
        // the transcript handles that like a full disk. (tokio's handler stays installed.)
        let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
            nix::sys::signal::Signal::SIGXFSZ as i32,
        ));
    }
    if let Ok(addr) = listener.local_addr() {
        events.emit(RoomEvent::Listening(addr));
    }
    let config = Arc::new(config);
    let room = Arc::new(Room::new(config.clone(), events.clone(), transcript));
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();

    for k in 0..config.flushers.max(1) {
        let (room, token) = (room.clone(), token.clone());
        tokio::spawn(async move { token.run_until_cancelled(room.flush(k)).await });
    }
    if let Some(input) = input {
        tokio::spawn(server::keyboard(room.clone(), input, token.clone()));
    }
    if config.log.is_some() {
        // Handed to the writer every second, so a crash loses at most a second of transcript.
        let (room, token) = (room.clone(), token.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while token.run_until_cancelled(tick.tick()).await.is_some() {
                room.flush_transcript();
            }
        });
    }
    let listener = server::Listener::new(listener, room.clone(), config.clone(), events.clone());
    tokio::select! {
        () = listener.run(token.clone(), tracker.clone()) => {}
        () = shutdown => {}
    }
    events.emit(RoomEvent::ShuttingDown);
    // The room says goodbye and ends everyone's lines there before the tasks are told to
    // stop, so no client leaves on its own first and misses the line.
    room.shut_down();
    token.cancel();
    tracker.close();
    let _ = tokio::time::timeout(config.grace, tracker.wait()).await;
    room.close_transcript(transcript::CLOSE_GRACE).await;
    events.emit(RoomEvent::Closed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A `--log` that cannot be opened is one line in words, with what to do, and the status
    /// names the cause: a path that cannot be a file is a usage error, a denial is 6.
    #[cfg(unix)]
    #[test]
    fn log_errors_are_put_in_words_with_their_status() {
        use crate::exit::Status;
        use nix::errno::Errno;
        let missing = "/nonexistent-wirechat-dir/sub";
        let cases = [
            (
                "/tmp",
                Errno::EISDIR,
                "is a directory (give a file name)",
                Status::Usage,
            ),
            (
                &format!("{missing}/room.log"),
                Errno::ENOENT,
                &format!("no such directory (create {missing} first)"),
                Status::Usage,
            ),
            (
                "/etc/passwd/room.log",
                Errno::ENOTDIR,
                "a part of the path is a file, not a directory",
                Status::Usage,
            ),
            (
                "/x.log",
                Errno::ENAMETOOLONG,
                "file name too long",
                Status::Usage,
            ),
            (
                "/root/room.log",
                Errno::EACCES,
                "permission denied (give a file you may write, in a directory you may write to)",
                Status::PermissionDenied,
            ),
            (
                "/mnt/room.log",
                Errno::EROFS,
                "read-only file system (give a file elsewhere)",
                Status::PermissionDenied,
            ),
            (
                "/x.log",
                Errno::ENOSPC,
                "no space left on device",
                Status::Failure,
            ),
        ];
        for (path, errno, why, status) in cases {
            let e = Error::Log {
                path: path.into(),
                error: std::io::Error::from_raw_os_error(errno as i32),
            };
            let e = anyhow::Error::new(e);
            assert_eq!(
                format!("{e:#}"),
                format!("cannot open the log {path}: {why}")
            );
            assert_eq!(Status::classify(&e), status, "{errno}");
        }
    }

    #[test]
    fn a_count_of_one_is_singular() {
        assert_eq!(count(1u64, "line"), "1 line");
        assert_eq!(count(0u64, "line"), "0 lines");
        assert_eq!(count(2usize, "member"), "2 members");
        assert_eq!(count(1.0, "line"), "1 line");
        assert_eq!(count(0.5, "line"), "0.5 lines");
    }

    /// The room with in-memory operator input and a shutdown the test controls.
    #[tokio::test]
    async fn run_serves_until_its_shutdown_future_completes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (mut keys, input) = tokio::io::duplex(64);
        let room = tokio::spawn(run(
            listener,
            Config::default(),
            Some(input),
            EventSink::discard(),
            async {
                let _ = stopped.await;
            },
        ));
        let mut a = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let mut line = String::new();
        a.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("* welcome to the room, you are guest-1 (1 online"));
        keys.write_all(b"hello from the keyboard\n").await.unwrap();
        line.clear();
        a.read_line(&mut line).await.unwrap();
        assert_eq!(line, "<server> hello from the keyboard\n");
        // A long line goes out whole, not cut inside a character; a last line without a
        // newline goes out when the input ends.
        let long = "\u{4f60}".repeat(5000);
        keys.write_all(format!("{long}\nthe last line").as_bytes())
            .await
            .unwrap();
        drop(keys);
        let deadline = std::time::Duration::from_secs(10);
        line.clear();
        let read = tokio::time::timeout(deadline, a.read_line(&mut line)).await;
        assert!(matches!(read, Ok(Ok(_))), "no line");
        assert_eq!(line, format!("<server> {long}\n"));
        line.clear();
        let read = tokio::time::timeout(deadline, a.read_line(&mut line)).await;
        assert!(matches!(read, Ok(Ok(_))), "no last line");
        assert_eq!(line, "<server> the last line\n");
        stop.send(()).unwrap();
        line.clear();
        a.read_line(&mut line).await.unwrap();
        assert_eq!(line, "* server shutting down\n");
        line.clear();
        assert_eq!(
            a.read_line(&mut line).await.unwrap(),
            0,
            "closed after goodbye"
        );
        room.await.unwrap().unwrap();
    }
}
