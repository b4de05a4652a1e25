//! Taking telnet commands out of a byte stream (RFC 854), for a server that speaks plain lines
//! to every client, telnet clients included.
//!
//! A telnet client (PuTTY, netkit telnet) mixes commands into what it sends: option
//! negotiations right after connecting, `IAC IP` for Ctrl-C, subnegotiations such as its
//! terminal type. [`TelnetFilter`] drops them and keeps the text. It never buffers: its state
//! is a few bytes, so a sequence split across two reads is handled without holding any data,
//! and a subnegotiation that never ends cannot make it keep anything.

/// Interpret As Command: starts every telnet command; doubled, it stands for one 0xFF byte.
const IAC: u8 = 0xFF;
/// Subnegotiation Begin: option data follows, up to `IAC SE`.
const SB: u8 = 0xFA;
/// Subnegotiation End.
const SE: u8 = 0xF0;
/// WILL, WONT, DO and DONT (0xFB..=0xFE) each take one option byte.
const WILL: u8 = 0xFB;
/// The last of the negotiation commands.
const DONT: u8 = 0xFE;

/// The longest subnegotiation taken out, in bytes after `IAC SB`. A terminal's own are short
/// (a terminal type, a window size, a few environment variables); past this the bytes are taken
/// as text again, so that a stray `IAC SB` (a windows-1252 client typing "ÿú") cannot swallow
/// everything the client sends after it.
pub const MAX_SUBNEGOTIATION: usize = 1024;

/// Where the filter is between two bytes; kept across reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Plain data.
    #[default]
    Data,
    /// After an IAC: the command byte comes next.
    Iac,
    /// After IAC WILL/WONT/DO/DONT: the option byte comes next.
    Option,
    /// Inside a subnegotiation; `len` bytes of it so far.
    Sub { len: usize },
    /// After an IAC inside a subnegotiation.
    SubIac { len: usize },
}

/// Drops telnet commands from a byte stream, keeping the data.
///
/// - `IAC` followed by a command byte 0xF0..=0xFE is dropped: WILL, WONT, DO and DONT
///   (0xFB..=0xFE) with their option byte, `SB` (0xFA) with everything up to `IAC SE` (at most
///   [`MAX_SUBNEGOTIATION`] bytes), the others (NOP, IP, AYT, GA, ...) alone.
/// - `IAC IAC` is one 0xFF data byte.
/// - `IAC` followed by a byte below 0xF0 is no telnet command: both bytes are data (a client
///   in windows-1252 or latin1 typing "ÿ").
#[derive(Debug, Default)]
pub struct TelnetFilter {
    state: State,
}

/// What an IAC and the byte after it come to.
enum Command {
    /// A telnet command; dropped, with whatever follows it in `State` (an option byte, a
    /// subnegotiation).
    Drop(State),
    /// `IAC IAC`: the second byte is data.
    Escaped,
    /// No command: the IAC and this byte are both data.
    Text,
}

/// Reads the byte after an IAC.
fn command(b: u8) -> Command {
    match b {
        IAC => Command::Escaped,
        SB => Command::Drop(State::Sub { len: 0 }),
        WILL..=DONT => Command::Drop(State::Option),
        SE..=0xF9 => Command::Drop(State::Data),
        _ => Command::Text,
    }
}

impl TelnetFilter {
    /// Passes on `data` without its telnet commands: `emit` is called with each run of data
    /// bytes, in order (the whole of `data` at once when it holds no 0xFF byte).
    pub fn filter(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        // Start of the run of data bytes not yet passed on.
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            // What the byte after an IAC does; `None` for a byte inside a command.
            let after_iac = match self.state {
                State::Data => {
                    if b == IAC {
                        if start < i {
                            emit(&data[start..i]);
                        }
                        self.state = State::Iac;
                    }
                    continue;
                }
                State::Iac => Some(command(b)),
                State::Option => {
                    self.state = State::Data;
                    None
                }
                State::Sub { len } => {
                    if b == IAC {
                        self.state = State::SubIac { len: len + 1 };
                    } else if len >= MAX_SUBNEGOTIATION {
                        // Too long for a terminal's subnegotiation: this was text after all.
                        self.state = State::Data;
                        start = i;
                        continue;
                    } else {
                        self.state = State::Sub { len: len + 1 };
                    }
                    None
                }
                State::SubIac { len } => match b {
                    SE => {
                        self.state = State::Data;
                        None
                    }
                    // An escaped 0xFF in the option's data.
                    IAC => {
                        self.state = State::Sub { len: len + 1 };
                        None
                    }
                    // Another command cuts the subnegotiation short (as libtelnet takes it):
                    // it is read as the command it is.
                    _ => Some(command(b)),
                },
            };
            match after_iac {
                None => {}
                Some(Command::Drop(next)) => self.state = next,
                Some(Command::Escaped) => {
                    // The run restarts at the second IAC, which is data.
                    self.state = State::Data;
                    start = i;
                    continue;
                }
                Some(Command::Text) => {
                    // The IAC may have come in an earlier read, so it is passed on by itself.
                    emit(&[IAC]);
                    self.state = State::Data;
                    start = i;
                    continue;
                }
            }
            start = i + 1;
        }
        if self.state == State::Data && start < data.len() {
            emit(&data[start..]);
        }
    }

    /// Ends the stream: an IAC that nothing followed is passed on as the data byte it then
    /// must have been; an unfinished command is dropped.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if std::mem::take(&mut self.state) == State::Iac {
            emit(&[IAC]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `chunks` through one filter, then the end of the stream.
    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = TelnetFilter::default();
        let mut out = Vec::new();
        for c in chunks {
            f.filter(c, &mut |run| {
                assert!(!run.is_empty(), "an empty run");
                out.extend_from_slice(run)
            });
        }
        f.finish(&mut |run| out.extend_from_slice(run));
        out
    }

    /// What PuTTY (connection type Telnet) sends right after connecting.
    const PUTTY: &[u8] =
        b"\xff\xfb\x1f\xff\xfb\x20\xff\xfb\x18\xff\xfb\x27\xff\xfd\x01\xff\xfb\x03\xff\xfd\x03";

    #[test]
    fn commands_are_dropped_and_text_kept() {
        assert_eq!(run(&[PUTTY]), b"");
        assert_eq!(run(&[&[PUTTY, b"hello\r\n"].concat()]), b"hello\r\n");
        // netkit telnet's Ctrl-C: IAC IP, IAC DO TIMING-MARK.
        assert_eq!(
            run(&[b"\xff\xf4\xff\xfd\x06/nick alice\r\n"]),
            b"/nick alice\r\n"
        );
        // A terminal type in a subnegotiation, an escaped 0xFF inside it, and one outside.
        assert_eq!(
            run(&[b"a\xff\xfa\x18\x00xterm\xff\xff\xff\xf0b\xff\xffc"]),
            b"ab\xffc"
        );
        // Every command without an option: SE, NOP, DM, BRK, IP, AO, AYT, EC, EL, GA.
        let all: Vec<u8> = (0xF0..=0xF9).flat_map(|c| [b'.', IAC, c]).collect();
        assert_eq!(run(&[&all]), b"..........");
        // Negotiations take their option byte, whatever it is (here an LF and an IAC).
        assert_eq!(run(&[b"x\xff\xfe\ny\xff\xfc\xffz"]), b"xyz");
    }

    #[test]
    fn an_iac_before_a_byte_below_0xf0_is_text() {
        // "ÿa", "ÿ" at the end of a line and "ÿé" in windows-1252.
        assert_eq!(run(&[b"\xffa \xff\r\n\xff\xe9"]), b"\xffa \xff\r\n\xff\xe9");
        // Also when the IAC ends one read, and at the end of the stream.
        assert_eq!(run(&[b"x\xff", b"a\xff"]), b"x\xffa\xff");
    }

    #[test]
    fn a_subnegotiation_cut_short_by_a_command_ends_there() {
        assert_eq!(run(&[b"\xff\xfa\x18ab\xff\xf4cd"]), b"cd");
        assert_eq!(run(&[b"\xff\xfa\x18ab\xff\xfb\x01cd"]), b"cd");
        assert_eq!(run(&[b"\xff\xfa\x18ab\xff\xfa\x1fxy\xff\xf0cd"]), b"cd");
    }

    /// A subnegotiation that never ends swallows a bounded number of bytes, then text flows.
    #[test]
    fn an_endless_subnegotiation_is_given_up() {
        let mut data = b"\xff\xfa\x18".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_SUBNEGOTIATION - 1));
        data.extend_from_slice(b"\xff\xff");
        data.extend_from_slice(b"after\n");
        assert_eq!(run(&[&data]), b"after\n");
        // The same bytes one at a time.
        let ones: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(run(&ones), b"after\n");
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_text() {
        let data = [
            PUTTY,
            b"caf\xe9 \xff\xff\xffa\xff\xf4\xff\xfd\x06\xff\xfa\x18\x00vt100\xff\xff\xff\xf0ok\r\n",
        ]
        .concat();
        let whole = run(&[&data]);
        assert_eq!(whole, b"caf\xe9 \xff\xffaok\r\n");
        for i in 0..=data.len() {
            for j in i..=data.len() {
                assert_eq!(
                    run(&[&data[..i], &data[i..j], &data[j..]]),
                    whole,
                    "{i} {j}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_text(
            data in proptest::collection::vec(prop_oneof![
                Just(IAC), Just(SB), Just(SE), Just(WILL), Just(0xF4), any::<u8>()
            ], 0..400),
            cut in 0usize..400,
        ) {
            let cut = cut.min(data.len());
            let whole = run(&[&data]);
            prop_assert_eq!(run(&[&data[..cut], &data[cut..]]), whole.clone());
            prop_assert!(whole.len() <= data.len());
            // Without a 0xFF byte nothing changes.
            if !data.contains(&IAC) {
                prop_assert_eq!(whole, data);
            }
        }
    }
}
