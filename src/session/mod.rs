//! The conversation pump: terminal input -> [`Outbound`] -> socket and socket -> [`Inbound`] ->
//! terminal output, both directions at once, with events reported to an [`Events`] sink.
//!
//! The terminal side is a parameter (any `AsyncRead` and `AsyncWrite`), so the same pump serves a
//! pipe, the interactive line editor of [`terminal`], the demo and the tests. [`drive`] decides
//! when a conversation is over: TCP ends when both directions are done (stdin EOF sends FIN and
//! receiving goes on), on the quit word, on an idle timeout, or on an error.

mod events;
mod inbound;
mod outbound;
pub mod tcp;
pub mod terminal;
pub mod udp;

pub use events::{Event, EventLines, Events};
pub use inbound::Inbound;
pub use outbound::{Flow, Outbound};

use crate::codec::Encoding;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The address shown when the kernel cannot tell who sent something.
pub(crate) const UNKNOWN_PEER: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// How typed lines end on the wire (TCP; a UDP line is a datagram and carries no ending).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Eol {
    /// Each line's own ending, as typed or piped: `\n`, or `\r\n` for a line that came with
    /// one. The default; not a value of `--eol`.
    #[default]
    #[value(skip)]
    AsTyped,
    /// `\n`, whatever the line came with.
    Lf,
    /// `\r\n`, for telnet-style and Windows peers.
    Crlf,
    /// Nothing: each line is sent as one message of its own, as the tutorial's peers send.
    None,
}

impl Eol {
    /// The ending after a line that ended (`cr`: with `\r\n`).
    fn bytes(self, cr: bool) -> &'static [u8] {
        match self {
            Eol::AsTyped if cr => b"\r\n",
            Eol::AsTyped | Eol::Lf => b"\n",
            Eol::Crlf => b"\r\n",
            Eol::None => b"",
        }
    }
}

/// Checked options for one conversation.
#[derive(Clone, Debug)]
pub struct Options {
    /// The wire encoding; `None` passes bytes through untouched.
    pub encoding: Option<Encoding>,
    /// Typed lines are hex; received data is shown as a hexdump.
    pub hex: bool,
    /// A line equal to this, typed or received, ends the conversation.
    pub quit: Option<String>,
    /// Line ending sent after each typed line (TCP).
    pub eol: Eol,
    /// Tag received messages with the sender's address.
    pub show_peer: bool,
    /// Tag received messages with the local time.
    pub timestamps: bool,
    /// The output is a terminal: escape control characters, end each message with a newline.
    pub pretty: bool,
    /// End the conversation after this long without data in either direction.
    pub idle_timeout: Option<Duration>,
    /// Longest typed line kept whole in memory; longer ones are sent in pieces (TCP).
    pub max_line: usize,
    /// Input comes from a script or a pipe, not a person at a terminal. After the peer's EOF,
    /// keep sending until our input ends (a person is done when the peer is); and a UDP
    /// listener without `--peer` reads no input until someone has sent it a datagram, since
    /// the lines would have nowhere to go and nobody can type them again.
    pub wait_for_input: bool,
    /// After our input ends, stop once nothing has arrived for this long (`udp connect` from a
    /// pipe: UDP has no EOF to wait for, so replies get this long). `--idle-timeout` wins.
    pub eof_linger: Option<Duration>,
    /// UDP `--raw`: each read of the input is one datagram as it is, and each datagram
    /// received is written as it is, with nothing added (on a terminal it is still shown
    /// escaped, one per line).
    pub raw: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            encoding: None,
            hex: false,
            quit: None,
            eol: Eol::AsTyped,
            show_peer: false,
            timestamps: false,
            pretty: false,
            idle_timeout: None,
            max_line: 1 << 20,
            wait_for_input: true,
            eof_linger: None,
            raw: false,
        }
    }
}

impl Options {
    /// True when bytes may move untouched in both directions: the zero-copy fast path.
    pub fn is_passthrough(&self) -> bool {
        self.encoding.is_none()
            && !self.hex
            && self.quit.is_none()
            && self.eol == Eol::AsTyped
            && !self.show_peer
            && !self.timestamps
            && !self.pretty
    }
}

/// What can end a conversation with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the terminal side failed. Like [`Error::Socket`], the I/O error is in the
    /// message, in words and once.
    #[error("reading input: {}", crate::transport::describe(.0))]
    Input(io::Error),
    /// Writing the terminal side failed.
    #[error("writing output: {}", crate::transport::describe(.0))]
    Output(io::Error),
    /// The socket failed (reset by the peer, unreachable). The message is the I/O error in
    /// words, so the error is not also given as the source (a full chain would say it twice).
    #[error("{}", describe_socket(.0))]
    Socket(io::Error),
}

/// A socket's error in words. A write meets EPIPE once the peer has closed the connection
/// (its kernel answered our data with a reset): "broken pipe" alone reads like a fault of the
/// shell's pipe.
fn describe_socket(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::BrokenPipe {
        "the peer closed the connection before all of the input was sent (broken pipe)".into()
    } else {
        crate::transport::describe(e)
    }
}

impl Error {
    /// The exit status that names the socket's error, when it has one.
    pub fn status(&self) -> Option<crate::exit::Status> {
        match self {
            Error::Socket(e) => crate::exit::Status::from_io(e.kind()),
            Error::Input(_) | Error::Output(_) => None,
        }
    }
}

/// Which side of the conversation something came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Us: typed or piped input.
    Local,
    /// The peer.
    Peer,
}

/// How a conversation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Both directions finished.
    Closed,
    /// Our output was closed (`| head`): nobody reads any more.
    OutputClosed,
    /// The quit word was typed or received.
    Quit(Side),
    /// The quit word was typed but had nowhere to go (UDP, before anyone sent a datagram).
    QuitUnsent,
    /// Nothing moved for the idle timeout.
    Idle,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::Closed => "both sides closed",
            End::OutputClosed => "nobody reads the output any more",
            End::Quit(Side::Local) => "the quit word was typed here",
            End::Quit(Side::Peer) => "the peer sent the quit word",
            End::QuitUnsent => "the quit word was typed, with nobody to send it to",
            End::Idle => "idle for too long",
        })
    }
}

/// How the sending direction ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SendEnd {
    /// Input reached EOF (for TCP, FIN was sent).
    Eof,
    /// The quit word was typed and sent.
    Quit,
    /// The quit word was typed, and had nowhere to go.
    QuitUnsent,
}

/// How the receiving direction ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RecvEnd {
    /// The peer sent FIN.
    PeerClosed,
    /// The quit word was received.
    Quit,
    /// Our output went away (a closed pipe): nobody reads any more.
    OutputClosed,
}

/// Progress counters shared by both directions, for the idle timer and the closing summary.
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    /// The peer refused a datagram since we last sent or received one (UDP).
    refused: std::sync::atomic::AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Records `n` bytes sent.
    pub fn sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        self.refused.store(false, Ordering::Relaxed);
        self.touch();
    }

    /// Records `n` bytes received.
    pub fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        self.refused.store(false, Ordering::Relaxed);
        self.touch();
    }

    /// Records that the peer refused a datagram (ICMP port unreachable).
    pub fn refused(&self) {
        self.refused.store(true, Ordering::Relaxed);
    }

    /// True if the last news of the peer was a refusal that came after the last datagram sent:
    /// nothing is listening there, as far as anyone can tell.
    pub fn ended_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// Bytes (sent, received) so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    fn last_activity(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Runs both directions until the conversation is over; see the module docs for when that is.
pub async fn drive<S, R>(
    send: S,
    recv: R,
    activity: &Activity,
    opts: &Options,
    events: &Events,
) -> Result<End, Error>
where
    S: Future<Output = Result<SendEnd, Error>>,
    R: Future<Output = Result<RecvEnd, Error>>,
{
    tokio::pin!(send, recv);
    let (mut sending, mut receiving) = (true, true);
    let mut idle_timeout = opts.idle_timeout;
    loop {
        let idle = async {
            // A timeout too large to add to a clock reading is no timeout at all.
            match idle_timeout.and_then(|t| activity.last_activity().checked_add(t)) {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Polled in order, so events are reported in the order things happened.
            biased;
            r = &mut send, if sending => match r? {
                SendEnd::Eof => {
                    sending = false;
                    if !receiving {
                        return Ok(End::Closed);
                    }
                    if idle_timeout.is_none() {
                        idle_timeout = opts.eof_linger;
                    }
                }
                SendEnd::Quit => return Ok(End::Quit(Side::Local)),
                SendEnd::QuitUnsent => return Ok(End::QuitUnsent),
            },
            r = &mut recv, if receiving => match r? {
                RecvEnd::PeerClosed => {
                    receiving = false;
                    events.emit(Event::PeerClosed);
                    if !sending || !opts.wait_for_input {
                        return Ok(End::Closed);
                    }
                }
                RecvEnd::Quit => return Ok(End::Quit(Side::Peer)),
                RecvEnd::OutputClosed => return Ok(End::OutputClosed),
            },
            () = idle => {
                if let Some(t) = idle_timeout {
                    if activity.last_activity().elapsed() >= t {
                        events.emit(Event::Idle(t));
                        return Ok(End::Idle);
                    }
                }
            }
        }
    }
}

/// Reports how a conversation ended (the quit word, the byte counts) and passes the end on.
fn report_end(
    end: Result<End, Error>,
    activity: &Activity,
    opts: &Options,
    events: &Events,
) -> Result<End, Error> {
    tracing::debug!(?end, "conversation over");
    let end = end?;
    let word = || opts.quit.clone().unwrap_or_default();
    match end {
        End::Quit(side) => events.emit(Event::Quit {
            by_peer: side == Side::Peer,
            word: word(),
        }),
        End::QuitUnsent => events.emit(Event::QuitUnsent { word: word() }),
        _ => {}
    }
    let (sent, received) = activity.totals();
    events.emit(Event::Closed { sent, received });
    Ok(end)
}

/// True for the errors that mean "the reader of our output has gone", which end a conversation
/// quietly, as `nc ... | head` should.
fn is_closed_output(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}
