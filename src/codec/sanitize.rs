//! Making peer text safe for a terminal: control characters and escape sequences are shown
//! escaped (`\x1b`, `\u{202e}`) so a peer can never move the cursor, change colours, retitle the
//! window or reorder text on the screen of the person reading.

use std::fmt::Write as _;

/// Appends `text` to `out` with every character that could act on a terminal escaped. Tabs stay.
/// A backslash stays as it is (`C:\Users`, `\o/`) unless what follows it would read as one of
/// these escapes (`\x..`, `\u..`, an escaped character) or as a doubled backslash: then it is
/// doubled, so a peer cannot pass off plain text as an escape.
pub fn sanitize_into(text: &str, out: &mut String) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&n) if matches!(n, 'x' | 'u' | '\\') || escaped(n) => out.push_str("\\\\"),
                _ => out.push(c),
            },
            c if (c as u32) < 0x20 && c != '\t' || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if escaped(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Characters shown escaped: controls other than tab, DEL, C1 controls (CSI is U+009B), bidi
/// overrides and isolates, and line separators.
fn escaped(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}'
        | '\u{a}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
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

    /// Backslashes in ordinary text stay single; one that would start an escape is doubled.
    #[test]
    fn backslashes() {
        for (text, shown) in [
            (r"C:\Users\me \o/ a\b \", r"C:\Users\me \o/ a\b \"),
            (r"\x1b[31m", r"\\x1b[31m"),
            (r"\u{202e}", r"\\u{202e}"),
            ("\\\n", r"\\\x0a"),
            // Plain `\\x1b` and a real `\` + ESC look different.
            (r"\\x1b", r"\\\\x1b"),
            ("\\\x1b", r"\\\x1b"),
        ] {
            let mut s = String::new();
            sanitize_into(text, &mut s);
            assert_eq!(s, shown, "{text:?}");
        }
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
