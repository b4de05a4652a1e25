//! Bytes and text on the wire: encodings, bounded line framing, hex in and out, sanitising, and
//! taking telnet commands out of what a client sends.
//!
//! Everything here is pure (no I/O) so that each piece can be tested on its own and with
//! proptest. The session's `Outbound` and `Inbound` transforms are built from these parts.

mod encoding;
mod hex;
mod lines;
mod sanitize;
mod telnet;

pub use encoding::{Encoding, TextDecoder, TextEncoder};
pub use hex::{HexDump, parse_hex};
pub use lines::{LineSplitter, Piece};
pub use sanitize::sanitize_into;
pub use telnet::TelnetFilter;

/// What can go wrong turning user input into bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The label names no encoding in the WHATWG Encoding Standard.
    // Quoted as given, not `{:?}`: the room escapes what a client sent, once.
    #[error("unknown encoding \"{0}\" (try utf-8, gbk, gb18030, big5, shift_jis, euc-kr, latin1)")]
    UnknownEncoding(String),
    /// The encoding can be decoded but encoding_rs cannot produce it (UTF-16).
    #[error("encoding {0} can be read but not sent; use utf-8 or a legacy encoding")]
    DecodeOnly(&'static str),
    /// A typed hex line could not be parsed.
    #[error("bad hex: {0}")]
    BadHex(String),
}
