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
}

impl Event {
    /// Warnings are shown even with `--quiet`.
    pub fn is_warning(&self) -> bool {
        matches!(self, Event::Warning(_))
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
        }
    }
}

/// Where events go. Cloning shares the sink.
#[derive(Clone)]
pub struct Events(Arc<dyn Fn(&Event) + Send + Sync>);

impl Events {
    /// Events from any function, e.g. the demo's narrator or a test's collector.
    pub fn new(f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        Events(Arc::new(f))
    }

    /// `wirechat: <event>` lines on stderr; with `quiet`, only warnings.
    pub fn stderr(quiet: bool) -> Self {
        Events::new(move |e| {
            if !quiet || e.is_warning() {
                // A closed stderr must not take the conversation down with it.
                let _ = writeln!(std::io::stderr().lock(), "wirechat: {e}");
            }
        })
    }

    /// Reports `event`.
    pub fn emit(&self, event: Event) {
        (self.0)(&event)
    }

    /// Reports a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning(message.into()))
    }
}
