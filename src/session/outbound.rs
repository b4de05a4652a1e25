//! Terminal -> wire: what typed (or piped) bytes become on the socket.
//!
//! Pass-through moves bytes untouched. Otherwise input is framed into lines (bounded), and each
//! line is checked for the quit word, then parsed as hex or transcoded from UTF-8 to the wire
//! encoding, and given the chosen line ending (TCP) or sent as one datagram (UDP).

use super::{Eol, Events, Options};
use crate::codec::{Encoding, LineSplitter, Piece, TextDecoder, parse_hex};

/// The largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The longest typed line kept for one datagram. What counts is the datagram's size after
/// encoding or hex parsing, which the kernel checks when it is sent (65,507 bytes over IPv4,
/// 65,527 over IPv6); a typed line can be several times that: up to six characters per byte
/// in hex as network assistants write it (`0x41, `), at most 1.5 bytes per byte in text (CJK
/// typed in UTF-8, sent in GBK). A line longer than this is too long however it is written.
const DATAGRAM_LINE_MAX: usize = 8 * MAX_UDP_PAYLOAD + 2;

/// Whether the conversation goes on after this input.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// The quit word was just passed on: stop after sending it.
    Quit,
}

/// The terminal -> wire transform of one conversation.
pub struct Outbound {
    lines: Option<LineSplitter>,
    /// Text over TCP goes out as it comes, not held for the end of its line (as nc sends it).
    /// Hex lines and datagrams need the whole line, and with `--eol none` each line is one
    /// message.
    flush_partials: bool,
    sink: LineSink,
    /// Messages made and not yet sent, in order: those made while there was no peer
    /// (`tcp listen -k` between clients), and those of a conversation that ended before all of
    /// them were written (a client of `-k` that closed its side). They are the next peer's.
    held: std::collections::VecDeque<Vec<u8>>,
    /// How much of the first message in `held` has been sent already.
    held_sent: usize,
    /// Bytes in `held` not yet sent.
    held_bytes: usize,
    /// The input ended while nobody was connected.
    held_end: bool,
}

struct LineSink {
    encoding: Option<Encoding>,
    hex: bool,
    quit: Option<String>,
    eol: Eol,
    datagram: bool,
    /// Decoder for a line that arrives in pieces (a UTF-8 character may straddle two pieces).
    partial: Option<TextDecoder>,
    /// The start of the line passed on so far in pieces, up to one byte more than the quit
    /// word, to tell whether the whole line is the quit word.
    head: Vec<u8>,
    /// A datagram-mode (or hex) line outgrew `max`; its pieces are being skipped.
    oversize: bool,
    /// The longest line kept whole.
    max: usize,
    quit_seen: bool,
    /// Lines of input so far, to say which one a warning is about.
    line_no: u64,
    /// Input lines that were not UTF-8 (with an encoding): the first is named, the rest are
    /// counted and their number given once at the end, not a warning per line.
    not_utf8: Tally,
    /// Input lines with characters that the encoding lacks, likewise.
    unmappable: Tally,
    events: Events,
}

/// Input lines that a warning is about: the first gets the warning, the others are counted
/// for one line at the end ([`LineSink::summarize`]).
#[derive(Default)]
struct Tally {
    /// Lines affected.
    lines: u64,
    /// Things counted in them (pieces that are not UTF-8, characters without a form).
    items: u64,
    /// The last line counted, so that a line read in pieces counts once.
    last_line: u64,
    /// `lines` as the last summary gave it.
    summarized: u64,
}

impl Tally {
    /// Counts `n` things on input line `line`; true for the first line counted, which gets
    /// the warning.
    fn add(&mut self, line: u64, n: usize) -> bool {
        if n == 0 {
            return false;
        }
        let first = self.lines == 0;
        self.items += n as u64;
        if first || self.last_line != line {
            self.lines += 1;
            self.last_line = line;
        }
        first
    }

    /// The totals, when lines beyond the first were counted since the last summary.
    fn summary(&mut self) -> Option<(u64, u64)> {
        if self.lines <= 1 || self.lines == self.summarized {
            return None;
        }
        self.summarized = self.lines;
        Some((self.lines, self.items))
    }
}

impl Outbound {
    /// `datagram` selects UDP framing: one line is one datagram, with no line ending unless
    /// `--eol` asks for one.
    pub fn new(opts: &Options, datagram: bool, events: Events) -> Self {
        let raw = !datagram
            && opts.encoding.is_none()
            && !opts.hex
            && opts.quit.is_none()
            && opts.eol == Eol::AsTyped;
        let max = if datagram {
            DATAGRAM_LINE_MAX
        } else {
            opts.max_line
        };
        Outbound {
            lines: (!raw).then(|| LineSplitter::new(max)),
            flush_partials: !datagram && !opts.hex && opts.eol != Eol::None,
            sink: LineSink {
                encoding: opts.encoding.filter(|e| !e.is_utf8()),
                hex: opts.hex,
                quit: opts.quit.clone(),
                // A datagram carries no line ending unless one is asked for (`-C`, as nc -u
                // does); a line's own ending is not part of the message.
                eol: match opts.eol {
                    Eol::AsTyped if datagram => Eol::None,
                    eol => eol,
                },
                datagram,
                partial: None,
                head: Vec::new(),
                oversize: false,
                max,
                quit_seen: false,
                line_no: 0,
                not_utf8: Tally::default(),
                unmappable: Tally::default(),
                events,
            },
            held: std::collections::VecDeque::new(),
            held_sent: 0,
            held_bytes: 0,
            held_end: false,
        }
    }

    /// Holds each line until its end, as for datagrams: `tcp listen -k` gives the clients its
    /// input a line at a time, so that a half line read while one client leaves goes whole to
    /// the next. (A line cut by a write that a turn did not finish is finished for the next
    /// client: see [`Outbound::sent`].)
    pub fn keep_lines_whole(&mut self) {
        self.flush_partials = false;
    }

    /// Like [`Outbound::feed`] (or [`Outbound::finish`] when `input` is empty), but the
    /// messages are kept for the next peer, which gets them from [`Outbound::take_held`]
    /// (`tcp listen -k` between clients).
    pub fn hold(&mut self, input: &[u8]) -> Flow {
        let mut msgs = Vec::new();
        let flow = if input.is_empty() {
            self.finish(&mut msgs)
        } else {
            self.feed(input, &mut msgs)
        };
        self.queue(&mut msgs);
        flow
    }

    /// Moves `msgs` to the end of the queue of messages to send, where they stay until
    /// [`Outbound::sent`] says they were written: a conversation that ends while writing them
    /// leaves the rest for the next peer.
    pub fn queue(&mut self, msgs: &mut Vec<Vec<u8>>) {
        for m in msgs.drain(..).filter(|m| !m.is_empty()) {
            self.held_bytes += m.len();
            self.held.push_back(m);
        }
    }

    /// What to write next: the unsent part of the first queued message.
    pub fn next_unsent(&self) -> Option<&[u8]> {
        self.held.front().map(|m| &m[self.held_sent..])
    }

    /// `n` bytes of [`Outbound::next_unsent`] were written.
    pub fn sent(&mut self, n: usize) {
        let Some(front) = self.held.front() else {
            return;
        };
        let n = n.min(front.len() - self.held_sent);
        self.held_sent += n;
        self.held_bytes -= n;
        if self.held_sent == front.len() {
            self.held.pop_front();
            self.held_sent = 0;
        }
    }

    /// Records that the input ended while nobody was connected: the next peer is sent what
    /// is held and then our FIN, as if the input had ended during its conversation.
    pub fn hold_end(&mut self) -> Flow {
        self.held_end = true;
        self.hold(&[])
    }

    /// True once after [`Outbound::hold_end`]: the input ended before this conversation.
    pub fn take_held_end(&mut self) -> bool {
        std::mem::take(&mut self.held_end)
    }

    /// Bytes queued and not yet sent.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Turns `input` into messages appended to `out` (TCP: write them in order; UDP: one
    /// datagram each). Returns [`Flow::Quit`] once the quit word has been passed on.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Vec<u8>>) -> Flow {
        let sink = &mut self.sink;
        match &mut self.lines {
            None => out.push(input.to_vec()),
            Some(lines) => {
                lines.push(input, &mut |piece| sink.piece(piece, out));
                if self.flush_partials {
                    lines.flush_partial(&mut |piece| sink.piece(piece, out));
                }
            }
        }
        self.flow()
    }

    /// The input ended: pass on an unterminated last line.
    pub fn finish(&mut self, out: &mut Vec<Vec<u8>>) -> Flow {
        let sink = &mut self.sink;
        if let Some(lines) = &mut self.lines {
            lines.finish(&mut |piece| sink.piece(piece, out));
        }
        sink.summarize();
        self.flow()
    }

    /// Gives, in one line each, how many input lines in all got a warning that was given only
    /// for the first of them (not UTF-8; characters the encoding lacks), if there were more
    /// since the last time. Done when the input ends, when a conversation ends, and at the
    /// latest when this is dropped.
    pub fn summarize(&mut self) {
        self.sink.summarize();
    }

    /// [`Flow::Quit`] once the quit word has been passed on (queued, or given to `out`).
    pub fn flow(&self) -> Flow {
        if self.sink.quit_seen {
            Flow::Quit
        } else {
            Flow::Continue
        }
    }
}

impl Drop for Outbound {
    /// However the conversation ended (the quit word, the peer, an error), the counts of
    /// warnings given once are not lost.
    fn drop(&mut self) {
        self.sink.summarize();
    }
}

impl LineSink {
    fn piece(&mut self, piece: Piece<'_>, out: &mut Vec<Vec<u8>>) {
        if self.quit_seen {
            return;
        }
        match piece {
            Piece::Partial(bytes) => {
                if self.datagram || self.hex {
                    self.oversize = true;
                    return;
                }
                if let Some(q) = &self.quit {
                    let room = (q.len() + 1).saturating_sub(self.head.len());
                    self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                out.push(self.transcode(bytes, false));
            }
            Piece::Line {
                text,
                terminated,
                whole,
                cr,
            } => {
                self.line_no += 1;
                if std::mem::take(&mut self.oversize) {
                    let what = if self.datagram {
                        "one datagram"
                    } else {
                        "a hex line"
                    };
                    self.events.warn(format!(
                        "a line of more than {} bytes is too long for {what}: not sent",
                        self.max
                    ));
                    return;
                }
                // The quit word is compared with whole lines as typed, also with one that came
                // in pieces (its start is in `head`). In hex mode a line is hex whenever it
                // parses as hex (below).
                let head = std::mem::take(&mut self.head);
                let is_quit = |q: &str| {
                    let q = q.as_bytes();
                    if whole {
                        q == text
                    } else {
                        head.len() + text.len() == q.len()
                            && q.starts_with(&head)
                            && q[head.len()..] == *text
                    }
                };
                if !self.hex && self.quit.as_deref().is_some_and(is_quit) {
                    self.quit_seen = true;
                    let mut msg = self.transcode(text, true);
                    // A chosen ending goes after the quit word even at the end of input.
                    let ending = match self.eol {
                        Eol::AsTyped => self.ending(terminated, cr),
                        eol => eol.bytes(cr),
                    };
                    msg.extend_from_slice(ending);
                    out.push(msg);
                    return;
                }
                let mut msg = if self.hex {
                    match parse_hex(&String::from_utf8_lossy(text)) {
                        // `38 38` is the quit word 88 on the wire (with or without a line
                        // ending after it, as the peer's check takes it); `88` is the byte 0x88.
                        Ok(bytes) => {
                            let line = bytes
                                .strip_suffix(b"\n")
                                .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
                                .unwrap_or(&bytes);
                            self.quit_seen = whole && self.quit_wire().is_some_and(|q| q == line);
                            if !self.quit_seen
                                && let Some(q) =
                                    self.quit.as_deref().filter(|q| q.as_bytes() == text)
                            {
                                let wire = self.quit_wire().unwrap_or_default();
                                let hex: Vec<String> =
                                    wire.iter().map(|b| format!("{b:02x}")).collect();
                                self.events.warn(format!(
                                    "{q:?} was taken as hex; to type the quit word, type {}",
                                    hex.join(" ")
                                ));
                            }
                            bytes
                        }
                        // A quit word that is not hex (`end`) may be typed as it is.
                        Err(_)
                            if whole
                                && self.quit.as_deref().is_some_and(|q| q.as_bytes() == text) =>
                        {
                            self.quit_seen = true;
                            self.transcode(text, true)
                        }
                        Err(e) => {
                            self.events
                                .warn(format!("input line {}: {e}; nothing sent", self.line_no));
                            return;
                        }
                    }
                } else {
                    self.transcode(text, true)
                };
                if !self.hex {
                    msg.extend_from_slice(self.ending(terminated, cr));
                } else if terminated && self.eol != Eol::AsTyped {
                    // Hex is the message's bytes; a chosen `--eol` still goes after them.
                    msg.extend_from_slice(self.eol.bytes(false));
                }
                if !msg.is_empty() || self.datagram {
                    out.push(msg);
                }
            }
        }
    }

    /// What goes after a line: the chosen `--eol`, or without one the line's own ending (a
    /// last line without `\n` gets none, but keeps a `\r` it ended with).
    fn ending(&self, terminated: bool, cr: bool) -> &'static [u8] {
        match (self.eol, terminated) {
            (eol, true) => eol.bytes(cr),
            (Eol::AsTyped, false) if cr => b"\r",
            (_, false) => b"",
        }
    }

    /// The quit word as it goes on the wire.
    fn quit_wire(&self) -> Option<Vec<u8>> {
        let word = self.quit.as_deref()?;
        Some(match self.encoding {
            Some(enc) => {
                let mut wire = Vec::new();
                enc.encode_message(word, &mut wire);
                wire
            }
            None => word.as_bytes().to_vec(),
        })
    }

    /// The counts of the warnings given once, if more lines were counted since the last time.
    fn summarize(&mut self) {
        if let Some((lines, pieces)) = self.not_utf8.summary() {
            self.events.warn(format!(
                "in all, {lines} input lines were not UTF-8 ({pieces} pieces replaced)"
            ));
        }
        if let Some((lines, chars)) = self.unmappable.summary()
            && let Some(enc) = self.encoding
        {
            self.events.warn(format!(
                "in all, {lines} input lines had characters with no {} form ({chars} sent as '?')",
                enc.name()
            ));
        }
    }

    /// Typed bytes -> wire bytes. Without an encoding they go untouched (binary stays binary);
    /// with one they are decoded as UTF-8, statefully across the pieces of a long line, and
    /// encoded. `last` ends the line.
    fn transcode(&mut self, bytes: &[u8], last: bool) -> Vec<u8> {
        let Some(enc) = self.encoding else {
            return bytes.to_vec();
        };
        let mut dec = self
            .partial
            .take()
            .unwrap_or_else(|| Encoding::UTF8.decoder());
        let mut text = String::new();
        // Input that is not UTF-8 (a GBK file piped in with -e gbk) decodes to U+FFFD: say
        // that, rather than blame the encoding. The decoder counts it; a U+FFFD in the text
        // may also have been typed as such, which is valid UTF-8.
        let invalid = dec.decode_counting_malformed(bytes, last, &mut text);
        if !last {
            self.partial = Some(dec);
        }
        let mut wire = Vec::with_capacity(text.len());
        let unmappable = enc.encode_message(&text, &mut wire);
        // A piece of a long line belongs to the line that is still being read.
        let line = if last { self.line_no } else { self.line_no + 1 };
        if self.not_utf8.add(line, invalid) {
            self.events.warn(format!(
                "input line {line} is not UTF-8, which -e {} converts from, so bytes of it were \
                 replaced; to send bytes as they are, leave out -e (later such lines are only \
                 counted)",
                enc.name()
            ));
        }
        // The encoding may lack U+FFFD (GBK does), so those replacements were counted as
        // unmappable too; an encoding with a form for every character (GB18030) has none.
        let unmappable = unmappable.saturating_sub(invalid);
        if self.unmappable.add(line, unmappable) {
            self.events.warn(format!(
                "input line {line}: {unmappable} character(s) have no {} form and were sent \
                 as '?' (later such lines are only counted)",
                enc.name()
            ));
        }
        wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events that record what they are told, and the record.
    fn recorded() -> (Events, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let events =
            Events::new(move |e: &super::super::Event| record.lock().unwrap().push(e.to_string()));
        (events, seen)
    }

    fn run(opts: &Options, datagram: bool, input: &[&[u8]]) -> (Vec<Vec<u8>>, Flow) {
        let mut o = Outbound::new(opts, datagram, Events::new(|_| {}));
        let mut out = Vec::new();
        let mut flow = Flow::Continue;
        for chunk in input {
            flow = o.feed(chunk, &mut out);
        }
        if flow == Flow::Continue {
            flow = o.finish(&mut out);
        }
        (out, flow)
    }

    #[test]
    fn passthrough_is_untouched() {
        let (out, flow) = run(&Options::default(), false, &[b"a\r\nb\xff", b"c"]);
        assert_eq!(out.concat(), b"a\r\nb\xffc");
        assert_eq!(flow, Flow::Continue);
    }

    #[test]
    fn gbk_lines_with_crlf_and_quit() {
        let opts = Options {
            encoding: Some(Encoding::GBK),
            eol: Eol::Crlf,
            quit: Some("end".into()),
            ..Options::default()
        };
        let (out, flow) = run(&opts, false, &["你好\nend\nafter\n".as_bytes()]);
        assert_eq!(
            out,
            vec![b"\xc4\xe3\xba\xc3\r\n".to_vec(), b"end\r\n".to_vec()]
        );
        assert_eq!(flow, Flow::Quit);
    }

    #[test]
    fn datagrams_carry_no_line_ending_and_bad_hex_is_skipped() {
        let opts = Options {
            hex: true,
            ..Options::default()
        };
        let (out, _) = run(&opts, true, &[b"48 69\nzz\n0x0a"]);
        assert_eq!(out, vec![b"Hi".to_vec(), b"\n".to_vec()]);
    }

    /// A chosen `--eol` (`-C`) is honoured in datagrams and after hex lines, as nc -u -C does;
    /// `--eol none` and the default add nothing there.
    #[test]
    fn a_chosen_eol_goes_into_datagrams_and_after_hex() {
        for (eol, datagram, hex, want) in [
            (
                Eol::Crlf,
                true,
                false,
                vec![b"hi\r\n".to_vec(), b"yo".to_vec()],
            ),
            (Eol::Lf, true, false, vec![b"hi\n".to_vec(), b"yo".to_vec()]),
            (Eol::None, true, false, vec![b"hi".to_vec(), b"yo".to_vec()]),
            (
                Eol::Crlf,
                true,
                true,
                vec![b"Hi\r\n".to_vec(), b"\xff".to_vec()],
            ),
            (
                Eol::Crlf,
                false,
                true,
                vec![b"Hi\r\n".to_vec(), b"\xff".to_vec()],
            ),
            (
                Eol::AsTyped,
                false,
                true,
                vec![b"Hi".to_vec(), b"\xff".to_vec()],
            ),
        ] {
            let opts = Options {
                eol,
                hex,
                ..Options::default()
            };
            let input: &[u8] = if hex { b"48 69\nff" } else { b"hi\nyo" };
            let (out, _) = run(&opts, datagram, &[input]);
            assert_eq!(out, want, "{eol:?} datagram={datagram} hex={hex}");
        }
    }

    #[test]
    fn bytes_pass_untouched_without_an_encoding() {
        let (out, _) = run(&Options::default(), true, &[b"\xc4\xe3\xff\n"]);
        assert_eq!(out, vec![b"\xc4\xe3\xff".to_vec()]);
        let opts = Options {
            eol: Eol::Crlf,
            ..Options::default()
        };
        let (out, _) = run(&opts, false, &[b"\xff\xfe\n"]);
        assert_eq!(out.concat(), b"\xff\xfe\r\n");
    }

    #[test]
    fn quit_word_only_on_whole_lines() {
        let opts = Options {
            quit: Some("end".into()),
            max_line: 4,
            ..Options::default()
        };
        let (out, flow) = run(&opts, false, &[b"abcdend\nend\n"]);
        assert_eq!(out.concat(), b"abcdend\nend\n");
        assert_eq!(flow, Flow::Quit);
        let (_, flow) = run(&opts, false, &[b"abcdend\n"]);
        assert_eq!(flow, Flow::Continue);
    }

    /// In hex mode a line that parses as hex is hex: `88` is the byte 0x88 and goes on, while
    /// `38 38` (the quit word 88 on the wire) ends the conversation; a quit word that is not
    /// hex may be typed as it is.
    #[test]
    fn hex_mode_quit_word_is_compared_on_the_wire() {
        let opts = Options {
            quit: Some("88".into()),
            hex: true,
            ..Options::default()
        };
        let (out, flow) = run(&opts, false, &[b"88\n"]);
        assert_eq!(out.concat(), b"\x88");
        assert_eq!(flow, Flow::Continue);
        let (out, flow) = run(&opts, false, &[b"41\n38 38\n42\n"]);
        assert_eq!(out.concat(), b"A88");
        assert_eq!(flow, Flow::Quit);
        // The word with a line ending is still the word, as the peer's check takes it.
        let (out, flow) = run(&opts, false, &[b"38 38 0d 0a\n"]);
        assert_eq!(out.concat(), b"88\r\n");
        assert_eq!(flow, Flow::Quit);
        // Typing the word itself, which is hex too, says how to send the word.
        let warned = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = warned.clone();
        let mut o = Outbound::new(
            &opts,
            false,
            Events::new(move |e: &super::super::Event| w.lock().unwrap().push(e.to_string())),
        );
        let mut out = Vec::new();
        assert_eq!(o.feed(b"88\n", &mut out), Flow::Continue);
        let warned = warned.lock().unwrap();
        assert!(
            warned.iter().any(|w| w.contains("type 38 38")),
            "{warned:?}"
        );

        let gbk = Options {
            quit: Some("再见".into()),
            hex: true,
            encoding: Encoding::from_label("gbk").ok(),
            ..Options::default()
        };
        let (out, flow) = run(&gbk, false, &[b"d4 d9 bc fb\n"]);
        assert_eq!(out.concat(), b"\xd4\xd9\xbc\xfb");
        assert_eq!(flow, Flow::Quit);

        let end = Options {
            quit: Some("end".into()),
            hex: true,
            ..Options::default()
        };
        let (out, flow) = run(&end, false, &[b"0a\nend\n"]);
        assert_eq!(out.concat(), b"\nend");
        assert_eq!(flow, Flow::Quit);
    }

    /// Without `--eol`, lines keep the ending they came with, whatever else is on (the quit
    /// word, an encoding): an HTTP request stays CRLF, binary data stays byte for byte.
    #[test]
    fn line_endings_stay_as_typed_unless_eol_is_given() {
        let quit = Options {
            quit: Some("zzz".into()),
            ..Options::default()
        };
        let (out, _) = run(&quit, false, &[b"GET / HTTP/1.0\r\n\r\nx\ny\r"]);
        assert_eq!(out.concat(), b"GET / HTTP/1.0\r\n\r\nx\ny\r");
        let gbk = Options {
            encoding: Some(Encoding::GBK),
            ..Options::default()
        };
        let (out, _) = run(&gbk, false, &["a\r\n你\n".as_bytes()]);
        assert_eq!(out.concat(), b"a\r\n\xc4\xe3\n");
        // --eol lf is a choice: every line ends in LF.
        let lf = Options {
            eol: Eol::Lf,
            quit: Some("zzz".into()),
            ..Options::default()
        };
        let (out, _) = run(&lf, false, &[b"a\r\nb\n"]);
        assert_eq!(out.concat(), b"a\nb\n");
    }

    proptest::proptest! {
        /// Any bytes pass untouched through line mode without an encoding or `--eol`, in any
        /// chunking, as long as no line is the quit word.
        #[test]
        fn line_mode_keeps_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000), cut in 0usize..3000) {
            let opts = Options {
                quit: Some("\u{1}never".into()),
                max_line: 64,
                ..Options::default()
            };
            let cut = cut.min(data.len());
            let (out, _) = run(&opts, false, &[&data[..cut], &data[cut..]]);
            proptest::prop_assert_eq!(out.concat(), data);
        }
    }

    /// Input that is not UTF-8 is named as such, apart from characters the encoding lacks.
    #[test]
    fn input_that_is_not_utf8_is_named_in_the_warning() {
        let (events, seen) = recorded();
        let opts = Options {
            encoding: Some(Encoding::GBK),
            ..Options::default()
        };
        let mut o = Outbound::new(&opts, false, events);
        let mut out = Vec::new();
        o.feed(b"\xc4\xe3\n", &mut out);
        o.feed("😀\n".as_bytes(), &mut out);
        let seen = seen.lock().unwrap();
        assert!(
            seen[0].contains("not UTF-8") && seen[0].contains("leave out -e"),
            "{seen:?}"
        );
        assert!(
            seen[1].contains("1 character(s) have no GBK form"),
            "{seen:?}"
        );
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    /// A U+FFFD typed as such (valid UTF-8, EF BF BD) is a character like any other: only bytes
    /// that really are not UTF-8 get the warning that says so.
    #[test]
    fn a_typed_replacement_character_is_not_called_invalid_input() {
        let (events, seen) = recorded();
        let gb18030 = Options {
            encoding: Encoding::from_label("gb18030").ok(),
            ..Options::default()
        };
        let mut o = Outbound::new(&gb18030, false, events.clone());
        let mut out = Vec::new();
        o.feed("a\u{fffd}b\n".as_bytes(), &mut out);
        // GB18030 has a form for every character, U+FFFD included.
        assert_eq!(out.concat(), b"a\x84\x31\xa4\x37b\n");
        assert!(seen.lock().unwrap().is_empty(), "{seen:?}");
        // GBK has no U+FFFD: that is a character without a GBK form. In the same line, one
        // byte that is not UTF-8 is named as such, and counted once.
        let gbk = Options {
            encoding: Some(Encoding::GBK),
            ..Options::default()
        };
        let mut o = Outbound::new(&gbk, false, events);
        let mut out = Vec::new();
        o.feed("\u{fffd}".as_bytes(), &mut out);
        o.feed(b"\xff\n", &mut out);
        assert_eq!(out.concat(), b"??\n");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        // Each piece is sent, and told of, as it comes: the U+FFFD first.
        assert!(
            seen[0].contains("input line 1: 1 character(s) have no GBK form"),
            "{seen:?}"
        );
        assert!(seen[1].contains("input line 1 is not UTF-8"), "{seen:?}");
    }

    /// Warnings about input lines (not UTF-8; characters without a form) are given for the
    /// first such line, naming it; the others are counted, and the count is given once when
    /// the input ends, or when the conversation ends otherwise. What is sent does not change.
    #[test]
    fn input_warnings_are_given_once_and_counted() {
        let (events, seen) = recorded();
        let opts = Options {
            encoding: Some(Encoding::GBK),
            max_line: 16,
            ..Options::default()
        };
        let mut o = Outbound::new(&opts, false, events.clone());
        let mut out = Vec::new();
        o.feed(b"fine\n", &mut out);
        for _ in 0..500 {
            o.feed(b"caf\xe9 \xff\n", &mut out);
            o.feed("😀\n".as_bytes(), &mut out);
        }
        // A line longer than max_line comes in pieces, two of them with a bad byte: one line.
        o.feed(b"\xe9aaaaaaaaaaaaaaaaaaaa\xe9\n", &mut out);
        assert_eq!(
            out.concat(),
            [
                b"fine\n".to_vec(),
                b"caf? ?\n?\n".repeat(500),
                b"?aaaaaaaaaaaaaaaaaaaa?\n".to_vec()
            ]
            .concat()
        );
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert!(
                seen[0].starts_with("warning: input line 2 is not UTF-8"),
                "{seen:?}"
            );
            assert!(
                seen[1].starts_with(
                    "warning: input line 3: 1 character(s) have no GBK form and were sent as '?'"
                ),
                "{seen:?}"
            );
        }
        o.finish(&mut out);
        // Said once: a later end (of the conversation, of the program) adds nothing.
        o.summarize();
        drop(o);
        {
            let mut seen = seen.lock().unwrap();
            assert_eq!(
                seen[2..],
                [
                    "warning: in all, 501 input lines were not UTF-8 (1002 pieces replaced)",
                    "warning: in all, 500 input lines had characters with no GBK form (500 sent as '?')",
                ],
                "{seen:?}"
            );
            seen.clear();
        }
        // A conversation that ends before the input (the quit word, the peer) still gets the
        // count, at the latest when its Outbound goes.
        let mut o = Outbound::new(&opts, false, events.clone());
        o.feed(b"\xff\n\xff\n\xff\n", &mut out);
        drop(o);
        {
            let mut seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert!(seen[1].contains("in all, 3 input lines"), "{seen:?}");
            seen.clear();
        }
        // One line alone needs no count.
        let mut o = Outbound::new(&opts, false, events);
        o.feed(b"\xff\n", &mut out);
        o.finish(&mut out);
        drop(o);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
    }

    #[test]
    fn oversized_datagram_is_refused_not_split() {
        let long = vec![b'x'; DATAGRAM_LINE_MAX + 10];
        let (out, _) = run(&Options::default(), true, &[&long, b"\nok\n"]);
        assert_eq!(out, vec![b"ok".to_vec()]);
    }

    /// A datagram's limit is on what goes on the wire: a GBK line of 43,672 bytes typed as
    /// 65,508 bytes of UTF-8, a hex line of 30,000 bytes typed as 90,000 characters, a full
    /// datagram typed as `0x41, ` per byte, and a line of 65,507 bytes typed with CRLF all fit.
    #[test]
    fn the_datagram_limit_is_on_the_wire_bytes() {
        let gbk = Options {
            encoding: Encoding::from_label("gbk").ok(),
            ..Options::default()
        };
        let typed = format!("{}\n", "你".repeat(21_836));
        let (out, _) = run(&gbk, true, &[typed.as_bytes()]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 43_672);

        let hex = Options {
            hex: true,
            ..Options::default()
        };
        let typed = format!("{}\n", "41 ".repeat(30_000));
        let (out, _) = run(&hex, true, &[typed.as_bytes()]);
        assert_eq!(out, vec![vec![b'A'; 30_000]]);
        // A full datagram in the longest common hex spelling.
        let typed = format!("{}\n", "0x41, ".repeat(MAX_UDP_PAYLOAD));
        let (out, _) = run(&hex, true, &[typed.as_bytes()]);
        let lens: Vec<usize> = out.iter().map(Vec::len).collect();
        assert_eq!(lens, [MAX_UDP_PAYLOAD]);
        assert!(out[0].iter().all(|&b| b == b'A'));

        let mut typed = vec![b'a'; MAX_UDP_PAYLOAD];
        typed.extend_from_slice(b"\r\n");
        let (out, _) = run(&Options::default(), true, &[&typed]);
        assert_eq!(out, vec![vec![b'a'; MAX_UDP_PAYLOAD]]);
    }
}
