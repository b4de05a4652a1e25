//! Wire -> terminal: what received bytes become on stdout.
//!
//! Pass-through writes bytes untouched. Otherwise the stream (or each datagram) is decoded from
//! the wire encoding with a stateful decoder, or shown as a hexdump; on a terminal each message
//! is sanitised and ends with a newline; tags (sender, time) start each message when asked for.
//! It also watches for the quit word, compared on the wire bytes.

use super::outbound::Flow;
use super::{Eol, Options};
use crate::codec::{Encoding, HexDump, TextDecoder, sanitize_into};
use crate::transport::display_addr;
use std::net::SocketAddr;

/// The wire -> terminal transform of one conversation.
pub struct Inbound {
    encoding: Option<Encoding>,
    decoder: Option<TextDecoder>,
    hex: Option<HexDump>,
    quit: Option<QuitMatcher>,
    pretty: bool,
    show_peer: bool,
    timestamps: bool,
    /// Datagrams are written as they are (UDP `--raw`, output not a terminal).
    raw: bool,
    at_line_start: bool,
    text: String,
    /// On a terminal: what an unfinished line shows as, held for [`LINE_HOLD`] in case the
    /// rest of it comes in the next read.
    held: Vec<u8>,
    /// When the held line was first held: it waits [`LINE_HOLD`] from then, however many
    /// reads add to it.
    held_since: Option<std::time::Instant>,
    /// On a terminal: the last line was ended by a time-out, not by the peer; a line end that
    /// comes first in the next read is that line's own, not an empty line.
    broken: bool,
    /// On a terminal, an unfinished line waits for its rest; not with `--eol none`, where the
    /// peer is taken to send bare messages, as we do, and each read is shown as it comes.
    hold_lines: bool,
}

/// How long, on a terminal, a read that ends inside a line waits for the rest of that line.
/// After it the unfinished line is shown as a message of its own (the tutorial's peers send
/// lines without endings).
pub const LINE_HOLD: std::time::Duration = std::time::Duration::from_millis(100);

/// An unfinished line longer than this is shown at once: a peer streaming one endless line
/// is seen as it comes, in pieces of about this size, and memory stays bounded.
const HOLD_MAX: usize = 4096;

impl Inbound {
    /// The transform for `opts`.
    pub fn new(opts: &Options) -> Self {
        let encoding = opts.encoding;
        // Tags alone (-t, --show-peer into a pipe or file) go in front of the bytes as they
        // came; only a terminal, or an encoding, needs text.
        let needs_text = opts.pretty;
        let quit = opts.quit.as_ref().map(|w| {
            let mut word = Vec::new();
            match encoding {
                Some(e) => {
                    e.encode_message(w, &mut word);
                }
                None => word.extend_from_slice(w.as_bytes()),
            }
            QuitMatcher {
                word,
                line: Vec::new(),
                overflow: false,
            }
        });
        Inbound {
            encoding,
            decoder: match encoding {
                Some(e) => Some(e.decoder()),
                None if needs_text => Some(Encoding::UTF8.decoder()),
                None => None,
            },
            hex: opts.hex.then(HexDump::default),
            quit,
            pretty: opts.pretty,
            show_peer: opts.show_peer,
            timestamps: opts.timestamps,
            raw: opts.raw && !opts.pretty,
            at_line_start: true,
            text: String::new(),
            held: Vec::new(),
            held_since: None,
            broken: false,
            hold_lines: opts.eol != Eol::None,
        }
    }

    /// Until when a held line waits for its rest (see [`LINE_HOLD`]); none when no line is
    /// held.
    pub fn hold_deadline(&self) -> Option<std::time::Instant> {
        self.held_since.map(|t| t + LINE_HOLD)
    }

    /// The held line is shown now, as a message of its own: it waited long enough, or the
    /// conversation ended.
    pub fn release_line(&mut self, out: &mut Vec<u8>) {
        self.held_since = None;
        if !self.held.is_empty() {
            out.append(&mut self.held);
            out.push(b'\n');
            self.at_line_start = true;
            self.broken = true;
        }
    }

    /// Appends what `chunk`, read from a stream, shows as to `out`.
    pub fn stream(&mut self, chunk: &[u8], peer: SocketAddr, out: &mut Vec<u8>) -> Flow {
        let quit = self.quit.as_mut().is_some_and(|q| q.feed(chunk));
        if let Some(dump) = &mut self.hex {
            let mut s = String::new();
            if self.show_peer || self.timestamps {
                tag(&mut s, self.show_peer.then_some(peer), self.timestamps);
                s.push_str(&format!("{} bytes\n", chunk.len()));
            }
            dump.dump(chunk, &mut s);
            out.extend_from_slice(s.as_bytes());
        } else if let Some(dec) = &mut self.decoder {
            let mut text = std::mem::take(&mut self.text);
            text.clear();
            dec.decode(chunk, false, &mut text);
            if self.pretty {
                // A line ended by the time-out gets its own line end without an empty line,
                // even when that line end comes in two reads.
                if self.broken && !text.is_empty() {
                    if text == "\r" {
                        text.clear();
                    } else {
                        self.broken = false;
                        let rest = text.strip_prefix("\r\n").or(text.strip_prefix('\n'));
                        if let Some(rest) = rest {
                            text = rest.to_string();
                        }
                    }
                }
                let start = out.len();
                out.append(&mut self.held);
                self.messages(&text, peer, out);
                if !self.at_line_start {
                    // The line is unfinished: held until its rest comes or LINE_HOLD passes,
                    // so that it does not run into the next message on the screen.
                    let end = out[start..]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(start, |i| start + i + 1);
                    self.held = out.split_off(end);
                    // A line held anew (the one before it ended in this read) waits from now.
                    if end > start || self.held_since.is_none() {
                        self.held_since = Some(std::time::Instant::now());
                    }
                    if quit || !self.hold_lines || self.held.len() > HOLD_MAX {
                        self.release_line(out);
                    }
                } else {
                    self.held_since = None;
                }
            } else {
                self.messages(&text, peer, out);
            }
            self.text = text;
        } else if self.show_peer || self.timestamps {
            for seg in chunk.split_inclusive(|&b| b == b'\n') {
                if self.at_line_start {
                    let mut s = String::new();
                    tag(&mut s, self.show_peer.then_some(peer), self.timestamps);
                    out.extend_from_slice(s.as_bytes());
                }
                out.extend_from_slice(seg);
                self.at_line_start = seg.ends_with(b"\n");
            }
        } else {
            out.extend_from_slice(chunk);
        }
        if quit { Flow::Quit } else { Flow::Continue }
    }

    /// The stream ended: flush a partial character and close an unfinished line on a terminal.
    pub fn finish_stream(&mut self, peer: SocketAddr, out: &mut Vec<u8>) {
        out.append(&mut self.held);
        self.held_since = None;
        if let Some(dec) = &mut self.decoder {
            let mut text = String::new();
            dec.decode(&[], true, &mut text);
            self.messages(&text, peer, out);
        }
        if (self.pretty || self.show_peer || self.timestamps) && !self.at_line_start {
            out.push(b'\n');
            self.at_line_start = true;
        }
    }

    /// Appends what one datagram shows as to `out`: always exactly one message.
    pub fn datagram(&mut self, payload: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> Flow {
        if self.raw {
            out.extend_from_slice(payload);
            return Flow::Continue;
        }
        let body = payload
            .strip_suffix(b"\n")
            .map(|p| p.strip_suffix(b"\r").unwrap_or(p))
            .unwrap_or(payload);
        // The quit word ends it as the whole datagram (the tutorial's check) or as any one of
        // the lines a datagram of several lines is shown as.
        let quit = self.quit.as_ref().is_some_and(|q| {
            body.split(|&b| b == b'\n')
                .any(|line| line.strip_suffix(b"\r").unwrap_or(line) == q.word)
        });
        let mut s = String::new();
        let tagged = self.show_peer || self.timestamps;
        if tagged {
            tag(&mut s, self.show_peer.then_some(from), self.timestamps);
        }
        if let Some(dump) = &mut self.hex {
            s.push_str(&format!("{} bytes\n", payload.len()));
            dump.reset();
            dump.dump(payload, &mut s);
            out.extend_from_slice(s.as_bytes());
        } else if self.pretty || self.encoding.is_some() {
            let mut text = String::new();
            self.encoding
                .unwrap_or(Encoding::UTF8)
                .decode_message(body, &mut text);
            if self.pretty {
                sanitize_into(&text, &mut s);
            } else {
                s.push_str(&text);
            }
            s.push('\n');
            out.extend_from_slice(s.as_bytes());
        } else {
            // Bytes as they came, after the tag if there is one.
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(body);
            out.push(b'\n');
        }
        if quit { Flow::Quit } else { Flow::Continue }
    }

    fn messages(&mut self, text: &str, peer: SocketAddr, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(text.len() + 32);
        for seg in text.split_inclusive('\n') {
            if self.at_line_start && (self.show_peer || self.timestamps) {
                tag(&mut s, self.show_peer.then_some(peer), self.timestamps);
            }
            let (content, newline) = match seg.strip_suffix('\n') {
                Some(c) => (c, true),
                None => (seg, false),
            };
            if self.pretty {
                sanitize_into(content.strip_suffix('\r').unwrap_or(content), &mut s);
            } else {
                s.push_str(content);
            }
            if newline {
                s.push('\n');
            }
            self.at_line_start = newline;
        }
        out.extend_from_slice(s.as_bytes());
    }
}

fn tag(s: &mut String, peer: Option<SocketAddr>, time: bool) {
    if time {
        s.push_str(&chrono::Local::now().format("[%H:%M:%S%.3f] ").to_string());
    }
    if let Some(p) = peer {
        s.push_str(&format!("[{}] ", display_addr(p)));
    }
}

/// Spots the quit word in a byte stream: a line equal to it, or a read that ends with it as a
/// message of its own (peers like the tutorial's send `end` with no newline). Keeps at most the
/// word's length plus one byte. (A line such as `endless` split by the network right after
/// `end` would also match; peers that send lines are matched on whole lines first.)
struct QuitMatcher {
    word: Vec<u8>,
    line: Vec<u8>,
    overflow: bool,
}

impl QuitMatcher {
    fn feed(&mut self, chunk: &[u8]) -> bool {
        for &b in chunk {
            if b == b'\n' {
                if self.matches() {
                    return true;
                }
                self.line.clear();
                self.overflow = false;
            } else if self.line.len() <= self.word.len() {
                self.line.push(b);
            } else {
                self.overflow = true;
            }
        }
        // What this read carried after its last newline, alone, is a message of its own.
        let tail = match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => &chunk[i + 1..],
            None => chunk,
        };
        tail.strip_suffix(b"\r").unwrap_or(tail) == self.word
    }

    fn matches(&self) -> bool {
        !self.overflow && self.line.strip_suffix(b"\r").unwrap_or(&self.line) == self.word
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    #[test]
    fn gbk_split_and_sanitised_on_a_terminal() {
        let opts = Options {
            encoding: Some(Encoding::GBK),
            pretty: true,
            ..Options::default()
        };
        let mut i = Inbound::new(&opts);
        let mut out = Vec::new();
        // A character and a line split across reads: the unfinished line is held...
        i.stream(b"\xc4\xe3\xba", peer(), &mut out);
        assert!(out.is_empty() && i.hold_deadline().is_some());
        // ...and its rest, within LINE_HOLD, completes it on one line.
        i.stream(b"\xc3\x1b[2J\n", peer(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "你好\\x1b[2J\n");
    }

    /// On a terminal an unfinished line waits for its rest; after LINE_HOLD it is shown as a
    /// message of its own, and the line end that follows it later makes no empty line.
    #[test]
    fn a_line_split_across_reads_is_shown_whole_or_once() {
        let opts = Options {
            pretty: true,
            quit: Some("end".into()),
            ..Options::default()
        };
        let mut i = Inbound::new(&opts);
        let mut out = Vec::new();
        i.stream(b"one\nmsg", peer(), &mut out);
        assert_eq!(out, b"one\n");
        i.release_line(&mut out);
        assert_eq!(out, b"one\nmsg\n");
        i.stream(b"\r\nmsg2", peer(), &mut out);
        i.stream(b"\n", peer(), &mut out);
        assert_eq!(out, b"one\nmsg\nmsg2\n");
        // A genuine empty line later is shown.
        i.stream(b"\n", peer(), &mut out);
        assert_eq!(out, b"one\nmsg\nmsg2\n\n");
        // The quit word without a line end is shown at once, and the stream's end shows what
        // is held.
        out.clear();
        assert_eq!(i.stream(b"end", peer(), &mut out), Flow::Quit);
        assert_eq!(out, b"end\n");
        let mut i = Inbound::new(&opts);
        out.clear();
        i.stream(b"last words", peer(), &mut out);
        i.finish_stream(peer(), &mut out);
        assert_eq!(out, b"last words\n");
    }

    /// The hold is bounded: its deadline is set by the first piece and more pieces do not push
    /// it back, a line longer than HOLD_MAX is shown at once, and a line end split into "\r"
    /// and "\n" after a release makes no empty line.
    #[test]
    fn the_hold_is_bounded_in_time_and_size() {
        let opts = Options {
            pretty: true,
            ..Options::default()
        };
        let mut i = Inbound::new(&opts);
        let mut out = Vec::new();
        i.stream(b"a", peer(), &mut out);
        let first = i.hold_deadline().expect("held");
        i.stream(b"b", peer(), &mut out);
        assert_eq!(i.hold_deadline(), Some(first));
        assert!(out.is_empty());
        let long = vec![b'x'; HOLD_MAX];
        i.stream(&long, peer(), &mut out);
        assert_eq!(out.len(), HOLD_MAX + 3, "shown at once, with its line end");
        assert_eq!(i.hold_deadline(), None);
        out.clear();
        i.stream(b"\r", peer(), &mut out);
        i.stream(b"\n", peer(), &mut out);
        i.stream(b"next\n", peer(), &mut out);
        assert_eq!(out, b"next\n");
    }

    /// With `--eol none` the peer's messages have no line ends: each read is shown at once, as
    /// a line of its own, instead of waiting for the rest of a line that will not come.
    #[test]
    fn with_eol_none_each_read_is_shown_at_once() {
        let opts = Options {
            pretty: true,
            eol: Eol::None,
            ..Options::default()
        };
        let mut i = Inbound::new(&opts);
        let mut out = Vec::new();
        i.stream("第一行".as_bytes(), peer(), &mut out);
        assert_eq!(i.hold_deadline(), None);
        i.stream("第二行".as_bytes(), peer(), &mut out);
        i.stream(b"three\n", peer(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "第一行\n第二行\nthree\n");
    }

    #[test]
    fn quit_word_alone_or_as_a_line() {
        let opts = Options {
            quit: Some("end".into()),
            ..Options::default()
        };
        let mut i = Inbound::new(&opts);
        let mut out = Vec::new();
        assert_eq!(i.stream(b"endless\nbut", peer(), &mut out), Flow::Continue);
        assert_eq!(i.stream(b"\nend", peer(), &mut out), Flow::Quit);
        // The tutorial's peers send messages without newlines: each read is one message.
        let mut i = Inbound::new(&opts);
        assert_eq!(
            i.stream("你好".as_bytes(), peer(), &mut out),
            Flow::Continue
        );
        assert_eq!(i.stream(b"end", peer(), &mut out), Flow::Quit);
        let mut i = Inbound::new(&opts);
        assert_eq!(i.stream(b"x\r\nend\r\n", peer(), &mut out), Flow::Quit);
        assert_eq!(i.datagram(b"end\n", peer(), &mut out), Flow::Quit);
        assert_eq!(i.datagram(b"ends", peer(), &mut out), Flow::Continue);
        // A datagram of several lines is shown as lines: the quit word may be one of them.
        assert_eq!(i.datagram(b"hi\r\nend", peer(), &mut out), Flow::Quit);
        assert_eq!(i.datagram(b"hi\nend\n", peer(), &mut out), Flow::Quit);
        assert_eq!(i.datagram(b"hi\nendless", peer(), &mut out), Flow::Continue);
    }

    #[test]
    fn datagrams_are_tagged_lines() {
        let opts = Options {
            show_peer: true,
            ..Options::default()
        };
        let mut i = Inbound::new(&opts);
        let mut out = Vec::new();
        i.datagram(b"hi\n", peer(), &mut out);
        assert_eq!(out, b"[127.0.0.1:9] hi\n");
        // Bytes that are not UTF-8 (GBK here) pass untouched after the tag.
        out.clear();
        i.datagram(b"\xc4\xe3\xba\xc3", peer(), &mut out);
        assert_eq!(out, b"[127.0.0.1:9] \xc4\xe3\xba\xc3\n");
        // And on a stream, each line gets its tag, split reads or not.
        let mut i = Inbound::new(&opts);
        out.clear();
        i.stream(b"\xc4\xe3\n\xba", peer(), &mut out);
        i.stream(b"\xc3\nx", peer(), &mut out);
        i.finish_stream(peer(), &mut out);
        assert_eq!(
            out,
            b"[127.0.0.1:9] \xc4\xe3\n[127.0.0.1:9] \xba\xc3\n[127.0.0.1:9] x\n"
        );
    }
}
