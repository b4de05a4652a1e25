//! The TCP connection states of RFC 9293 §3.3.2 (formerly RFC 793 §3.2), named as the RFC and
//! `ss`/`netstat` name them.

use std::fmt;

/// The state one end of a TCP connection is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// No connection.
    Closed,
    /// Waiting for a connection request (a passive open).
    Listen,
    /// Sent a SYN, waiting for the matching SYN-ACK.
    SynSent,
    /// Received a SYN and replied SYN-ACK, waiting for its acknowledgement.
    SynRcvd,
    /// Open: data flows both ways.
    Established,
    /// Sent FIN (active close), waiting for its ACK or the peer's FIN.
    FinWait1,
    /// Own FIN acknowledged, waiting for the peer's FIN.
    FinWait2,
    /// Received the peer's FIN, waiting for the local application to close.
    CloseWait,
    /// Both sent FIN before seeing the other's (simultaneous close), own FIN not yet acked.
    Closing,
    /// Sent FIN after the peer's (passive close), waiting for its ACK.
    LastAck,
    /// Waiting 2 MSL so that the last ACK can be resent and old segments die out.
    TimeWait,
}

impl State {
    /// The RFC's name, with underscores as Linux prints them.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN_SENT",
            State::SynRcvd => "SYN_RCVD",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN_WAIT_1",
            State::FinWait2 => "FIN_WAIT_2",
            State::CloseWait => "CLOSE_WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST_ACK",
            State::TimeWait => "TIME_WAIT",
        }
    }

    /// This end has finished with the connection (nothing more will be sent but a last ACK).
    pub fn is_finished(self) -> bool {
        matches!(self, State::Closed | State::TimeWait)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}
