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
    /// The quit word was typed, but not sent: it had nowhere to go.
    QuitUnsent { word: String },
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
    /// Warnings, the ladder that `--trace` asked for and the listening line are shown even
    /// with `--quiet`.
    pub fn always_shown(&self) -> bool {
        // The listening line: with port 0 it is the only way to learn the port.
        matches!(
            self,
            Event::Warning(_) | Event::Trace(_) | Event::Listening { .. }
        )
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
            Event::QuitUnsent { word } => write!(f, "typed {word:?}: ending (it was not sent)"),
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
    /// open, a terminal stopped with Ctrl-S) must not stop a server. Up to `DETACHED_LINES`
    /// lines wait; beyond that they are counted, and the count is written once stderr moves
    /// again, with the lines shown even when quiet (warnings: up to `HELD_LINES`), which are
    /// kept rather than counted. Both come after the line being written when the queue was
    /// full, so ahead of the older lines still queued: out of order, but not lost. The returned `StderrDrain` waits for what is queued, and for the count of lines
    /// not shown, for the last lines at exit.
    pub fn stderr_detached(quiet: bool, shown_when_quiet: fn(&E) -> bool) -> (Self, StderrDrain) {
        match Events::detached(std::io::stderr(), quiet, shown_when_quiet) {
            Some(pair) => pair,
            // No thread to spare: write directly, as everywhere else.
            None => (
                Events::stderr_when(quiet, shown_when_quiet),
                StderrDrain::default(),
            ),
        }
    }

    /// [`Events::stderr_detached`] writing to `out`; `None` when its thread cannot start.
    fn detached<W: std::io::Write + Send + 'static>(
        mut out: W,
        quiet: bool,
        shown_when_quiet: fn(&E) -> bool,
    ) -> Option<(Self, StderrDrain)> {
        use std::sync::atomic::Ordering;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Detached>(DETACHED_LINES);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let held = Held::default();
        let writer_held = held.clone();
        let progress = Arc::new((std::sync::Mutex::new((0, 0)), std::sync::Condvar::new()));
        let (writer_progress, writer_dropped) = (progress.clone(), dropped.clone());
        std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || {
                while let Ok(message) = rx.recv() {
                    if let Detached::Line(line) = message {
                        let _ = out.write_all(line.as_bytes());
                    }
                    for line in writer_held.take() {
                        let _ = out.write_all(line.as_bytes());
                    }
                    let lost = writer_dropped.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        let note = format!(
                            "wirechat: {lost} events not shown: stderr was not being read\n"
                        );
                        let _ = out.write_all(note.as_bytes());
                    }
                    let (lock, cv) = &*writer_progress;
                    lock.lock().unwrap_or_else(|e| e.into_inner()).1 += 1;
                    cv.notify_all();
                }
            })
            .ok()?;
        let drain = StderrDrain {
            progress: progress.clone(),
            report: Some((tx.clone(), dropped.clone(), held.clone())),
        };
        let events = Events::new(move |e| {
            if quiet && !shown_when_quiet(e) {
                return;
            }
            // Counted under the lock that the writer takes after each line, so a line dropped
            // while the queue is full is reported after one of the queued lines at the latest.
            let (lock, _) = &*progress;
            let mut count = lock.lock().unwrap_or_else(|e| e.into_inner());
            match tx.try_send(Detached::Line(format!("wirechat: {e}\n"))) {
                Ok(()) => count.0 += 1,
                // A line shown even when quiet (a warning) is kept for when stderr moves
                // again, up to HELD_LINES of them: the count alone would not say what it was.
                Err(std::sync::mpsc::TrySendError::Full(Detached::Line(line)))
                    if shown_when_quiet(e) =>
                {
                    if !held.keep(line) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Some((events, drain))
    }
}

/// How many event lines [`Events::stderr_detached`] keeps while stderr is not being read.
pub const DETACHED_LINES: usize = 4096;

/// How many warnings (lines shown even when quiet) are kept beyond [`DETACHED_LINES`].
pub const HELD_LINES: usize = 64;

/// Warnings that found the queue full, written after the next line the writer writes.
#[derive(Clone, Default)]
struct Held(Arc<std::sync::Mutex<Vec<String>>>);

impl Held {
    /// Keeps `line` unless HELD_LINES are kept already.
    fn keep(&self, line: String) -> bool {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = held.len() < HELD_LINES;
        if room {
            held.push(line);
        }
        room
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// What the thread of [`Events::stderr_detached`] is given to write. After each, it writes the
/// count of lines not shown since it last did, if any.
enum Detached {
    /// An event line.
    Line(String),
    /// Nothing more: only that count ([`StderrDrain::wait`] asks for it when no line follows).
    Dropped,
}

/// Lines queued and lines written by [`Events::stderr_detached`]'s thread.
#[derive(Clone, Default)]
pub struct StderrDrain {
    /// Messages queued and messages written, and a signal for each one written.
    progress: Arc<(std::sync::Mutex<(u64, u64)>, std::sync::Condvar)>,
    /// The thread's queue, the count of lines not shown and the warnings held; none when
    /// nothing is detached.
    report: Option<(
        std::sync::mpsc::SyncSender<Detached>,
        Arc<std::sync::atomic::AtomicU64>,
        Held,
    )>,
}

impl StderrDrain {
    /// Waits, at most `limit`, until every line queued so far has been written and, if lines
    /// were not shown, their count too.
    pub fn wait(&self, limit: std::time::Duration) {
        let end = std::time::Instant::now() + limit;
        if !self.written_by(end) {
            return;
        }
        let Some((tx, dropped, held)) = &self.report else {
            return;
        };
        if dropped.load(std::sync::atomic::Ordering::Relaxed) == 0 && held.is_empty() {
            return;
        }
        // Lines not shown since the last line written: nothing else would report them.
        {
            let (lock, _) = &*self.progress;
            let mut count = lock.lock().unwrap_or_else(|e| e.into_inner());
            // When the queue is full again, the writer reports them after the lines in it.
            if tx.try_send(Detached::Dropped).is_ok() {
                count.0 += 1;
            }
        }
        self.written_by(end);
    }

    /// Waits until `end` for every message queued so far to be written; false if time ran out.
    fn written_by(&self, end: std::time::Instant) -> bool {
        let (lock, cv) = &*self.progress;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let target = g.0;
        while g.1 < target {
            let now = std::time::Instant::now();
            if now >= end {
                return false;
            }
            g = match cv.wait_timeout(g, end - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A stderr that takes nothing until it is opened, and then keeps what it is given.
    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<GateState>, Condvar)>);

    #[derive(Default)]
    struct GateState {
        open: bool,
        /// A write is waiting for the gate (the writer thread holds a line).
        waiting: bool,
        written: Vec<u8>,
    }

    impl Gate {
        fn until(&self, what: impl Fn(&GateState) -> bool) {
            let (lock, cv) = &*self.0;
            let g = lock.lock().unwrap();
            let (_g, timeout) = cv
                .wait_timeout_while(g, std::time::Duration::from_secs(20), |s| !what(s))
                .unwrap();
            assert!(!timeout.timed_out(), "the writer thread never got there");
        }

        fn open(&self) {
            let (lock, cv) = &*self.0;
            lock.lock().unwrap().open = true;
            cv.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.0.lock().unwrap().written).into_owned()
        }
    }

    impl std::io::Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.0;
            let mut g = lock.lock().unwrap();
            g.waiting = true;
            cv.notify_all();
            let mut g = cv.wait_while(g, |s| !s.open).unwrap();
            g.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const NOTE: &str = "events not shown: stderr was not being read";

    /// Lines beyond the queue are counted, and the count follows the queued lines once stderr
    /// moves again.
    #[test]
    fn lines_beyond_the_queue_are_counted() {
        let gate = Gate::default();
        let (events, drain) = Events::<String>::detached(gate.clone(), false, |_| false).unwrap();
        events.emit("first".into());
        // The writer holds "first"; the queue takes DETACHED_LINES more, the last 3 are counted.
        gate.until(|s| s.waiting);
        for n in 0..DETACHED_LINES + 3 {
            events.emit(format!("line {n}"));
        }
        gate.open();
        drain.wait(std::time::Duration::from_secs(20));
        let text = gate.text();
        assert_eq!(text.matches(NOTE).count(), 1, "{text}");
        assert!(text.contains(&format!("wirechat: 3 {NOTE}\n")), "{text}");
        let last = DETACHED_LINES - 1;
        assert!(text.contains(&format!("wirechat: line {last}\n")), "{text}");
        assert!(!text.contains(&format!("line {}", last + 1)), "{text}");
    }

    /// A warning that finds the queue full is kept and written when stderr moves again,
    /// with the count of the ordinary lines that were not shown.
    #[test]
    fn a_warning_beyond_the_queue_is_kept() {
        let gate = Gate::default();
        let important = |s: &String| s.starts_with("warning");
        let (events, drain) = Events::<String>::detached(gate.clone(), false, important).unwrap();
        events.emit("first".into());
        gate.until(|s| s.waiting);
        for n in 0..DETACHED_LINES + 3 {
            events.emit(format!("line {n}"));
        }
        events.emit("warning: the log cannot be written".into());
        gate.open();
        drain.wait(std::time::Duration::from_secs(20));
        let text = gate.text();
        let warning = "wirechat: warning: the log cannot be written\n";
        assert_eq!(text.matches(warning).count(), 1, "{}", &text[..300]);
        assert!(text.contains(&format!("wirechat: 3 {NOTE}\n")));
    }

    /// A count that no written line follows (the writer had looked at the count for the last
    /// line before the lines were counted) is written when the drain finishes.
    #[test]
    fn a_count_after_the_last_line_is_written_when_the_drain_finishes() {
        let gate = Gate::default();
        gate.open();
        let (events, drain) = Events::<String>::detached(gate.clone(), false, |_| false).unwrap();
        events.emit("last line".into());
        drain.wait(std::time::Duration::from_secs(20));
        assert_eq!(gate.text(), "wirechat: last line\n");
        // Two lines counted as the emitter counts them, after the writer's last look.
        let (_, dropped, _) = drain.report.as_ref().unwrap();
        dropped.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        drain.wait(std::time::Duration::from_secs(20));
        assert_eq!(
            gate.text(),
            format!("wirechat: last line\nwirechat: 2 {NOTE}\n")
        );
        // Reported once: a later wait finds nothing to add.
        drain.wait(std::time::Duration::from_secs(20));
        assert_eq!(gate.text().matches(NOTE).count(), 1);
    }
}
