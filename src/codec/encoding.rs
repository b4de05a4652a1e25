//! The wire encoding: a checked wrapper around `encoding_rs`, with stateful halves per direction.

use super::Error;
use encoding_rs::{CoderResult, DecoderResult, EncoderResult};

/// A text encoding for the wire, chosen by a WHATWG label (`gbk`, `gb18030`, `big5`, ...).
///
/// Built with `for_label_no_replacement`, so the "replacement" pseudo-encoding cannot be chosen
/// by accident, and refusing encodings that encoding_rs can only decode (UTF-16).
///
/// ```
/// use wirechat::codec::Encoding;
/// let gbk = Encoding::from_label("gb2312").unwrap();
/// let mut wire = Vec::new();
/// gbk.encode_message("你好", &mut wire);
/// assert_eq!(wire, [0xc4, 0xe3, 0xba, 0xc3]);
/// let mut text = String::new();
/// gbk.decode_message(&wire, &mut text);
/// assert_eq!(text, "你好");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding(&'static encoding_rs::Encoding);

impl Encoding {
    /// UTF-8, the local side's encoding.
    pub const UTF8: Encoding = Encoding(encoding_rs::UTF_8);
    /// GBK, what the tutorial and most Chinese network assistants put on the wire.
    pub const GBK: Encoding = Encoding(encoding_rs::GBK);

    /// Looks up a label such as `gbk`, `GB2312`, `utf8` or `shift_jis`.
    pub fn from_label(label: &str) -> Result<Self, Error> {
        let enc = encoding_rs::Encoding::for_label_no_replacement(label.trim().as_bytes())
            .ok_or_else(|| Error::UnknownEncoding(label.to_string()))?;
        if enc.output_encoding() != enc {
            return Err(Error::DecodeOnly(enc.name()));
        }
        Ok(Encoding(enc))
    }

    /// The canonical name (`GBK`, `UTF-8`).
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// True for the encodings with one byte per character (ISO-8859-x, windows-125x, KOI8).
    pub fn is_single_byte(self) -> bool {
        self.0.is_single_byte()
    }

    /// True for UTF-8, where the local and wire sides agree and no transcoding is needed.
    pub fn is_utf8(self) -> bool {
        self.0 == encoding_rs::UTF_8
    }

    /// A stateful decoder (wire -> UTF-8) for one direction of a stream.
    pub fn decoder(self) -> TextDecoder {
        TextDecoder(self.0.new_decoder_without_bom_handling())
    }

    /// A stateful encoder (UTF-8 -> wire) for one direction of a stream.
    pub fn encoder(self) -> TextEncoder {
        TextEncoder {
            inner: self.0.new_encoder(),
            unmappable: 0,
        }
    }

    /// Decodes one self-contained message (a datagram); malformed bytes become U+FFFD.
    pub fn decode_message(self, bytes: &[u8], out: &mut String) {
        let mut dec = self.decoder();
        dec.decode(bytes, true, out);
    }

    /// Encodes one self-contained message; returns how many characters had no mapping.
    pub fn encode_message(self, text: &str, out: &mut Vec<u8>) -> usize {
        let mut enc = self.encoder();
        enc.encode(text, true, out);
        enc.unmappable
    }
}

/// Wire bytes -> UTF-8, keeping a character split across two reads until its end arrives.
pub struct TextDecoder(encoding_rs::Decoder);

impl TextDecoder {
    /// Appends the text decoded from `bytes` to `out`; `last` flushes a pending partial character
    /// (as U+FFFD) at the end of the stream, after which the decoder starts a new stream.
    pub fn decode(&mut self, bytes: &[u8], last: bool, out: &mut String) {
        let mut rest = bytes;
        loop {
            let need = self
                .0
                .max_utf8_buffer_length(rest.len())
                .unwrap_or(rest.len().saturating_mul(3).saturating_add(16));
            out.reserve(need);
            let (result, read, _) = self.0.decode_to_string(rest, out, last);
            rest = &rest[read..];
            match result {
                CoderResult::InputEmpty => break,
                CoderResult::OutputFull => continue,
            }
        }
        self.restart_after(last);
    }

    /// encoding_rs panics when a decoder is used after its last call: start afresh.
    fn restart_after(&mut self, last: bool) {
        if last {
            self.0 = self.0.encoding().new_decoder_without_bom_handling();
        }
    }

    /// Like [`TextDecoder::decode`], and returns how many malformed sequences were replaced by
    /// U+FFFD. A U+FFFD that the bytes really encode (EF BF BD in UTF-8) is not counted.
    pub fn decode_counting_malformed(
        &mut self,
        bytes: &[u8],
        last: bool,
        out: &mut String,
    ) -> usize {
        let mut rest = bytes;
        let mut malformed = 0;
        loop {
            let need = self
                .0
                .max_utf8_buffer_length_without_replacement(rest.len())
                .unwrap_or(rest.len().saturating_mul(3).saturating_add(16));
            out.reserve(need);
            let (result, read) = self.0.decode_to_string_without_replacement(rest, out, last);
            rest = &rest[read..];
            match result {
                DecoderResult::InputEmpty => {
                    self.restart_after(last);
                    return malformed;
                }
                DecoderResult::OutputFull => continue,
                // What `decode` does in its place: one U+FFFD per malformed sequence.
                DecoderResult::Malformed(..) => {
                    out.push('\u{fffd}');
                    malformed += 1;
                }
            }
        }
    }
}

/// UTF-8 -> wire bytes. Characters the encoding cannot represent are sent as `?` and counted,
/// as network assistants do, rather than as HTML character references.
pub struct TextEncoder {
    inner: encoding_rs::Encoder,
    unmappable: usize,
}

impl TextEncoder {
    /// Appends the encoding of `text` to `out`; after `last`, the encoder starts a new stream
    /// (encoding_rs panics when an encoder is used after its last call).
    ///
    /// In GBK and Big5, `€` is sent as `?` too: WHATWG's GBK and Big5 (encoding_rs) put it on
    /// 0x80 and A3 E1, the Windows code pages' bytes, which GBK and Big5 proper do not have, so
    /// Python's `gbk` and `big5` codecs (the tutorial's peers) fail on the whole message.
    /// (GB18030 has `€`, as A2 E3.)
    pub fn encode(&mut self, text: &str, last: bool, out: &mut Vec<u8>) {
        let enc = self.inner.encoding();
        if (enc != encoding_rs::GBK && enc != encoding_rs::BIG5) || !text.contains('\u{20ac}') {
            return self.encode_mapped(text, last, out);
        }
        let mut parts = text.split('\u{20ac}').peekable();
        while let Some(part) = parts.next() {
            let more = parts.peek().is_some();
            self.encode_mapped(part, last && !more, out);
            if more {
                out.push(b'?');
                self.unmappable += 1;
            }
        }
    }

    fn encode_mapped(&mut self, text: &str, last: bool, out: &mut Vec<u8>) {
        let mut rest = text;
        loop {
            let need = self
                .inner
                .max_buffer_length_from_utf8_without_replacement(rest.len())
                .unwrap_or(rest.len().saturating_mul(4).saturating_add(16));
            out.reserve(need);
            let (result, read) = self
                .inner
                .encode_from_utf8_to_vec_without_replacement(rest, out, last);
            rest = &rest[read..];
            match result {
                EncoderResult::InputEmpty => {
                    if last {
                        self.inner = self.inner.encoding().new_encoder();
                    }
                    return;
                }
                EncoderResult::OutputFull => continue,
                EncoderResult::Unmappable(_) => {
                    out.push(b'?');
                    self.unmappable += 1;
                }
            }
        }
    }

    /// How many characters so far had no mapping and were sent as `?`; resets the count.
    pub fn take_unmappable(&mut self) -> usize {
        std::mem::take(&mut self.unmappable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A decoder or encoder used again after its last call starts a new stream instead of
    /// panicking (encoding_rs's own behaviour).
    #[test]
    fn coders_can_be_used_after_their_last_call() {
        for enc in [Encoding::UTF8, Encoding::GBK] {
            let mut dec = enc.decoder();
            let mut text = String::new();
            dec.decode(b"ab", true, &mut text);
            dec.decode(b"cd", true, &mut text);
            assert_eq!(dec.decode_counting_malformed(b"e", true, &mut text), 0);
            dec.decode(b"f", false, &mut text);
            assert_eq!(text, "abcdef");
            let mut coder = enc.encoder();
            let mut wire = Vec::new();
            coder.encode("x", true, &mut wire);
            coder.encode("y", true, &mut wire);
            assert_eq!(wire, b"xy");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(Encoding::from_label("GB2312").map(|e| e.name()), Ok("GBK"));
        assert_eq!(
            Encoding::from_label(" utf8 ").map(|e| e.name()),
            Ok("UTF-8")
        );
        assert!(matches!(
            Encoding::from_label("klingon"),
            Err(Error::UnknownEncoding(_))
        ));
        assert!(matches!(
            Encoding::from_label("utf-16le"),
            Err(Error::DecodeOnly(_))
        ));
        assert!(matches!(
            Encoding::from_label("replacement"),
            Err(Error::UnknownEncoding(_))
        ));
    }

    #[test]
    fn gbk_split_across_reads() {
        let mut wire = Vec::new();
        Encoding::GBK.encode_message("你好", &mut wire);
        assert_eq!(wire, [0xc4, 0xe3, 0xba, 0xc3]);
        let mut dec = Encoding::GBK.decoder();
        let mut text = String::new();
        for b in &wire {
            dec.decode(std::slice::from_ref(b), false, &mut text);
        }
        dec.decode(&[], true, &mut text);
        assert_eq!(text, "你好");
    }

    /// Python's `gbk` and `big5` codecs (the tutorial's peers) cannot decode WHATWG's bytes for
    /// `€` (0x80, A3 E1).
    #[test]
    fn the_euro_sign_is_unmappable_in_gbk_and_big5_but_not_in_gb18030() {
        let mut wire = Vec::new();
        assert_eq!(Encoding::GBK.encode_message("价格€5€", &mut wire), 2);
        assert_eq!(wire, [0xbc, 0xdb, 0xb8, 0xf1, b'?', b'5', b'?']);
        let mut enc = Encoding::GBK.encoder();
        let mut wire = Vec::new();
        enc.encode("€", false, &mut wire);
        enc.encode("你", true, &mut wire);
        assert_eq!(
            (wire.as_slice(), enc.take_unmappable()),
            (&b"?\xc4\xe3"[..], 1)
        );
        let big5 = Encoding::from_label("big5").unwrap();
        let mut wire = Vec::new();
        assert_eq!(big5.encode_message("€1", &mut wire), 1);
        assert_eq!(wire, b"?1");
        let gb18030 = Encoding::from_label("gb18030").unwrap();
        let mut wire = Vec::new();
        assert_eq!(gb18030.encode_message("€", &mut wire), 0);
        assert_eq!(wire, [0xa2, 0xe3]);
    }

    #[test]
    fn invalid_and_unmappable() {
        let mut text = String::new();
        Encoding::GBK.decode_message(&[0x81, b'a', 0xff], &mut text);
        assert!(text.contains('\u{fffd}'));
        let mut wire = Vec::new();
        assert_eq!(Encoding::GBK.encode_message("a😀b", &mut wire), 1);
        assert_eq!(wire, b"a?b");
    }

    #[test]
    fn malformed_sequences_are_counted_and_a_real_replacement_character_is_not() {
        let mut dec = Encoding::UTF8.decoder();
        let mut text = String::new();
        // A real U+FFFD, a stray continuation byte, and a character split across two calls.
        assert_eq!(
            dec.decode_counting_malformed(b"\xef\xbf\xbd\x80a\xe4\xbd", false, &mut text),
            1
        );
        assert_eq!(
            dec.decode_counting_malformed(b"\xa0\xe4", true, &mut text),
            1
        );
        assert_eq!(text, "\u{fffd}\u{fffd}a\u{4f60}\u{fffd}");
    }

    proptest! {
        /// Counting changes nothing in the text: it is what `decode` gives.
        #[test]
        fn counting_decodes_as_decode_does(bytes in proptest::collection::vec(any::<u8>(), 0..256), split in 0usize..256) {
            let cut = split.min(bytes.len());
            let (mut plain, mut counting) = (Encoding::UTF8.decoder(), Encoding::UTF8.decoder());
            let (mut a, mut b) = (String::new(), String::new());
            plain.decode(&bytes[..cut], false, &mut a);
            plain.decode(&bytes[cut..], true, &mut a);
            let n = counting.decode_counting_malformed(&bytes[..cut], false, &mut b)
                + counting.decode_counting_malformed(&bytes[cut..], true, &mut b);
            prop_assert_eq!(n > 0, std::str::from_utf8(&bytes).is_err());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn gb18030_round_trips_any_text(s in "\\PC{0,64}") {
            let enc = Encoding::from_label("gb18030").unwrap();
            let mut wire = Vec::new();
            prop_assert_eq!(enc.encode_message(&s, &mut wire), 0);
            let mut back = String::new();
            enc.decode_message(&wire, &mut back);
            prop_assert_eq!(back, s);
        }

        #[test]
        fn decoding_never_fails(bytes in proptest::collection::vec(any::<u8>(), 0..256), split in 0usize..256) {
            let mut dec = Encoding::GBK.decoder();
            let mut out = String::new();
            let cut = split.min(bytes.len());
            dec.decode(&bytes[..cut], false, &mut out);
            dec.decode(&bytes[cut..], true, &mut out);
            let mut whole = String::new();
            Encoding::GBK.decode_message(&bytes, &mut whole);
            prop_assert_eq!(out, whole);
        }
    }
}
