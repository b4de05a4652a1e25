//! Hex in (typed lines such as `48 65 6c 6c 6f`) and hex out (a `hexdump -C` style dump).
//!
//! Written here rather than taken from a crate: the input side must accept the spellings network
//! assistants use (spaces, `0x` prefixes, `:`/`,`/`-` separators) and name the offending token in
//! its error, and the output side must continue offsets across the reads of a stream.

use super::Error;
use std::fmt::Write as _;

/// Parses a typed hex line: pairs of hex digits, optionally separated by whitespace, `:`, `,` or
/// `-`, each token optionally prefixed with `0x`. An empty line parses to no bytes.
///
/// ```
/// use wirechat::codec::parse_hex;
/// assert_eq!(parse_hex("48 65 6c 6c 6f").unwrap(), b"Hello");
/// assert_eq!(parse_hex("0x48,0x69").unwrap(), b"Hi");
/// assert!(parse_hex("4g").is_err());
/// ```
pub fn parse_hex(line: &str) -> Result<Vec<u8>, Error> {
    // A line copied from a hexdump (`hexdump -C`, `xxd`, Wireshark, this program's own dump)
    // with its offset first: the offset would go out as bytes too.
    if let Some(offset) = dump_offset(line) {
        return Err(Error::BadHex(format!(
            "{offset:?} looks like a hexdump's offset, which would be sent as bytes too: \
             leave it out, or write it in pairs like the rest"
        )));
    }
    let mut out = Vec::with_capacity(line.len() / 2);
    for token in line.split(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | '-')) {
        if token.is_empty() {
            continue;
        }
        let digits = token
            .strip_prefix("0x")
            .or_else(|| token.strip_prefix("0X"))
            .unwrap_or(token);
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(Error::BadHex(format!(
                "{bad:?} in {token:?} is not a hex digit"
            )));
        }
        if digits.is_empty() {
            return Err(Error::BadHex(format!(
                "{token:?} has no digits after its 0x (write each byte as two, e.g. 0x0a)"
            )));
        }
        if digits.len() % 2 != 0 {
            return Err(Error::BadHex(format!(
                "{token:?} has an odd number of digits (write each byte as two, e.g. 0a)"
            )));
        }
        for pair in digits.as_bytes().chunks_exact(2) {
            out.push((nibble(pair[0]) << 4) | nibble(pair[1]));
        }
    }
    Ok(out)
}

/// The offset that `line` starts with, if it is a line of a hexdump: a first word of at least
/// four hex digits ending in 0 or 8 (offsets count rows of 8 or 16 bytes), followed by hex only,
/// and set off from the bytes the way dumps set it off:
/// - by a colon (`0010: 48 65`, xxd's `00000010: 4865 6c6c`),
/// - by a column gap of two or more spaces or a tab (`00000010  48 65` as `hexdump -C` and
///   this program write, Wireshark's `0000   48 65`),
/// - or, as `od -A x -t x1` writes, by one space after six or seven digits followed by pairs
///   (`000010 63 64`).
///
/// Otherwise one space is how hex is typed in groups (`ff00 01 02`, `4865 6c6c`, an address
/// `c0a80010 00 50`): those are bytes.
fn dump_offset(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let end = line.find(char::is_whitespace)?;
    let (first, after) = line.split_at(end);
    let gap_len = after.len() - after.trim_start().len();
    let gap = &after[..gap_len];
    let (first, colon) = match first.strip_suffix(':') {
        Some(f) => (f, true),
        None => (first, false),
    };
    let hex = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit());
    let rest: Vec<&str> = after.split_whitespace().collect();
    let od = matches!(first.len(), 6 | 7) && rest.iter().all(|t| t.len() == 2);
    let set_off = colon || gap.chars().count() >= 2 || gap.contains('\t') || od;
    (set_off
        && first.len() >= 4
        && hex(first)
        && first.ends_with(['0', '8'])
        && !rest.is_empty()
        && rest.iter().all(|t| t.len() % 2 == 0 && hex(t)))
    .then_some(first)
}

fn nibble(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        b'A'..=b'F' => d - b'A' + 10,
        _ => 0,
    }
}

/// A hexdump whose offsets continue across calls, as `ncat -x` and NetAssist's HEX view show a
/// stream: `00000010  48 65 6c 6c 6f 0a ...  |Hello.|`.
#[derive(Default)]
pub struct HexDump {
    offset: u64,
}

impl HexDump {
    /// Appends the dump of `data` to `out`, sixteen bytes a row.
    pub fn dump(&mut self, data: &[u8], out: &mut String) {
        for row in data.chunks(16) {
            let _ = write!(out, "{:08x} ", self.offset);
            for i in 0..16 {
                if i == 8 {
                    out.push(' ');
                }
                match row.get(i) {
                    Some(b) => {
                        let _ = write!(out, " {b:02x}");
                    }
                    None => out.push_str("   "),
                }
            }
            out.push_str("  |");
            out.extend(row.iter().map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            }));
            out.push_str("|\n");
            self.offset += row.len() as u64;
        }
    }

    /// Starts offsets from zero again (each datagram is its own message).
    pub fn reset(&mut self) {
        self.offset = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spellings() {
        assert_eq!(parse_hex("48656c6c6f").unwrap(), b"Hello");
        assert_eq!(parse_hex(" 48 65\t6C:6c,0x6f ").unwrap(), b"Hello");
        assert_eq!(parse_hex("").unwrap(), b"");
        assert!(
            parse_hex("4")
                .unwrap_err()
                .to_string()
                .contains("odd number")
        );
        assert!(parse_hex("zz").unwrap_err().to_string().contains("'z'"));
        assert!(
            parse_hex("0x")
                .unwrap_err()
                .to_string()
                .contains("no digits")
        );
        // A hexdump line with its offset is refused; the same bytes in pairs are not.
        for dump in [
            "0000   48 65 6c",
            "00000010  48 65",
            "0010: 48 65",
            // The last row of a dump may hold one byte.
            "00000010  41",
            // xxd groups two bytes.
            "00000010: 4865 6c6c 6f0a",
            "  0008\t48 65",
            // od -A x -t x1
            "000010 63 64 65",
        ] {
            let e = parse_hex(dump).unwrap_err().to_string();
            assert!(e.contains("hexdump's offset"), "{dump}: {e}");
        }
        assert_eq!(parse_hex("00 00 48 65").unwrap(), [0, 0, 0x48, 0x65]);
        assert_eq!(parse_hex("4865 6c6c").unwrap(), b"Hell");
        assert_eq!(
            parse_hex("deadbeef 00 01").unwrap(),
            [0xde, 0xad, 0xbe, 0xef, 0, 1]
        );
    }

    /// Hex typed in groups of any even size, one space apart, is bytes, whatever the first
    /// group looks like: only a colon or a column gap after it makes it a dump's offset.
    #[test]
    fn plain_groups_are_not_taken_for_offsets() {
        assert_eq!(parse_hex("ff00 01 02").unwrap(), [0xff, 0, 1, 2]);
        assert_eq!(parse_hex("0000 48 65").unwrap(), [0, 0, 0x48, 0x65]);
        assert_eq!(
            parse_hex("c0a80010 00 50").unwrap(),
            [0xc0, 0xa8, 0, 0x10, 0, 0x50]
        );
        assert_eq!(
            parse_hex("1234 5678 9abc").unwrap(),
            [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]
        );
        assert_eq!(parse_hex("ff00:01:02").unwrap(), [0xff, 0, 1, 2]);
        assert_eq!(parse_hex("ff00,01,02").unwrap(), [0xff, 0, 1, 2]);
        assert_eq!(parse_hex("0x0010  0x48").unwrap(), [0, 0x10, 0x48]);
        assert_eq!(parse_hex("ff00").unwrap(), [0xff, 0]);
    }

    /// This program's own dump rows, with their ascii column left out (with it, a row is
    /// refused anyway, as not hex), are recognised as dump lines.
    #[test]
    fn our_own_dump_lines_are_recognised() {
        let mut d = HexDump::default();
        let mut s = String::new();
        d.dump(&[0x41; 20], &mut s);
        for row in s.lines() {
            let bytes = row.split("  |").next().unwrap_or(row);
            let e = parse_hex(bytes).unwrap_err().to_string();
            assert!(e.contains("hexdump's offset"), "{bytes}: {e}");
        }
    }

    #[test]
    fn dump_rows_and_offsets() {
        let mut d = HexDump::default();
        let mut s = String::new();
        d.dump(b"Hello, world!\n\x00\xffABC", &mut s);
        assert_eq!(
            s,
            "00000000  48 65 6c 6c 6f 2c 20 77  6f 72 6c 64 21 0a 00 ff  |Hello, world!...|\n\
             00000010  41 42 43                                          |ABC|\n"
        );
        s.clear();
        d.dump(b"x", &mut s);
        assert!(s.starts_with("00000013 "));
    }

    proptest! {
        #[test]
        fn parse_inverts_formatting(bytes in proptest::collection::vec(any::<u8>(), 0..128), spaced in any::<bool>()) {
            let sep = if spaced { " " } else { "" };
            let text: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
            prop_assert_eq!(parse_hex(&text.join(sep)).unwrap(), bytes);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = parse_hex(&s);
        }
    }
}
