//! Bounded line framing for typed input: split bytes on `\n`, strip a `\r` before it, and never
//! hold more than a maximum in memory. A longer line is passed on in pieces rather than dropped,
//! so nothing typed or piped is lost.

/// One unit of framed input.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// The end of a line, without its terminator; `terminated` is false for a last line without
    /// `\n`, and `whole` is false when [`Piece::Partial`]s of the same line came before it.
    /// `cr` says a `\r` was taken off the end (a CRLF line, or input that ended in `\r`).
    Line {
        text: &'a [u8],
        terminated: bool,
        whole: bool,
        cr: bool,
    },
    /// Part of a line longer than the maximum; more of it (or its end) follows.
    Partial(&'a [u8]),
}

/// Splits a byte stream into lines of at most `max` bytes.
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// True while the current line has already been passed on in part.
    continuing: bool,
}

impl LineSplitter {
    /// A splitter that keeps at most `max` bytes of an unfinished line.
    pub fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max: max.max(1),
            continuing: false,
        }
    }

    /// Feeds `data`, calling `emit` for each complete line or over-long piece.
    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(Piece<'_>)) {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            let end = newline.unwrap_or(data.len());
            let room = self.max - self.buf.len();
            if end > room {
                // The line would outgrow the bound: pass on what fits and keep going.
                self.buf.extend_from_slice(&data[..room]);
                data = &data[room..];
                // Keep a trailing '\r' back: it may be the first half of a CRLF.
                let keep_cr = self.buf.len() > 1 && self.buf.last() == Some(&b'\r');
                let cut = self.buf.len() - usize::from(keep_cr);
                emit(Piece::Partial(&self.buf[..cut]));
                self.buf.drain(..cut);
                self.continuing = true;
                continue;
            }
            let Some(i) = newline else {
                self.buf.extend_from_slice(data);
                return;
            };
            let whole = !self.continuing;
            if self.buf.is_empty() {
                emit(Piece::Line {
                    text: strip_cr(&data[..i]),
                    terminated: true,
                    whole,
                    cr: data[..i].ends_with(b"\r"),
                });
            } else {
                self.buf.extend_from_slice(&data[..i]);
                emit(Piece::Line {
                    text: strip_cr(&self.buf),
                    terminated: true,
                    whole,
                    cr: self.buf.ends_with(b"\r"),
                });
                self.buf.clear();
            }
            self.continuing = false;
            data = &data[i + 1..];
        }
    }

    /// Passes on what has come of an unfinished line now, as a [`Piece::Partial`], instead of
    /// holding it until its end comes. A trailing `\r` is kept back: it may be half a CRLF.
    pub fn flush_partial(&mut self, emit: &mut dyn FnMut(Piece<'_>)) {
        let keep_cr = self.buf.last() == Some(&b'\r');
        let cut = self.buf.len() - usize::from(keep_cr);
        if cut > 0 {
            emit(Piece::Partial(&self.buf[..cut]));
            self.buf.drain(..cut);
            self.continuing = true;
        }
    }

    /// True while part of a line has come without its end: [`finish`](Self::finish) would emit
    /// a line.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.continuing
    }

    /// Ends the stream: a pending unterminated line is emitted. The splitter can be used again
    /// afterwards, for input that is taken line by line at pauses rather than only at the end.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Piece<'_>)) {
        if !self.buf.is_empty() || self.continuing {
            let line = std::mem::take(&mut self.buf);
            let text = strip_cr(&line);
            emit(Piece::Line {
                text,
                terminated: false,
                whole: !self.continuing,
                cr: line.ends_with(b"\r"),
            });
            self.continuing = false;
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(Vec<u8>, &'static str)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        // "line"/"last": a line (terminated or not) that came whole; "end"/"last end": the end
        // of one that came in parts.
        let mut emit = |p: Piece<'_>| match p {
            Piece::Line {
                text,
                terminated,
                whole,
                ..
            } => {
                let kind = match (terminated, whole) {
                    (true, true) => "line",
                    (true, false) => "end",
                    (false, true) => "last",
                    (false, false) => "last end",
                };
                out.push((text.to_vec(), kind))
            }
            Piece::Partial(t) => out.push((t.to_vec(), "part")),
        };
        for c in chunks {
            s.push(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    #[test]
    fn lines_crlf_and_last() {
        assert_eq!(
            split(64, &[b"ab\r\ncd", b"e\nf"]),
            vec![
                (b"ab".to_vec(), "line"),
                (b"cde".to_vec(), "line"),
                (b"f".to_vec(), "last")
            ]
        );
    }

    #[test]
    fn long_lines_come_in_pieces() {
        assert_eq!(
            split(4, &[b"abcdefghij\nxy"]),
            vec![
                (b"abcd".to_vec(), "part"),
                (b"efgh".to_vec(), "part"),
                (b"ij".to_vec(), "end"),
                (b"xy".to_vec(), "last")
            ]
        );
    }

    /// A line taken at a pause leaves the splitter empty and ready for the next line.
    #[test]
    fn finish_then_more() {
        let mut s = LineSplitter::new(4);
        let mut out = Vec::new();
        let mut emit = |p: Piece<'_>| out.push(format!("{p:?}"));
        assert!(!s.has_partial());
        s.push(b"hel", &mut emit);
        assert!(s.has_partial());
        s.finish(&mut emit);
        assert!(!s.has_partial());
        s.push(b"abcdef", &mut emit);
        assert!(s.has_partial());
        s.finish(&mut emit);
        assert!(!s.has_partial());
        s.push(b"x\n", &mut emit);
        assert!(!s.has_partial());
        let line = |t: &str, terminated, whole| {
            format!(
                "{:?}",
                Piece::Line {
                    text: t.as_bytes(),
                    terminated,
                    whole,
                    cr: false
                }
            )
        };
        assert_eq!(
            out,
            [
                line("hel", false, true),
                format!("{:?}", Piece::Partial(b"abcd")),
                line("ef", false, false),
                line("x", true, true),
            ]
        );
    }

    proptest! {
        #[test]
        fn nothing_lost(data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..300),
                        max in 1usize..40, cut in 0usize..300) {
            let cut = cut.min(data.len());
            let pieces = split(max, &[&data[..cut], &data[cut..]]);
            let mut rebuilt = Vec::new();
            let mut after_part = false;
            for (text, kind) in &pieces {
                prop_assert!(text.len() <= max);
                rebuilt.extend_from_slice(text);
                if matches!(*kind, "line" | "end") { rebuilt.push(b'\n'); }
                // A line is whole exactly when no part of it came before.
                if *kind != "part" {
                    prop_assert_eq!(after_part, kind.ends_with("end"));
                }
                after_part = *kind == "part";
            }
            // Rebuilding loses only the '\r' of each CRLF.
            let expected: Vec<u8> = {
                let mut e = Vec::new();
                for (i, &b) in data.iter().enumerate() {
                    if b == b'\r' && data.get(i + 1) == Some(&b'\n') { continue; }
                    e.push(b);
                }
                e
            };
            let unterminated_cr = expected.last() == Some(&b'\r') && pieces.last().is_some_and(|p| p.1.starts_with("last"));
            if !unterminated_cr {
                prop_assert_eq!(rebuilt, expected);
            }
        }
    }
}
