//! Events of a conversation (listening, connected, peer closed, warnings) and where they go:
//! stderr by default, the line editor's printer at an interactive terminal, or the demo's
//! narrator. Data never goes here; this keeps stdout clean for pipes.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::transport::display_addr;

/// Something the person at the terminal should know about the conversation.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A listener is ready on this (real, bound) address.
    Listening {
        addr: SocketAddr,
        proto: &'static str,
    },
    /// A client connected to our listener.
    Accepted { peer: SocketAddr },
    /// We connected to a server.
    Connected { peer: SocketAddr, local: SocketAddr },
    /// A UDP socket is ready; `peer` is where typed lines go, if already known.
    UdpReady {
        local: SocketAddr,
        peer: Option<SocketAddr>,
    },
    /// A UDP datagram came from a new sender; replies now go there.
    NewPeer(SocketAddr),
    /// Our input ended: we sent FIN (TCP; receiving goes on until the peer's FIN).
    SentFin,
    /// The peer sent FIN: it will send nothing more.
    PeerClosed,
    /// The quit word ended the conversation.
    Quit { by_peer: bool, word: String },
    /// Nothing moved for this long.
    Idle(Duration),
    /// The conversation is over.
    Closed { sent: u64, received: u64 },
    /// Something went wrong but the conversation goes on (a bad hex line, an unmappable char).
    Warning(String),
    /// One line of the conversation's own ladder (`--trace`).
    Trace(String),
}

impl Event {
    /// Warnings, and the ladder that `--trace` asked for, are shown even with `--quiet`.
    pub fn always_shown(&self) -> bool {
        matches!(self, Event::Warning(_) | Event::Trace(_))
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Listening { addr, proto } => write!(f, "listening on {addr} ({proto})"),
            Event::Accepted { peer } => write!(f, "connection from {}", display_addr(*peer)),
            Event::Connected { peer, local } => write!(
                f,
                "connected to {} from {}",
                display_addr(*peer),
                display_addr(*local)
            ),
            Event::UdpReady {
                local,
                peer: Some(p),
            } => write!(
                f,
                "udp socket on {}, sending to {}",
                display_addr(*local),
                display_addr(*p)
            ),
            Event::UdpReady { local, peer: None } => write!(
                f,
                "listening on {} (udp); typed lines go to whoever sent last",
                display_addr(*local)
            ),
            Event::NewPeer(p) => write!(f, "datagram from {}; replies go there", display_addr(*p)),
            Event::SentFin => write!(f, "input ended: sent FIN"),
            Event::PeerClosed => write!(f, "peer closed its side (FIN received)"),
            Event::Quit {
                by_peer: true,
                word,
            } => write!(f, "peer said {word:?}: ending"),
            Event::Quit {
                by_peer: false,
                word,
            } => write!(f, "sent {word:?}: ending"),
            Event::Idle(t) => write!(f, "idle for {:.1} s: closing", t.as_secs_f64()),
            Event::Closed { sent, received } => {
                write!(f, "closed: sent {sent} bytes, received {received} bytes")
            }
            Event::Warning(w) => write!(f, "warning: {w}"),
            Event::Trace(line) => write!(f, "trace {line}"),
        }
    }
}

/// Where events of type `E` go: stderr, the line editor's printer, the demo's narrator, a
/// test's collector. Cloning shares the sink. The room uses the same sink for its own events.
pub struct Events<E = Event>(Arc<dyn Fn(&E) + Send + Sync>);

impl<E> Clone for Events<E> {
    fn clone(&self) -> Self {
        Events(self.0.clone())
    }
}

impl<E> Events<E> {
    /// Events to any function.
    pub fn new(f: impl Fn(&E) + Send + Sync + 'static) -> Self {
        Events(Arc::new(f))
    }

    /// Events nowhere.
    pub fn discard() -> Self {
        Events::new(|_| {})
    }

    /// Reports `event`.
    pub fn emit(&self, event: E) {
        (self.0)(&event)
    }
}

impl<E: fmt::Display + 'static> Events<E> {
    /// `wirechat: <event>` lines on stderr, one write each so that readers never see half a
    /// line; with `quiet`, only the events `shown_when_quiet` picks. A closed stderr must not take
    /// the program down with it, so write errors are ignored.
    pub fn stderr_when(quiet: bool, shown_when_quiet: fn(&E) -> bool) -> Self {
        Events::new(move |e| {
            if !quiet || shown_when_quiet(e) {
                let line = format!("wirechat: {e}\n");
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        })
    }
}

impl<E: fmt::Display + 'static> Events<E> {
    /// Like [`Events::stderr_when`], but the lines are written by a thread of their own, so
    /// whoever emits them never waits for stderr: a stderr that nobody reads (a pager left
    /// open, a terminal stopped with Ctrl-S) must not stop a server. Up to [`DETACHED_LINES`]
    /// lines wait; beyond that they are counted, and the count is written once stderr moves
    /// again. The returned [`StderrDrain`] waits for what is queued, for the last lines at
    /// exit.
    pub fn stderr_detached(quiet: bool, shown_when_quiet: fn(&E) -> bool) -> (Self, StderrDrain) {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(DETACHED_LINES);
        let drain = StderrDrain::default();
        let progress = drain.0.clone();
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer_dropped = dropped.clone();
        let writer = std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || {
                let mut err = std::io::stderr();
                while let Ok(line) = rx.recv() {
                    let _ = err.write_all(line.as_bytes());
                    let lost = writer_dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
                    if lost > 0 {
                        let note = format!(
                            "wirechat: {lost} events not shown: stderr was not being read\n"
                        );
                        let _ = err.write_all(note.as_bytes());
                    }
                    let (lock, cv) = &*progress;
                    lock.lock().unwrap_or_else(|e| e.into_inner()).1 += 1;
                    cv.notify_all();
                }
            });
        if writer.is_err() {
            // No thread to spare: write directly, as everywhere else.
            return (Events::stderr_when(quiet, shown_when_quiet), drain);
        }
        let queued = drain.0.clone();
        let events = Events::new(move |e| {
            if quiet && !shown_when_quiet(e) {
                return;
            }
            let mut count = queued.0.lock().unwrap_or_else(|e| e.into_inner());
            match tx.try_send(format!("wirechat: {e}\n")) {
                Ok(()) => count.0 += 1,
                Err(_) => {
                    dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        (events, drain)
    }
}

/// How many event lines [`Events::stderr_detached`] keeps while stderr is not being read.
pub const DETACHED_LINES: usize = 4096;

/// Lines queued and lines written by [`Events::stderr_detached`]'s thread.
#[derive(Clone, Default)]
pub struct StderrDrain(Arc<(std::sync::Mutex<(u64, u64)>, std::sync::Condvar)>);

impl StderrDrain {
    /// Waits, at most `limit`, until every line queued so far has been written.
    pub fn wait(&self, limit: std::time::Duration) {
        let end = std::time::Instant::now() + limit;
        let (lock, cv) = &*self.0;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let target = g.0;
        while g.1 < target {
            let now = std::time::Instant::now();
            if now >= end {
                return;
            }
            g = match cv.wait_timeout(g, end - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

impl Events<Event> {
    /// Events on stderr; with `quiet`, only warnings and the `--trace` ladder.
    pub fn stderr(quiet: bool) -> Self {
        Events::stderr_when(quiet, Event::always_shown)
    }

    /// Reports a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning(message.into()))
    }
}

/// A writer whose lines become [`Event::Trace`] events, so that a capture's ladder goes where
/// every other event goes (above the prompt at an interactive terminal, stderr otherwise).
pub struct EventLines {
    events: Events,
    line: Vec<u8>,
}

impl EventLines {
    /// Lines written to this are emitted to `events`.
    pub fn new(events: Events) -> Self {
        EventLines {
            events,
            line: Vec::new(),
        }
    }

    fn emit_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.events.emit(Event::Trace(text));
        self.line.clear();
    }
}

impl std::io::Write for EventLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                self.emit_line();
            } else {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
