//! Per-connection ladders: what each TCP segment means for its connection.
//!
//! A [`Tracker`] keys connections by their 4-tuple. Each [`Conn`] keeps, per direction, the
//! initial sequence number (so seq and ack are shown relative to it, as Wireshark does), the
//! highest sequence seen (to label retransmissions, out-of-order segments, duplicate ACKs,
//! zero-window probes and their ACKs, by Wireshark's rules) and the modelled RFC 9293 state of
//! the end that sends in that direction. Every state change goes through `Conn::set_state`,
//! which records a [`Transition`]. When both ends are finished the connection's [`Summary`]
//! says how the handshake and the close really went.

use super::decode::{Packet, Transport};
use super::state::State;
use etherparse::{TcpHeader, TcpOptionElement, TcpOptionReadError, TcpOptionsIterator};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// At most this many connections are tracked; the oldest are summarised and forgotten first.
pub const MAX_CONNS: usize = 16_384;

/// One end of a connection: A opened it (sent the first SYN, or the first segment seen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The end that sent the first SYN: the client.
    A,
    /// The other end: the server.
    B,
}

impl Side {
    fn idx(self) -> usize {
        self as usize
    }

    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::A => "A",
            Side::B => "B",
        })
    }
}

/// TCP control bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;

    /// The flags of a TCP header.
    pub fn of(t: &TcpHeader) -> Flags {
        let bits = [
            (t.fin, Self::FIN),
            (t.syn, Self::SYN),
            (t.rst, Self::RST),
            (t.psh, Self::PSH),
            (t.ack, Self::ACK),
            (t.urg, Self::URG),
            (t.ece, Self::ECE),
            (t.cwr, Self::CWR),
        ];
        Flags(
            bits.iter()
                .filter(|(on, _)| *on)
                .fold(0, |acc, (_, b)| acc | b),
        )
    }

    /// Whether `bit` is set.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// Flag names in the order people say them ("SYN", "ACK").
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::SYN, "SYN"),
            (Self::FIN, "FIN"),
            (Self::RST, "RST"),
            (Self::PSH, "PSH"),
            (Self::ACK, "ACK"),
            (Self::URG, "URG"),
            (Self::ECE, "ECE"),
            (Self::CWR, "CWR"),
        ]
        .into_iter()
        .filter(|(b, _)| self.has(*b))
        .map(|(_, n)| n)
        .collect()
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            return f.pad("none");
        }
        f.pad(&names.join("-"))
    }
}

/// A TCP option as shown on SYNs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpOpt {
    /// Maximum segment size.
    Mss(u16),
    /// Window scale shift count (shown as the multiplier, like Wireshark's `WS=128`).
    WindowScale(u8),
    /// SACK permitted.
    SackPermitted,
    /// Selective acknowledgement blocks (absolute sequence numbers).
    Sack(Vec<(u32, u32)>),
    /// Timestamps: value and echo reply.
    Timestamp(u32, u32),
    /// An option this tool does not decode, skipped by its length as RFC 9293 §3.1 says: its
    /// kind and total length.
    Other(u8, u8),
    /// An option that could not be read (a bad length); the options after it are lost.
    Unreadable(String),
}

impl fmt::Display for TcpOpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpOpt::Mss(m) => write!(f, "MSS={m}"),
            TcpOpt::WindowScale(s) => write!(f, "WS={}", 1u64 << (*s).min(14)),
            TcpOpt::SackPermitted => f.write_str("SACK_PERM"),
            TcpOpt::Sack(blocks) => {
                f.write_str("SACK")?;
                for (l, r) in blocks {
                    write!(f, " {l}-{r}")?;
                }
                Ok(())
            }
            TcpOpt::Timestamp(v, e) => write!(f, "TSval={v} TSecr={e}"),
            // Names as Wireshark gives them, for the kinds seen in practice.
            TcpOpt::Other(19, _) => f.write_str("MD5"),
            TcpOpt::Other(28, _) => f.write_str("UTO"),
            TcpOpt::Other(29, _) => f.write_str("TCP-AO"),
            TcpOpt::Other(30, _) => f.write_str("MPTCP"),
            TcpOpt::Other(34, 2) => f.write_str("TFO=R"),
            TcpOpt::Other(34, _) => f.write_str("TFO=C"),
            TcpOpt::Other(kind, len) => write!(f, "option {kind} ({len} bytes)"),
            TcpOpt::Unreadable(e) => write!(f, "bad option ({e})"),
        }
    }
}

/// The options of a TCP header (NOPs and end-of-list left out). etherparse's iterator stops
/// at a kind it does not know; such an option (TCP-MD5, Fast Open, MPTCP) is skipped by its
/// length and reading goes on, so a window scale after it still counts.
pub fn options(t: &TcpHeader) -> Vec<TcpOpt> {
    let mut out = Vec::new();
    let mut it = TcpOptionsIterator::from_slice(t.options.as_slice());
    loop {
        let rest = it.rest();
        let opt = match it.next() {
            None => break,
            Some(Ok(TcpOptionElement::Noop)) => continue,
            Some(Ok(TcpOptionElement::MaximumSegmentSize(m))) => TcpOpt::Mss(m),
            Some(Ok(TcpOptionElement::WindowScale(s))) => TcpOpt::WindowScale(s),
            Some(Ok(TcpOptionElement::SelectiveAcknowledgementPermitted)) => TcpOpt::SackPermitted,
            Some(Ok(TcpOptionElement::SelectiveAcknowledgement(first, more))) => TcpOpt::Sack(
                std::iter::once(first)
                    .chain(more.into_iter().flatten())
                    .collect(),
            ),
            Some(Ok(TcpOptionElement::Timestamp(v, e))) => TcpOpt::Timestamp(v, e),
            Some(Err(TcpOptionReadError::UnknownId(kind))) => {
                match rest.get(1).map(|&len| usize::from(len)) {
                    Some(len) if (2..=rest.len()).contains(&len) => {
                        out.push(TcpOpt::Other(kind, len as u8));
                        it = TcpOptionsIterator::from_slice(&rest[len..]);
                        continue;
                    }
                    _ => TcpOpt::Unreadable(format!("option {kind} with a bad length")),
                }
            }
            Some(Err(e)) => TcpOpt::Unreadable(e.to_string()),
        };
        out.push(opt);
    }
    out
}

/// What the analysis noticed about a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// Sequence space already sent: the sender sent it again.
    Retransmission,
    /// Fills a gap left earlier: it arrived after later data.
    OutOfOrder,
    /// Starts beyond what was sent so far: an earlier segment is missing (or comes later).
    PreviousNotSeen,
    /// The same ACK and window again while data is outstanding (the n-th repeat).
    DupAck(u32),
    /// The receiver has no buffer space: the sender must stop.
    ZeroWindow,
    /// One byte (or none) below the next sequence number: a keep-alive probe.
    KeepAlive,
    /// One byte sent into a zero window to learn when it opens (RFC 9293 §3.8.6.1; Wireshark:
    /// TCP ZeroWindowProbe).
    ZeroWindowProbe,
    /// The receiver's reply to a zero-window probe: the same ACK and still no room. Not a
    /// duplicate ACK (Wireshark: TCP ZeroWindowProbeAck).
    ZeroWindowProbeAck,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Retransmission => f.write_str("retransmission"),
            Label::OutOfOrder => f.write_str("out-of-order"),
            Label::PreviousNotSeen => f.write_str("previous segment not seen"),
            Label::DupAck(n) => write!(f, "dup ACK #{n}"),
            Label::ZeroWindow => f.write_str("zero window"),
            Label::KeepAlive => f.write_str("keep-alive"),
            Label::ZeroWindowProbe => f.write_str("zero window probe"),
            Label::ZeroWindowProbeAck => f.write_str("zero window probe ACK"),
        }
    }
}

/// One row of a ladder: a TCP segment and what it did.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Connection number (from 1, in order of appearance).
    pub conn: u64,
    /// Time since this connection's first segment.
    pub time: Duration,
    /// Time since the capture's first packet.
    pub at: Duration,
    /// Which end sent it.
    pub from: Side,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Control bits.
    pub flags: Flags,
    /// Sequence number relative to the sender's initial one.
    pub seq: u32,
    /// Acknowledgement number relative to the receiver's initial sequence number (if ACK set).
    pub ack: Option<u32>,
    /// Absolute sequence number.
    pub raw_seq: u32,
    /// Absolute acknowledgement number.
    pub raw_ack: u32,
    /// Payload bytes.
    pub len: usize,
    /// Receive window in bytes (scaled when both SYNs carried window scale).
    pub win: u64,
    /// The window field as sent.
    pub raw_win: u16,
    /// Options (on SYNs).
    pub options: Vec<TcpOpt>,
    /// Analysis labels.
    pub labels: Vec<Label>,
    /// State of A and B after this segment.
    pub states: [State; 2],
}

/// A state change of one end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Connection number.
    pub conn: u64,
    /// Which end.
    pub side: Side,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Why, in a few words (with the RFC section).
    pub why: &'static str,
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// FIN, ACK, FIN, ACK: each FIN acknowledged by a segment of its own.
    FourWay,
    /// FIN, FIN-ACK, ACK: the second FIN rode on the ACK of the first.
    ThreeWay,
    /// Both ends sent FIN before receiving the other's.
    Simultaneous,
    /// A RST ended it.
    Reset(Side),
    /// The SYN was answered by RST: nothing listened.
    Refused,
    /// Not closed (yet) when the capture ended.
    Open,
}

/// Where the capture began a connection, which says whether A and B are known to be client
/// and server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At its SYN: A sent it, so A is the client.
    Syn,
    /// At the SYN-ACK, its SYN not captured: only a server sends a SYN-ACK, so its sender is B.
    SynAck,
    /// Midway: which end is the client is not known.
    Midway,
}

impl Start {
    /// Whether A is known to be the client and B the server.
    pub fn roles_known(self) -> bool {
        self != Start::Midway
    }

    /// The name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Start::Syn => "syn",
            Start::SynAck => "syn-ack",
            Start::Midway => "midway",
        }
    }
}

/// The handshake as it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Segments from the first SYN until both ends were ESTABLISHED.
    pub segments: u32,
    /// Time from the first SYN to the segment that completed it.
    pub took: Duration,
}

/// What happened on one connection.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Connection number.
    pub conn: u64,
    /// End A (client).
    pub a: SocketAddr,
    /// End B (server).
    pub b: SocketAddr,
    /// Where the capture began the connection.
    pub start: Start,
    /// The handshake, when it was seen complete (from the SYN-ACK if the SYN was missed).
    pub handshake: Option<Handshake>,
    /// New payload bytes A to B and B to A (retransmissions not counted twice).
    pub bytes: [u64; 2],
    /// Segments seen.
    pub segments: u64,
    /// Who sent the first FIN.
    pub first_closer: Option<Side>,
    /// How it ended.
    pub close: Close,
    /// Segments of the close itself: the FINs, and the first ACK of each.
    pub close_segments: u32,
    /// New bytes, and segments carrying them, that the other end sent after the first FIN
    /// (a half-close: the first closer stopped sending, not receiving).
    pub after_fin: (u64, u32),
    /// Flags of the close's segments, in order (at most 8 kept).
    pub close_flags: Vec<(Side, Flags)>,
    /// Segments labelled retransmission.
    pub retransmissions: u32,
    /// Duplicate ACKs.
    pub dup_acks: u32,
    /// Out-of-order segments.
    pub out_of_order: u32,
    /// Zero-window advertisements.
    pub zero_windows: u32,
    /// Final states of A and B.
    pub states: [State; 2],
}

impl Summary {
    /// One line on why the close differs from the textbook four-way close, when it does.
    pub fn note(&self) -> Option<String> {
        let (first, second) = match self.first_closer {
            Some(s) => (s, s.other()),
            None => (Side::A, Side::B),
        };
        if let (Close::Reset(by), true) = (self.close, self.after_fin.0 > 0) {
            if self.first_closer == Some(by) {
                return Some(format!(
                    "{by} had closed for good (close(), not shutdown of its sending side \
                     only): the {} bytes {} sent after {by}'s FIN found no reader, so {by}'s \
                     kernel answered with RST (RFC 9293 §3.6; nc and HTTP keep-alive races \
                     meet this)",
                    self.after_fin.0,
                    by.other()
                ));
            }
        }
        if self.after_fin.0 > 0 && matches!(self.close, Close::FourWay | Close::Open) {
            return Some(format!(
                "a half-close: {first} shut down only its sending side (shutdown(SHUT_WR), as \
                 nc -N does at end of input) and went on receiving; {second} sent {} more \
                 bytes after it (RFC 9293 §3.6)",
                self.after_fin.0
            ));
        }
        match self.close {
            Close::FourWay | Close::Open => None,
            Close::ThreeWay => Some(format!(
                "three segments, not the textbook four: {second} had nothing left to send when \
                 {first}'s FIN arrived, so its FIN rode on the ACK (Linux delays that ACK a \
                 moment, which lets one segment carry both)"
            )),
            Close::Simultaneous => Some(
                "both ends sent FIN before receiving the other's: each went FIN_WAIT_1 -> \
                 CLOSING -> TIME_WAIT instead of one passing through CLOSE_WAIT \
                 (simultaneous close, RFC 9293 §3.6)"
                    .into(),
            ),
            Close::Reset(by) => Some(format!(
                "no FIN handshake: {by} aborted with RST (Linux does this on close() with unread \
                 data in the receive buffer, with SO_LINGER 0, or for a segment to a closed socket)"
            )),
            Close::Refused => Some(
                "no connection at all: nothing listened on the port, so the kernel answered the \
                 SYN with RST (ECONNREFUSED)"
                    .into(),
            ),
        }
    }
}

/// What the tracker says about a packet.
#[derive(Clone, Debug)]
pub enum Record {
    /// A connection seen for the first time.
    Opened {
        /// Connection number.
        conn: u64,
        /// End A.
        a: SocketAddr,
        /// End B.
        b: SocketAddr,
        /// Where the capture began it.
        start: Start,
    },
    /// A TCP segment.
    Segment(Segment),
    /// A state change caused by the segment before it.
    State(Transition),
    /// A connection ended (or the capture did).
    Summary(Summary),
    /// A UDP datagram: no connection, no handshake.
    Datagram {
        /// Time since the capture's first packet.
        at: Duration,
        /// Sender.
        src: SocketAddr,
        /// Receiver.
        dst: SocketAddr,
        /// Payload bytes.
        len: usize,
    },
}

/// Sequence-space comparison modulo 2^32 (RFC 9293 §3.4).
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// What one direction of a connection has shown so far.
#[derive(Clone, Debug)]
struct Half {
    state: State,
    /// Base for relative numbering (the ISN when the SYN was seen).
    isn: Option<u32>,
    /// One past the highest sequence number sent.
    next_seq: Option<u32>,
    /// A hole left by a segment that started beyond `next_seq`.
    gap: Option<(u32, u32)>,
    last_ack: Option<u32>,
    last_win: u16,
    dup_acks: u32,
    /// Sequence number of this end's last zero-window probe while the window stays shut: a
    /// byte sent but not yet counted (`next_seq` stays before it).
    probe: Option<u32>,
    /// The last segment this end sent was a zero-window probe.
    probed: bool,
    wscale: Option<u8>,
    /// Sequence number of this end's FIN.
    fin_seq: Option<u32>,
    fin_acked: bool,
    /// The other end's FIN was captured.
    got_fin: bool,
    /// That FIN was captured but nothing shows yet that this end received it: this end has
    /// not acknowledged it, and the FIN's sender has not acknowledged this end's own FIN in a
    /// later segment. (A capture sees a FIN leave, not arrive: a FIN this end sends in the
    /// meantime crossed it.)
    fin_unseen: bool,
    bytes: u64,
}

impl Half {
    fn new(state: State) -> Half {
        Half {
            state,
            isn: None,
            next_seq: None,
            gap: None,
            last_ack: None,
            last_win: 0,
            dup_acks: 0,
            probe: None,
            probed: false,
            wscale: None,
            fin_seq: None,
            fin_acked: false,
            got_fin: false,
            fin_unseen: false,
            bytes: 0,
        }
    }
}

/// One connection's state.
#[derive(Clone, Debug)]
pub struct Conn {
    id: u64,
    a: SocketAddr,
    b: SocketAddr,
    start: Start,
    half: [Half; 2],
    first_ts: Duration,
    segments: u64,
    handshake_segments: u32,
    handshake: Option<Handshake>,
    first_fin: Option<(Side, u32)>,
    close_segments: u32,
    close_flags: Vec<(Side, Flags)>,
    /// The other end's byte count at the first FIN, and its data segments since.
    bytes_at_fin: u64,
    segments_after_fin: u32,
    /// The first FIN's ACK, and the second's, have been seen.
    first_fin_acked: bool,
    second_fin_acked: bool,
    separate_ack: bool,
    second_fin_acks_first: Option<bool>,
    reset: Option<Side>,
    refused: bool,
    ever_established: bool,
    retransmissions: u32,
    dup_acks: u32,
    out_of_order: u32,
    zero_windows: u32,
    done: bool,
}

impl Conn {
    fn new(id: u64, a: SocketAddr, b: SocketAddr, start: Start, ts: Duration) -> Conn {
        // Seen from its SYN, B must have been listening; from the SYN-ACK, A had sent a SYN;
        // joined midway, both are talking.
        let (sa, sb) = match start {
            Start::Syn => (State::Closed, State::Listen),
            Start::SynAck => (State::SynSent, State::Listen),
            Start::Midway => (State::Established, State::Established),
        };
        Conn {
            id,
            a,
            b,
            start,
            half: [Half::new(sa), Half::new(sb)],
            first_ts: ts,
            segments: 0,
            handshake_segments: 0,
            handshake: None,
            first_fin: None,
            close_segments: 0,
            close_flags: Vec::new(),
            bytes_at_fin: 0,
            segments_after_fin: 0,
            first_fin_acked: false,
            second_fin_acked: false,
            separate_ack: false,
            second_fin_acks_first: None,
            reset: None,
            refused: false,
            ever_established: start == Start::Midway,
            retransmissions: 0,
            dup_acks: 0,
            out_of_order: 0,
            zero_windows: 0,
            done: false,
        }
    }

    /// The one place a modelled state changes: records the transition with its reason.
    fn set_state(&mut self, side: Side, to: State, why: &'static str, out: &mut Vec<Transition>) {
        let from = self.half[side.idx()].state;
        if from == to {
            return;
        }
        self.half[side.idx()].state = to;
        out.push(Transition {
            conn: self.id,
            side,
            from,
            to,
            why,
        });
    }

    fn state(&self, side: Side) -> State {
        self.half[side.idx()].state
    }

    /// Applies what segment `t` (sent by `s`) means to both ends' states.
    fn transitions(&mut self, s: Side, t: &TcpHeader, seg_end: u32, out: &mut Vec<Transition>) {
        let r = s.other();
        if t.rst {
            // Whatever the FINs in flight did, the reset ends both ends.
            self.half[0].fin_unseen = false;
            self.half[1].fin_unseen = false;
            // RFC 9293 §3.10.7.3 (SYN-SENT) and §3.10.7.4: a valid RST aborts the connection.
            if s == Side::B && self.state(r) == State::SynSent && !self.ever_established {
                self.refused = true;
                self.set_state(
                    s,
                    State::Closed,
                    "nothing listened (LISTEN was assumed): the SYN got RST (RFC 9293 §3.10.7.1)",
                    out,
                );
            } else {
                self.set_state(s, State::Closed, "sent RST: aborts (RFC 9293 §3.5.2)", out);
            }
            self.set_state(
                r,
                State::Closed,
                "received RST: connection reset (RFC 9293 §3.10.7)",
                out,
            );
            self.reset.get_or_insert(s);
            return;
        }
        let acks = |n: u32| t.ack && !seq_lt(t.acknowledgment_number, n);
        let r_fin_end = self.half[r.idx()].fin_seq.map(|f| f.wrapping_add(1));
        // `s` acknowledges `r`'s FIN: it has received it.
        if self.half[s.idx()].fin_unseen && r_fin_end.is_some_and(acks) {
            self.receive_fin(s, out);
        }
        // A segment that `s` sent after its FIN (not the FIN again) acknowledges `r`'s FIN,
        // which changes `r`'s state below: `r` got `s`'s FIN before it, so that comes first.
        let after_own_fin = self.half[s.idx()]
            .fin_seq
            .is_some_and(|f| !seq_lt(t.sequence_number, f.wrapping_add(1)));
        if self.half[r.idx()].fin_unseen && after_own_fin && r_fin_end.is_some_and(acks) {
            self.receive_fin(r, out);
        }
        if t.syn && !t.ack {
            if matches!(self.state(s), State::Closed | State::Listen) {
                // RFC 9293 §3.5: active OPEN sends SYN and enters SYN-SENT.
                self.set_state(
                    s,
                    State::SynSent,
                    "active open: sent SYN (RFC 9293 §3.5)",
                    out,
                );
            }
            if self.state(r) == State::SynSent {
                // RFC 9293 §3.5 figure 8: a SYN received in SYN-SENT, simultaneous open.
                self.set_state(
                    r,
                    State::SynRcvd,
                    "SYN received in SYN_SENT: simultaneous open (RFC 9293 §3.5)",
                    out,
                );
            }
        }
        if t.syn && t.ack {
            if matches!(
                self.state(s),
                State::Listen | State::Closed | State::SynSent
            ) {
                // RFC 9293 §3.10.7.2: LISTEN gets a SYN, sends SYN,ACK and enters SYN-RECEIVED.
                self.set_state(
                    s,
                    State::SynRcvd,
                    "got SYN, sent SYN-ACK: passive open (RFC 9293 §3.5)",
                    out,
                );
            }
            let r_syn_end = self.half[r.idx()].isn.map(|i| i.wrapping_add(1));
            if let Some(n) = r_syn_end {
                if acks(n) && matches!(self.state(r), State::SynSent | State::SynRcvd) {
                    // RFC 9293 §3.10.7.3: our SYN acked and theirs received: ESTABLISHED.
                    self.set_state(
                        r,
                        State::Established,
                        "got SYN-ACK for its SYN, replies ACK (RFC 9293 §3.5)",
                        out,
                    );
                }
            }
        }
        if t.ack && !t.syn && self.state(r) == State::SynRcvd {
            let r_syn_end = self.half[r.idx()].isn.map(|i| i.wrapping_add(1));
            if r_syn_end.is_some_and(acks) {
                // RFC 9293 §3.10.7.4: in SYN-RECEIVED an acceptable ACK moves to ESTABLISHED.
                self.set_state(
                    r,
                    State::Established,
                    "its SYN-ACK acknowledged: handshake complete",
                    out,
                );
            }
        }
        if t.fin && self.half[s.idx()].fin_seq.is_none() {
            self.half[s.idx()].fin_seq = Some(seg_end.wrapping_sub(1));
            match self.state(s) {
                // RFC 9293 §3.6 case 1: the local user closes first, FIN-WAIT-1.
                State::Established | State::SynRcvd => self.set_state(
                    s,
                    State::FinWait1,
                    "sent FIN, none received yet: active close (RFC 9293 §3.6)",
                    out,
                ),
                // RFC 9293 §3.6 case 2: FIN already received, the user closes: LAST-ACK.
                State::CloseWait => self.set_state(
                    s,
                    State::LastAck,
                    "sent FIN after the peer's: passive close (RFC 9293 §3.6)",
                    out,
                ),
                _ => {}
            }
        }
        // The receiver processes the ACK field before the FIN bit (RFC 9293 §3.10.7.4).
        let r_fin = self.half[r.idx()].fin_seq;
        if let Some(f) = r_fin {
            if !self.half[r.idx()].fin_acked && acks(f.wrapping_add(1)) {
                self.half[r.idx()].fin_acked = true;
                match self.state(r) {
                    // RFC 9293 §3.10.7.4 FIN-WAIT-1: our FIN acknowledged, enter FIN-WAIT-2.
                    State::FinWait1 => self.set_state(
                        r,
                        State::FinWait2,
                        "its FIN acknowledged, waits for the peer's",
                        out,
                    ),
                    // RFC 9293 §3.10.7.4 CLOSING: our FIN acknowledged, enter TIME-WAIT.
                    State::Closing => self.set_state(
                        r,
                        State::TimeWait,
                        "its FIN acknowledged: waits 2 MSL (RFC 9293 §3.6)",
                        out,
                    ),
                    // RFC 9293 §3.10.7.4 LAST-ACK: our FIN acknowledged, delete the TCB.
                    State::LastAck => self.set_state(
                        r,
                        State::Closed,
                        "its FIN acknowledged: connection closed",
                        out,
                    ),
                    _ => {}
                }
            }
        }
        if t.fin && !self.half[r.idx()].got_fin {
            // Its arrival shows when `r` acknowledges it, or when `s` acknowledges `r`'s FIN in
            // a later segment (see the start of this function).
            self.half[r.idx()].got_fin = true;
            self.half[r.idx()].fin_unseen = true;
        }
    }

    /// End `r` has received the other end's FIN (RFC 9293 §3.10.7.4, eighth step).
    fn receive_fin(&mut self, r: Side, out: &mut Vec<Transition>) {
        self.half[r.idx()].fin_unseen = false;
        match self.state(r) {
            // RFC 9293 §3.10.7.4 eighth step: ESTABLISHED gets FIN, enter CLOSE-WAIT.
            State::Established | State::SynRcvd => self.set_state(
                r,
                State::CloseWait,
                "got FIN: the peer sends no more (reads EOF)",
                out,
            ),
            // RFC 9293 §3.10.7.4: FIN-WAIT-1 gets FIN not acking ours: CLOSING.
            State::FinWait1 => self.set_state(
                r,
                State::Closing,
                "got FIN before its own was acked: simultaneous close",
                out,
            ),
            // RFC 9293 §3.10.7.4: FIN-WAIT-2 gets FIN: TIME-WAIT.
            State::FinWait2 => self.set_state(
                r,
                State::TimeWait,
                "got the peer's FIN: waits 2 MSL (RFC 9293 §3.6)",
                out,
            ),
            _ => {}
        }
    }

    /// Labels a segment by comparing it with what its sender sent before.
    fn analyse(&mut self, s: Side, t: &TcpHeader, payload: usize, seg_len: u32) -> Vec<Label> {
        let mut labels = Vec::new();
        let other = &self.half[s.other().idx()];
        let other_next = other.next_seq;
        // The receiver's last word was a zero window.
        let window_shut = other.last_ack.is_some() && other.last_win == 0;
        let other_probed = other.probed;
        let h = &mut self.half[s.idx()];
        let seq = t.sequence_number;
        let pure_ack = seg_len == 0 && t.ack && !t.rst;
        if let (Some(next), Some(p)) = (h.next_seq, h.probe) {
            // The receiver took the probe's byte and the sender went on after it.
            if p == next && seq == next.wrapping_add(1) {
                h.next_seq = Some(seq);
                h.bytes += 1;
            }
        }
        if !window_shut {
            h.probe = None;
        }
        // Wireshark's rule: one byte at the next sequence number into a zero window. Like
        // Wireshark, the probe does not move the next sequence number: the receiver has not
        // taken its byte, which comes again (as the next probe, or as data later).
        let probe =
            payload == 1 && !t.syn && !t.fin && !t.rst && window_shut && h.next_seq == Some(seq);
        h.probed = probe;
        if probe {
            labels.push(Label::ZeroWindowProbe);
            h.probe = Some(seq);
        } else if let Some(next) = h.next_seq {
            let keep_alive =
                payload <= 1 && !t.syn && !t.fin && !t.rst && seq == next.wrapping_sub(1);
            if keep_alive {
                labels.push(Label::KeepAlive);
            } else if seg_len > 0 && seq_lt(seq, next) {
                match h.gap {
                    Some((lo, hi)) if !seq_lt(seq, lo) && seq_lt(seq, hi) => {
                        labels.push(Label::OutOfOrder);
                        self.out_of_order += 1;
                        // Late, but new: these bytes fill the hole and count as data.
                        h.bytes += payload as u64;
                        h.gap = None;
                    }
                    _ => {
                        labels.push(Label::Retransmission);
                        self.retransmissions += 1;
                    }
                }
            } else if seg_len > 0 && seq_lt(next, seq) {
                labels.push(Label::PreviousNotSeen);
                h.gap = Some((next, seq));
            }
        }
        let end = seq.wrapping_add(seg_len);
        match h.next_seq {
            _ if probe => {}
            Some(n) if !seq_lt(n, end) => {}
            _ => {
                // New sequence space: count its payload once.
                let fresh = match h.next_seq {
                    Some(n) if seq_lt(seq, n) => end.wrapping_sub(n).min(payload as u32),
                    _ => payload as u32,
                };
                h.bytes += u64::from(fresh);
                h.next_seq = Some(end);
            }
        }
        if t.ack && !t.rst {
            let ack = t.acknowledgment_number;
            let outstanding = other_next.is_some_and(|n| seq_lt(ack, n));
            // Wireshark's rule: no data, still no room, the same ACK, just after a probe.
            let probe_ack = pure_ack
                && !t.syn
                && !t.fin
                && t.window_size == 0
                && other_probed
                && h.last_ack == Some(ack)
                && h.next_seq.is_none_or(|n| n == seq);
            if probe_ack {
                labels.push(Label::ZeroWindowProbeAck);
            } else if pure_ack
                && !t.syn
                && !t.fin
                && h.last_ack == Some(ack)
                && h.last_win == t.window_size
                && t.window_size != 0
                && outstanding
            {
                h.dup_acks += 1;
                labels.push(Label::DupAck(h.dup_acks));
                self.dup_acks += 1;
            } else if h.last_ack != Some(ack) {
                h.dup_acks = 0;
            }
            h.last_ack = Some(ack);
            h.last_win = t.window_size;
        }
        if t.window_size == 0 && !t.rst {
            labels.push(Label::ZeroWindow);
            self.zero_windows += 1;
        }
        labels
    }

    /// Processes one segment sent by `src`.
    fn on_segment(
        &mut self,
        ts: Duration,
        at: Duration,
        pkt: &Packet,
        t: &TcpHeader,
        out: &mut Vec<Record>,
    ) {
        let s = if pkt.src() == self.a {
            Side::A
        } else {
            Side::B
        };
        let r = s.other();
        self.segments += 1;
        // As on the wire: a capture's snap length may have kept fewer bytes.
        let payload = pkt.wire_len;
        let seg_len = payload as u32 + u32::from(t.syn) + u32::from(t.fin);
        let seq = t.sequence_number;
        // Relative numbering: the ISN from the SYN, else one before the first byte seen.
        if t.syn && self.half[s.idx()].isn.is_none() {
            self.half[s.idx()].isn = Some(seq);
        } else if self.half[s.idx()].isn.is_none() {
            self.half[s.idx()].isn = Some(seq.wrapping_sub(1));
        }
        if t.ack && self.half[r.idx()].isn.is_none() {
            self.half[r.idx()].isn = Some(t.acknowledgment_number.wrapping_sub(1));
        }
        let opts = if t.syn { options(t) } else { Vec::new() };
        if t.syn {
            self.half[s.idx()].wscale = opts.iter().find_map(|o| match o {
                TcpOpt::WindowScale(w) => Some((*w).min(14)),
                _ => None,
            });
        }
        let bytes_before = self.half[s.idx()].bytes;
        let labels = self.analyse(s, t, payload, seg_len);
        let new_data = self.half[s.idx()].bytes > bytes_before;
        let mut changes = Vec::new();
        self.transitions(s, t, seq.wrapping_add(seg_len), &mut changes);
        let established =
            self.state(Side::A) == State::Established && self.state(Side::B) == State::Established;
        if self.start.roles_known() && !self.ever_established {
            self.handshake_segments += 1;
            if established {
                self.handshake = Some(Handshake {
                    segments: self.handshake_segments,
                    took: ts.saturating_sub(self.first_ts),
                });
            }
        }
        self.ever_established |= established;
        self.track_close(s, t, new_data);
        // RFC 7323 §2.2: the window field of a SYN is never scaled.
        let win = match (t.syn, self.half[s.idx()].wscale, self.half[r.idx()].wscale) {
            (false, Some(ws), Some(_)) => u64::from(t.window_size) << ws,
            _ => u64::from(t.window_size),
        };
        let rel = |isn: Option<u32>, v: u32| v.wrapping_sub(isn.unwrap_or(0));
        out.push(Record::Segment(Segment {
            conn: self.id,
            time: ts.saturating_sub(self.first_ts),
            at,
            from: s,
            src: pkt.src(),
            dst: pkt.dst(),
            flags: Flags::of(t),
            seq: rel(self.half[s.idx()].isn, seq),
            ack: t
                .ack
                .then(|| rel(self.half[r.idx()].isn, t.acknowledgment_number)),
            raw_seq: seq,
            raw_ack: t.acknowledgment_number,
            len: payload,
            win,
            raw_win: t.window_size,
            options: opts,
            labels,
            states: [self.state(Side::A), self.state(Side::B)],
        }));
        out.extend(changes.into_iter().map(Record::State));
        if !self.done && self.state(Side::A).is_finished() && self.state(Side::B).is_finished() {
            self.done = true;
            out.push(Record::Summary(self.summary()));
        }
    }

    /// Follows the close: who sent FIN first, whether the other end acknowledged it in a
    /// segment of its own before sending its FIN, and what it sent in between (a half-close).
    /// The close's own segments are the FINs and the first ACK of each; data and its ACKs
    /// after the first FIN are counted apart.
    fn track_close(&mut self, s: Side, t: &TcpHeader, new_data: bool) {
        if self.done {
            return;
        }
        if t.fin && self.first_fin.is_none() {
            if let Some(f) = self.half[s.idx()].fin_seq {
                self.first_fin = Some((s, f));
                self.bytes_at_fin = self.half[s.other().idx()].bytes;
            }
        }
        let Some((first, fin)) = self.first_fin else {
            return;
        };
        let acks = |n: u32| t.ack && !seq_lt(t.acknowledgment_number, n.wrapping_add(1));
        let acks_first = acks(fin);
        let acks_second = self.half[first.other().idx()].fin_seq.is_some_and(acks);
        let own = t.fin
            || (s != first && acks_first && !self.first_fin_acked)
            || (s == first && acks_second && !self.second_fin_acked);
        if own {
            self.close_segments += 1;
            if self.close_flags.len() < 8 {
                self.close_flags.push((s, Flags::of(t)));
            }
        }
        if s != first {
            self.first_fin_acked |= acks_first;
            if new_data {
                self.segments_after_fin += 1;
            }
        } else {
            self.second_fin_acked |= acks_second;
        }
        if s != first && self.second_fin_acks_first.is_none() {
            if t.fin {
                self.second_fin_acks_first = Some(acks_first);
            } else if acks_first {
                self.separate_ack = true;
            }
        }
    }

    /// The connection's summary as of now.
    pub fn summary(&self) -> Summary {
        let close = if self.refused {
            Close::Refused
        } else if let Some(by) = self.reset {
            Close::Reset(by)
        } else {
            match self.second_fin_acks_first {
                _ if !(self.state(Side::A).is_finished() && self.state(Side::B).is_finished()) => {
                    Close::Open
                }
                Some(false) => Close::Simultaneous,
                Some(true) if self.separate_ack => Close::FourWay,
                Some(true) => Close::ThreeWay,
                None => Close::Open,
            }
        };
        Summary {
            conn: self.id,
            a: self.a,
            b: self.b,
            start: self.start,
            handshake: self.handshake,
            bytes: [self.half[0].bytes, self.half[1].bytes],
            segments: self.segments,
            first_closer: self.first_fin.map(|(s, _)| s),
            close,
            close_segments: self.close_segments,
            after_fin: match self.first_fin {
                Some((first, _)) => (
                    self.half[first.other().idx()]
                        .bytes
                        .saturating_sub(self.bytes_at_fin),
                    self.segments_after_fin,
                ),
                None => (0, 0),
            },
            close_flags: self.close_flags.clone(),
            retransmissions: self.retransmissions,
            dup_acks: self.dup_acks,
            out_of_order: self.out_of_order,
            zero_windows: self.zero_windows,
            states: [self.state(Side::A), self.state(Side::B)],
        }
    }
}

/// Totals over a capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// TCP segments shown.
    pub segments: u64,
    /// UDP datagrams shown.
    pub datagrams: u64,
    /// Connections seen.
    pub connections: u64,
    /// Connections that ended (FIN both ways, or RST).
    pub closed: u64,
}

/// Connections by 4-tuple.
#[derive(Default)]
pub struct Tracker {
    conns: HashMap<(SocketAddr, SocketAddr), Conn>,
    /// Keys in order of creation, for eviction (ids tell stale entries apart).
    order: VecDeque<((SocketAddr, SocketAddr), u64)>,
    start: Option<Duration>,
    next_id: u64,
    totals: Totals,
}

fn key(x: SocketAddr, y: SocketAddr) -> (SocketAddr, SocketAddr) {
    if x <= y { (x, y) } else { (y, x) }
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Totals so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Takes in a decoded packet captured at `ts` and appends what it means to `out`.
    pub fn observe(&mut self, ts: Duration, pkt: &Packet, out: &mut Vec<Record>) {
        let start = *self.start.get_or_insert(ts);
        let at = ts.saturating_sub(start);
        let t = match &pkt.transport {
            Transport::Udp(_) => {
                self.totals.datagrams += 1;
                out.push(Record::Datagram {
                    at,
                    src: pkt.src(),
                    dst: pkt.dst(),
                    len: pkt.wire_len,
                });
                return;
            }
            Transport::Tcp(t) => t,
        };
        self.totals.segments += 1;
        let (src, dst) = (pkt.src(), pkt.dst());
        let k = key(src, dst);
        let fresh = match self.conns.get(&k) {
            None => true,
            // A new SYN (or SYN-ACK, when the SYN was missed) on a 4-tuple whose connection
            // ended, or got past its handshake (its end was not seen), is a new connection:
            // ports get reused. A repeat of the old one (same ISN) is a retransmission.
            Some(c) => {
                let side = if src == c.a { Side::A } else { Side::B };
                t.syn
                    && (c.done || c.ever_established)
                    && c.half[side.idx()].isn != Some(t.sequence_number)
            }
        };
        if fresh {
            if let Some(old) = self.conns.remove(&k) {
                if !old.done {
                    out.push(Record::Summary(old.summary()));
                }
            }
            self.evict_if_full(out);
            self.next_id += 1;
            self.totals.connections += 1;
            // A is the client when it is known: the SYN's sender, or the SYN-ACK's receiver.
            let (start, a, b) = match (t.syn, t.ack) {
                (true, false) => (Start::Syn, src, dst),
                (true, true) => (Start::SynAck, dst, src),
                _ => (Start::Midway, src, dst),
            };
            let conn = Conn::new(self.next_id, a, b, start, ts);
            out.push(Record::Opened {
                conn: self.next_id,
                a,
                b,
                start,
            });
            self.order.push_back((k, self.next_id));
            self.conns.insert(k, conn);
        }
        if let Some(c) = self.conns.get_mut(&k) {
            let was_done = c.done;
            c.on_segment(ts, at, pkt, t, out);
            if c.done && !was_done {
                self.totals.closed += 1;
            }
        }
    }

    /// Keeps the table bounded: the oldest connections go first, summarised if still open.
    fn evict_if_full(&mut self, out: &mut Vec<Record>) {
        while self.conns.len() >= MAX_CONNS {
            let Some((k, id)) = self.order.pop_front() else {
                return;
            };
            if self.conns.get(&k).is_some_and(|c| c.id == id) {
                if let Some(c) = self.conns.remove(&k) {
                    if !c.done {
                        out.push(Record::Summary(c.summary()));
                    }
                }
            }
        }
        // Stale order entries (replaced connections) must not pile up either.
        if self.order.len() > 2 * MAX_CONNS {
            let conns = &self.conns;
            self.order
                .retain(|(k, id)| conns.get(k).is_some_and(|c| c.id == *id));
        }
    }

    /// At the end of a capture: the summaries of connections still open, oldest first.
    pub fn finish(&mut self, out: &mut Vec<Record>) {
        let mut open: Vec<&Conn> = self.conns.values().filter(|c| !c.done).collect();
        open.sort_by_key(|c| c.id);
        out.extend(open.into_iter().map(|c| Record::Summary(c.summary())));
    }

    /// Whether every connection seen so far has ended.
    pub fn all_closed(&self) -> bool {
        self.conns.values().all(|c| c.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::decode::{Link, decode};
    use etherparse::PacketBuilder;

    /// An option this tool does not decode (TCP-MD5, Fast Open) is skipped by its length, so
    /// the window scale after it still counts; a bad length stops the reading with a reason.
    #[test]
    fn unknown_options_are_skipped_by_their_length() {
        let with = |raw: &[u8]| {
            let mut t = TcpHeader::new(1, 2, 0, 1000);
            t.options = etherparse::TcpOptions::try_from_slice(raw).expect("options");
            options(&t)
        };
        let mut md5 = vec![19, 18];
        md5.extend([0xab; 16]);
        md5.extend([2, 4, 0xff, 0xd7, 4, 2, 1, 3, 3, 10]); // MSS, SACK_PERM, NOP, WS=1024
        md5.extend([34, 2, 0, 0]); // TFO request, EOL, padding
        let got = with(&md5);
        assert_eq!(
            got,
            [
                TcpOpt::Other(19, 18),
                TcpOpt::Mss(65495),
                TcpOpt::SackPermitted,
                TcpOpt::WindowScale(10),
                TcpOpt::Other(34, 2),
            ]
        );
        let shown: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["MD5", "MSS=65495", "SACK_PERM", "WS=1024", "TFO=R"]);
        let got = with(&[99, 1, 0, 0]);
        assert!(
            matches!(&got[..], [TcpOpt::Unreadable(why)] if why.contains("option 99")),
            "{got:?}"
        );
        assert_eq!(with(&[200, 4, 0, 0])[0].to_string(), "option 200 (4 bytes)");
    }

    const A: ([u8; 4], u16) = ([127, 0, 0, 1], 40000);
    const B: ([u8; 4], u16) = ([127, 0, 0, 2], 80);

    /// A segment from A (`from_a`) or B: flags from "SAFPR", seq, ack, window, payload.
    fn seg(from_a: bool, flags: &str, seq: u32, ack: u32, win: u16, data: &[u8]) -> Packet {
        let ((src, sp), (dst, dp)) = if from_a { (A, B) } else { (B, A) };
        let mut b = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq, win);
        for c in flags.chars() {
            b = match c {
                'S' => b.syn(),
                'A' => b.ack(ack),
                'F' => b.fin(),
                'P' => b.psh(),
                'R' => b.rst(),
                _ => b,
            };
        }
        let mut out = Vec::new();
        b.write(&mut out, data).expect("write to Vec");
        decode(Link::Ethernet, &out).expect("valid segment")
    }

    /// Feeds segments one per millisecond; returns every record.
    fn run(segs: &[Packet]) -> Vec<Record> {
        let mut t = Tracker::new();
        let mut out = Vec::new();
        for (i, p) in segs.iter().enumerate() {
            t.observe(Duration::from_millis(i as u64), p, &mut out);
        }
        out
    }

    /// [`run`], then the end of the capture (which adds the summary).
    fn run_to_end(segs: &[Packet]) -> Vec<Record> {
        let mut t = Tracker::new();
        let mut out = Vec::new();
        for (i, p) in segs.iter().enumerate() {
            t.observe(Duration::from_millis(i as u64), p, &mut out);
        }
        t.finish(&mut out);
        out
    }

    fn rows(recs: &[Record]) -> Vec<&Segment> {
        recs.iter()
            .filter_map(|r| match r {
                Record::Segment(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn summary(recs: &[Record]) -> Option<&Summary> {
        recs.iter().find_map(|r| match r {
            Record::Summary(s) => Some(s),
            _ => None,
        })
    }

    fn handshake() -> Vec<Packet> {
        vec![
            seg(true, "S", 100, 0, 1000, b""),
            seg(false, "SA", 900, 101, 1000, b""),
            seg(true, "A", 101, 901, 1000, b""),
        ]
    }

    #[test]
    fn handshake_states_and_relative_numbers() {
        let recs = run(&handshake());
        let r = rows(&recs);
        assert_eq!(r[0].states, [State::SynSent, State::Listen]);
        assert_eq!(r[1].states, [State::Established, State::SynRcvd]);
        assert_eq!(r[2].states, [State::Established, State::Established]);
        assert_eq!((r[1].seq, r[1].ack), (0, Some(1)));
        assert_eq!((r[2].seq, r[2].ack), (1, Some(1)));
        assert_eq!(r[0].ack, None);
        let transitions = recs
            .iter()
            .filter(|r| matches!(r, Record::State(_)))
            .count();
        assert_eq!(transitions, 4);
    }

    /// A capture that begins at the SYN-ACK (the SYN was missed) still knows the client: the
    /// SYN-ACK's receiver. Joined at a data segment, it does not guess.
    #[test]
    fn a_capture_from_the_syn_ack_knows_client_and_server() {
        let mut segs = handshake()[1..].to_vec();
        segs.push(seg(false, "PA", 901, 101, 1000, b"hi"));
        segs.push(seg(true, "FA", 101, 903, 1000, b""));
        segs.push(seg(false, "FA", 903, 102, 1000, b""));
        segs.push(seg(true, "A", 102, 904, 1000, b""));
        let recs = run(&segs);
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let Some(Record::Opened { a, start, .. }) = recs.first() else {
            panic!("{recs:?}");
        };
        assert_eq!((*a, *start), (client, Start::SynAck));
        let r = rows(&recs);
        assert_eq!(r[0].from, Side::B);
        assert_eq!(r[0].states, [State::Established, State::SynRcvd]);
        assert_eq!((r[0].seq, r[0].ack), (0, Some(1)));
        assert_eq!(r[1].states, [State::Established, State::Established]);
        let sum = summary(&recs).expect("closed");
        assert_eq!(sum.start, Start::SynAck);
        assert_eq!(sum.first_closer, Some(Side::A));
        assert_eq!(sum.bytes, [0, 2]);
        assert_eq!(sum.handshake.map(|h| h.segments), Some(2));
        let midway = run(&segs[2..]);
        assert!(matches!(
            midway.first(),
            Some(Record::Opened {
                start: Start::Midway,
                ..
            })
        ));
    }

    #[test]
    fn retransmission_dup_acks_zero_window_and_out_of_order() {
        let mut s = handshake();
        s.push(seg(true, "PA", 101, 901, 1000, b"aaaa")); // 1..5
        s.push(seg(true, "PA", 109, 901, 1000, b"cccc")); // 9..13: 5..9 missing
        s.push(seg(false, "A", 901, 105, 1000, b"")); // ack 5
        s.push(seg(false, "A", 901, 105, 1000, b"")); // dup #1
        s.push(seg(false, "A", 901, 105, 1000, b"")); // dup #2
        s.push(seg(true, "PA", 105, 901, 1000, b"bbbb")); // fills the gap
        s.push(seg(true, "PA", 105, 901, 1000, b"bbbb")); // sent again
        s.push(seg(false, "A", 901, 113, 0, b"")); // receiver full
        let recs = run(&s);
        let r = rows(&recs);
        assert_eq!(r[4].labels, [Label::PreviousNotSeen]);
        assert!(r[5].labels.is_empty());
        assert_eq!(r[6].labels, [Label::DupAck(1)]);
        assert_eq!(r[7].labels, [Label::DupAck(2)]);
        assert_eq!(r[8].labels, [Label::OutOfOrder]);
        assert_eq!(r[9].labels, [Label::Retransmission]);
        assert_eq!(r[10].labels, [Label::ZeroWindow]);
        // Data counted once: aaaa, bbbb, cccc.
        let out = run_to_end(&s);
        let sum = summary(&out).expect("summary at the end");
        assert_eq!(sum.bytes, [12, 0]);
        assert_eq!(
            (sum.retransmissions, sum.dup_acks, sum.out_of_order),
            (1, 2, 1)
        );
        assert_eq!(sum.close, Close::Open);
    }

    #[test]
    fn keep_alive_is_not_a_retransmission() {
        let mut s = handshake();
        s.push(seg(true, "A", 100, 901, 1000, b"")); // seq = next - 1, no data
        let r = run(&s);
        assert_eq!(rows(&r)[3].labels, [Label::KeepAlive]);
    }

    /// A receiver with no room that repeats its ACK is not asking for a retransmission: as in
    /// Wireshark, an ACK advertising a zero window is never a duplicate ACK.
    #[test]
    fn repeated_zero_window_acks_are_not_dup_acks() {
        let mut s = handshake();
        s.push(seg(true, "PA", 101, 901, 1000, b"aaaabbbb")); // 1..9
        s.push(seg(false, "A", 901, 105, 0, b"")); // 4 taken, no room left
        s.push(seg(false, "A", 901, 105, 0, b"")); // the same, again
        s.push(seg(false, "A", 901, 105, 0, b""));
        let recs = run_to_end(&s);
        for row in &rows(&recs)[4..7] {
            assert_eq!(row.labels, [Label::ZeroWindow]);
        }
        assert_eq!(summary(&recs).expect("summary").dup_acks, 0);
    }

    /// A sender facing a zero window probes it with one byte; the receiver's replies repeat
    /// its ACK and zero window, and are not duplicate ACKs (Wireshark: TCP ZeroWindowProbe,
    /// TCP ZeroWindowProbeAck).
    #[test]
    fn zero_window_probes_and_their_acks_are_not_dup_acks() {
        let mut s = handshake();
        s.push(seg(true, "PA", 101, 901, 1000, b"aaaa")); // 1..5
        s.push(seg(false, "A", 901, 105, 0, b"")); // all taken, no room left
        s.push(seg(true, "A", 105, 901, 1000, b"b")); // probe: the next byte
        s.push(seg(false, "A", 901, 105, 0, b"")); // still no room: the byte is not taken
        s.push(seg(true, "A", 105, 901, 1000, b"b")); // the same probe again
        s.push(seg(false, "A", 901, 105, 0, b""));
        s.push(seg(false, "A", 901, 105, 500, b"")); // room again: a window update
        s.push(seg(true, "PA", 105, 901, 1000, b"bcd")); // the probe byte and more
        s.push(seg(false, "A", 901, 108, 500, b""));
        let recs = run_to_end(&s);
        let r = rows(&recs);
        assert_eq!(r[4].labels, [Label::ZeroWindow]);
        assert_eq!(r[5].labels, [Label::ZeroWindowProbe]);
        assert_eq!(r[6].labels, [Label::ZeroWindowProbeAck, Label::ZeroWindow]);
        assert_eq!(r[7].labels, [Label::ZeroWindowProbe]);
        assert_eq!(r[8].labels, [Label::ZeroWindowProbeAck, Label::ZeroWindow]);
        assert!(r[9].labels.is_empty(), "{:?}", r[9].labels);
        // The probe's byte was not taken, so here it is new data (as in Wireshark).
        assert!(r[10].labels.is_empty(), "{:?}", r[10].labels);
        assert!(r[11].labels.is_empty(), "{:?}", r[11].labels);
        assert_eq!(
            r[6].labels
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>(),
            ["zero window probe ACK", "zero window"]
        );
        let sum = summary(&recs).expect("summary at the end");
        assert_eq!(sum.dup_acks, 0);
        assert_eq!(sum.bytes, [7, 0]);

        // A probe whose byte the receiver takes once it has room: the data after it follows
        // on, with no segment missing in between.
        let mut s = handshake();
        s.push(seg(true, "PA", 101, 901, 1000, b"aaaa"));
        s.push(seg(false, "A", 901, 105, 0, b""));
        s.push(seg(true, "A", 105, 901, 1000, b"b")); // probe
        s.push(seg(false, "A", 901, 106, 500, b"")); // taken
        s.push(seg(true, "PA", 106, 901, 1000, b"cd"));
        let recs = run_to_end(&s);
        let r = rows(&recs);
        assert_eq!(r[5].labels, [Label::ZeroWindowProbe]);
        assert!(r[6].labels.is_empty(), "{:?}", r[6].labels);
        assert!(r[7].labels.is_empty(), "{:?}", r[7].labels);
        assert_eq!((r[7].seq, r[7].len), (6, 2));
        assert_eq!(summary(&recs).expect("summary").bytes, [7, 0]);
    }

    #[test]
    fn three_segment_close() {
        let mut s = handshake();
        s.push(seg(true, "FA", 101, 901, 1000, b""));
        s.push(seg(false, "FA", 901, 102, 1000, b""));
        s.push(seg(true, "A", 102, 902, 1000, b""));
        let recs = run(&s);
        let r = rows(&recs);
        // B's state changes on its FIN-ACK, the first sign that A's FIN reached it; A's on
        // its last ACK.
        assert_eq!(r[3].states, [State::FinWait1, State::Established]);
        assert_eq!(r[4].states, [State::FinWait2, State::LastAck]);
        assert_eq!(r[5].states, [State::TimeWait, State::Closed]);
        let sum = summary(&recs).expect("closed");
        assert_eq!(sum.close, Close::ThreeWay);
        assert_eq!(sum.first_closer, Some(Side::A));
        assert_eq!(sum.close_segments, 3);
        assert!(sum.note().is_some_and(|n| n.contains("rode on the ACK")));
    }

    /// The transitions of each end, in order, as (from, to).
    fn path(recs: &[Record], side: Side) -> Vec<(State, State)> {
        recs.iter()
            .filter_map(|r| match r {
                Record::State(t) if t.side == side => Some((t.from, t.to)),
                _ => None,
            })
            .collect()
    }

    /// Crossing FINs: neither end passes through CLOSE_WAIT, which a capture that took each
    /// FIN's departure for its arrival showed (B: CLOSE_WAIT -> CLOSING, no such transition).
    #[test]
    fn simultaneous_close_takes_each_end_through_closing() {
        let mut s = handshake();
        s.push(seg(true, "FA", 101, 901, 1000, b""));
        s.push(seg(false, "FA", 901, 101, 1000, b""));
        s.push(seg(true, "A", 102, 902, 1000, b""));
        s.push(seg(false, "A", 902, 102, 1000, b""));
        let recs = run(&s);
        use State::*;
        let after_handshake = |side| path(&recs, side).split_off(2);
        assert_eq!(
            after_handshake(Side::A),
            [
                (Established, FinWait1),
                (FinWait1, Closing),
                (Closing, TimeWait)
            ]
        );
        assert_eq!(
            after_handshake(Side::B),
            [
                (Established, FinWait1),
                (FinWait1, Closing),
                (Closing, TimeWait)
            ]
        );
        let sum = summary(&recs).expect("closed");
        assert_eq!(sum.close, Close::Simultaneous);
        // And a normal close never shows a transition the RFC does not have.
        let mut s = handshake();
        s.push(seg(true, "FA", 101, 901, 1000, b""));
        s.push(seg(false, "A", 901, 102, 1000, b""));
        s.push(seg(false, "FA", 901, 102, 1000, b""));
        s.push(seg(true, "A", 102, 902, 1000, b""));
        let recs = run(&s);
        assert_eq!(
            path(&recs, Side::A).split_off(2),
            [
                (Established, FinWait1),
                (FinWait1, FinWait2),
                (FinWait2, TimeWait)
            ]
        );
        assert_eq!(
            path(&recs, Side::B).split_off(2),
            [
                (Established, CloseWait),
                (CloseWait, LastAck),
                (LastAck, Closed)
            ]
        );
    }

    /// A half-close: A's FIN, then B goes on sending. The close's own segments are the FINs
    /// and their first ACKs; B's data and A's ACKs of it are counted apart and named.
    #[test]
    fn half_close_is_named_and_kept_out_of_the_close_segments() {
        let mut s = handshake();
        s.push(seg(true, "FA", 101, 901, 1000, b""));
        s.push(seg(false, "A", 901, 102, 1000, b""));
        for i in 0..3u32 {
            s.push(seg(false, "PA", 901 + 100 * i, 102, 1000, &[b'x'; 100]));
            s.push(seg(true, "A", 102, 1001 + 100 * i, 1000, b""));
        }
        // A retransmission is not new data.
        s.push(seg(false, "PA", 1101, 102, 1000, &[b'x'; 100]));
        s.push(seg(false, "FA", 1201, 102, 1000, b""));
        s.push(seg(true, "A", 102, 1202, 1000, b""));
        let recs = run(&s);
        let sum = summary(&recs).expect("closed");
        assert_eq!(sum.close, Close::FourWay);
        assert_eq!(sum.close_segments, 4);
        let flags: Vec<String> = sum
            .close_flags
            .iter()
            .map(|(side, f)| format!("{side}:{f}"))
            .collect();
        assert_eq!(flags, ["A:FIN-ACK", "B:ACK", "B:FIN-ACK", "A:ACK"]);
        // Three new segments: the retransmission is not one.
        assert_eq!(sum.after_fin, (300, 3));
        assert!(
            sum.note().is_some_and(|n| n.contains("half-close")),
            "{:?}",
            sum.note()
        );
        assert_eq!(sum.states, [State::TimeWait, State::Closed]);
        // B's state: CLOSE_WAIT from its ACK of the FIN on, while it sends.
        let r = rows(&recs);
        assert!(r[5..11].iter().all(|r| r.states[1] == State::CloseWait));
    }

    /// A FIN sent again is no sign that the first one arrived: crossing FINs after a
    /// retransmitted one still take both ends through CLOSING, never CLOSE_WAIT -> CLOSING.
    #[test]
    fn a_retransmitted_fin_is_no_evidence_of_arrival() {
        let mut s = handshake();
        s.push(seg(true, "FA", 101, 901, 1000, b""));
        s.push(seg(true, "FA", 101, 901, 1000, b""));
        s.push(seg(false, "FA", 901, 101, 1000, b""));
        s.push(seg(true, "A", 102, 902, 1000, b""));
        s.push(seg(false, "A", 902, 102, 1000, b""));
        let recs = run(&s);
        use State::*;
        assert_eq!(
            path(&recs, Side::B).split_off(2),
            [
                (Established, FinWait1),
                (FinWait1, Closing),
                (Closing, TimeWait)
            ]
        );
        assert!(
            !recs
                .iter()
                .any(|r| matches!(r, Record::State(t) if t.from == CloseWait && t.to == Closing))
        );
        assert_eq!(summary(&recs).expect("closed").close, Close::Simultaneous);
    }

    /// B closes for good, A writes after B's FIN, B's kernel resets: not a half-close.
    #[test]
    fn data_after_a_full_close_is_reset_not_a_half_close() {
        let mut s = handshake();
        s.push(seg(false, "FA", 901, 101, 1000, b""));
        s.push(seg(true, "PA", 101, 902, 1000, b"GET / HTTP/1.1\r\n"));
        s.push(seg(false, "R", 902, 0, 0, b""));
        let recs = run(&s);
        let sum = summary(&recs).expect("reset");
        assert_eq!(sum.close, Close::Reset(Side::B));
        let note = sum.note().unwrap_or_default();
        assert!(
            note.contains("closed for good") && !note.contains("half-close"),
            "{note}"
        );
        let text = crate::trace::print::summary_lines(sum).join("\n");
        assert!(!text.contains("half-close"), "{text}");
    }

    /// A SYN-ACK with a new ISN on a 4-tuple whose connection ended starts a new connection,
    /// as a new SYN does, when the capture missed that SYN.
    #[test]
    fn port_reuse_seen_from_the_syn_ack() {
        let mut s = handshake();
        s.push(seg(true, "FA", 101, 901, 1000, b""));
        s.push(seg(false, "FA", 901, 102, 1000, b""));
        s.push(seg(true, "A", 102, 902, 1000, b""));
        s.push(seg(false, "SA", 7000, 5001, 1000, b""));
        s.push(seg(true, "A", 5001, 7001, 1000, b""));
        let recs = run(&s);
        let opened: Vec<Start> = recs
            .iter()
            .filter_map(|r| match r {
                Record::Opened { start, .. } => Some(*start),
                _ => None,
            })
            .collect();
        assert_eq!(opened, [Start::Syn, Start::SynAck]);
        let last = rows(&recs).pop().expect("rows");
        assert_eq!((last.conn, last.seq, last.ack), (2, 1, Some(1)));
        assert_eq!(last.states, [State::Established, State::Established]);
    }

    #[test]
    fn server_closes_first_four_segments() {
        let mut s = handshake();
        s.push(seg(false, "FA", 901, 101, 1000, b""));
        s.push(seg(true, "A", 101, 902, 1000, b""));
        s.push(seg(true, "FA", 101, 902, 1000, b""));
        s.push(seg(false, "A", 902, 102, 1000, b""));
        let recs = run(&s);
        let sum = summary(&recs).expect("closed");
        assert_eq!(sum.close, Close::FourWay);
        assert_eq!(sum.first_closer, Some(Side::B));
        assert_eq!(sum.states, [State::Closed, State::TimeWait]);
        assert_eq!(sum.note(), None);
    }

    #[test]
    fn refused_connection() {
        let recs = run(&[
            seg(true, "S", 100, 0, 1000, b""),
            seg(false, "RA", 0, 101, 0, b""),
        ]);
        let sum = summary(&recs).expect("ended");
        assert_eq!(sum.close, Close::Refused);
        assert_eq!(sum.handshake, None);
        // A RST's zero window is not a receiver out of space.
        assert!(rows(&recs)[1].labels.is_empty());
    }

    #[test]
    fn port_reuse_starts_a_new_connection_and_midstream_joins() {
        let mut s = handshake();
        s.push(seg(true, "RA", 101, 901, 0, b""));
        s.push(seg(true, "S", 5000, 0, 1000, b""));
        let recs = run(&s);
        let opened = recs
            .iter()
            .filter(|r| matches!(r, Record::Opened { .. }))
            .count();
        assert_eq!(opened, 2);

        // Reused while the old connection still looked open: the old one is summarised.
        let mut s = handshake();
        s.push(seg(true, "S", 7000, 0, 1000, b""));
        let recs = run(&s);
        assert!(
            matches!(recs.iter().find(|r| matches!(r, Record::Summary(_))), Some(Record::Summary(x)) if x.conn == 1 && x.close == Close::Open)
        );
        assert_eq!(rows(&recs)[3].conn, 2);

        let recs = run(&[seg(false, "PA", 7000, 300, 1000, b"mid")]);
        let r = rows(&recs);
        assert_eq!((r[0].seq, r[0].ack), (1, Some(1)));
        assert_eq!(r[0].states, [State::Established, State::Established]);
    }

    #[test]
    fn table_stays_bounded() {
        let mut t = Tracker::new();
        let mut out = Vec::new();
        for i in 0..(MAX_CONNS as u32 + 10) {
            let p = {
                let b = PacketBuilder::ipv4(
                    [10, 0, (i >> 16) as u8, (i >> 8) as u8],
                    [10, 1, 0, i as u8],
                    64,
                )
                .tcp(1000, 80, i, 100)
                .syn();
                let mut v = Vec::new();
                b.write(&mut v, b"").expect("write");
                decode(Link::Raw, &v).expect("valid")
            };
            t.observe(Duration::ZERO, &p, &mut out);
            out.clear();
        }
        assert!(t.conns.len() <= MAX_CONNS);
        assert!(t.order.len() <= 2 * MAX_CONNS + 1);
    }

    proptest::proptest! {
        /// Any sequence of segments (random flags, numbers, windows, payloads, both ways)
        /// goes through the tracker and both printers without a panic.
        #[test]
        fn any_segments_never_panic(
            segs in proptest::collection::vec(
                (proptest::bool::ANY, 0u8..64, proptest::num::u32::ANY, proptest::num::u32::ANY,
                 proptest::num::u16::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..8)),
                1..40,
            )
        ) {
            let flag_sets = ["S", "SA", "A", "PA", "FA", "F", "R", "RA", "SF", "SFRA"];
            let packets: Vec<Packet> = segs
                .iter()
                .map(|(a, f, seq, ack, win, data)| {
                    seg(*a, flag_sets[*f as usize % flag_sets.len()], *seq % 64, *ack % 64, *win, data)
                })
                .collect();
            let mut t = Tracker::new();
            let mut out = Vec::new();
            let mut text = crate::trace::print::Printer::new(Vec::new(), crate::trace::print::Format::Text, true);
            let mut json = crate::trace::print::Printer::new(Vec::new(), crate::trace::print::Format::Json, false);
            for (i, p) in packets.iter().enumerate() {
                t.observe(Duration::from_micros(i as u64), p, &mut out);
                text.packet(&out, p, Duration::ZERO).expect("write to Vec");
                json.packet(&out, p, Duration::ZERO).expect("write to Vec");
                out.clear();
            }
            t.finish(&mut out);
            text.records(&out).expect("write to Vec");
        }
    }
}
