//! Making peer text safe for a terminal: control characters and escape sequences are shown
//! escaped (`\x1b`, `\u{202e}`) so a peer can never move the cursor, change colours, retitle the
//! window or reorder text on the screen of the person reading.

use std::fmt::Write as _;

/// Appends `text` to `out` with every character that could act on a terminal escaped. Tabs stay.
pub fn sanitize_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            // C1 controls (CSI is U+009B), bidi overrides and isolates, and line separators.
            '\u{80}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes() {
        let mut s = String::new();
        sanitize_into("a\x1b[31mred\u{9b}\u{202e}\tb\\\u{61c}", &mut s);
        assert_eq!(s, "a\\x1b[31mred\\u{9b}\\u{202e}\tb\\\\\\u{61c}");
    }

    proptest! {
        #[test]
        fn output_has_no_controls(s in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}]{0,32}") {
            let mut out = String::new();
            sanitize_into(&s, &mut out);
            prop_assert!(!out.chars().any(|c| c.is_control() && c != '\t'));
        }
    }
}
