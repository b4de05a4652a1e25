//! What a client typed: a chat line or one of the slash commands, and the nickname rules.
//!
//! Parsing is pure and total: any text yields an [`Input`], and an unusable command becomes
//! [`Input::Unknown`] or [`Input::Usage`], which the client task answers with an error line.

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;

/// The longest nickname, in characters.
pub const MAX_NICK_CHARS: usize = 32;

/// One line from a client, decoded to UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Nothing to do (an empty line).
    Empty,
    /// Text for everyone. `//text` sends `/text`.
    Say(&'a str),
    /// `/nick NAME`
    Nick(&'a str),
    /// `/who`
    Who,
    /// `/msg NICK text`
    Msg { to: &'a str, text: &'a str },
    /// `/me text`
    Me(&'a str),
    /// `/encoding [LABEL]`: without a label, shows the current one.
    Encoding(Option<&'a str>),
    /// `/quit [reason]`
    Quit(Option<&'a str>),
    /// `/help`
    Help,
    /// A known command used wrongly; the text says how to use it.
    Usage(&'static str),
    /// A command that does not exist.
    Unknown(&'a str),
}

/// The `/help` text, one line per command.
pub const HELP: &[&str] = &[
    "* commands:",
    "*   /nick NAME        choose your nickname (1-32 characters, no spaces)",
    "*   /who              list who is online",
    "*   /msg NICK text    send text to NICK only",
    "*   /me text          an action: * you text",
    "*   /encoding LABEL   your wire encoding (utf-8, gbk, big5, shift_jis, ...)",
    "*   /quit [reason]    leave the room",
    "*   /help             this list",
    "* any other line goes to everyone; start it with // to send a leading /",
];

/// Parses one decoded line.
pub fn parse(line: &str) -> Input<'_> {
    let line = line.trim_end();
    if line.trim_start().is_empty() {
        return Input::Empty;
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Input::Say(line);
    };
    if rest.starts_with('/') {
        return Input::Say(rest);
    }
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    let arg_opt = (!arg.is_empty()).then_some(arg);
    match name.to_ascii_lowercase().as_str() {
        "nick" => match arg_opt {
            Some(n) => Input::Nick(n),
            None => Input::Usage("usage: /nick NAME"),
        },
        "who" | "names" => Input::Who,
        "msg" => match arg.split_once(char::is_whitespace) {
            Some((to, text)) if !text.trim().is_empty() => Input::Msg {
                to,
                text: text.trim_start(),
            },
            _ => Input::Usage("usage: /msg NICK text"),
        },
        "me" => match arg_opt {
            Some(t) => Input::Me(t),
            None => Input::Usage("usage: /me text"),
        },
        "encoding" => Input::Encoding(arg_opt),
        "quit" | "exit" => Input::Quit(arg_opt),
        "help" | "?" => Input::Help,
        _ => Input::Unknown(name),
    }
}

/// Why a nickname is refused (before uniqueness, which the room checks).
pub fn check_nick(nick: &str) -> Result<(), String> {
    let chars = name_chars(nick, MAX_NICK_CHARS);
    if chars == 0 {
        return Err("a nickname needs at least one character".into());
    }
    if chars > MAX_NICK_CHARS {
        return Err(format!(
            "{} characters is too long (at most {MAX_NICK_CHARS})",
            nick.chars().nfc().count()
        ));
    }
    if let Some(c) = nick.chars().find(|c| !printable(*c)) {
        return Err(format!(
            "{:?} is not allowed (printable characters without spaces only)",
            c
        ));
    }
    static SERVER: std::sync::LazyLock<NickKeys> =
        std::sync::LazyLock::new(|| NickKeys::of("server"));
    let keys = NickKeys::of(nick);
    if keys.id == SERVER.id || keys.looks.iter().any(|l| SERVER.looks.contains(l)) {
        return Err(if nick.eq_ignore_ascii_case("server") {
            "\"server\" is reserved for the server's own messages".into()
        } else {
            format!("{nick} looks like \"server\", which is reserved for the server's own messages")
        });
    }
    if nick.starts_with('/') {
        return Err("a nickname cannot start with '/'".into());
    }
    Ok(())
}

/// How nicknames are told apart: two members never share a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NickKeys {
    /// The name up to letter case and Unicode normalization: Unicode's canonical caseless
    /// form (NFD, case folding, NFD), so `Bob` is `bob`, `e` + U+0301 is `é`, `ΝΙΚΟΣ` is
    /// `νικος` and `STRASSE` is `straße`.
    pub id: String,
    /// What the name looks like: Unicode's confusable skeletons (UTS #39) of the name as typed,
    /// of its caseless form and of its capitals. So `biII` looks like `bill` (a capital I for
    /// an l), `аlice` (a Cyrillic `а`) like `alice` and therefore `Alice`, `B0B` like `BOB`,
    /// and `ВОВ` (Cyrillic capitals) like `BOB`, the capitals of `Bob`. A name with letters
    /// from beyond ASCII also has its skeleton without case, so that `ВОЬ` (Cyrillic, read as
    /// `BOb`) is taken for `Bob` too. Names in ASCII are not folded that way: `IAN` is not
    /// `lan`, since that would need `lAN`, which nobody types.
    pub looks: [String; 4],
}

impl NickKeys {
    /// The keys of `nick`.
    pub fn of(nick: &str) -> Self {
        let caseless = |s: &str| -> String { s.chars().nfd().default_case_fold().nfd().collect() };
        let skeleton = |s: &str| unicode_security::skeleton(s).collect::<String>();
        let id = caseless(nick);
        let typed = skeleton(nick);
        let folded = skeleton(&id);
        let any_case = if nick.is_ascii() {
            folded.clone()
        } else {
            caseless(&typed)
        };
        NickKeys {
            looks: [typed, folded, skeleton(&nick.to_uppercase()), any_case],
            id,
        }
    }
}

/// How many characters `name` has, counted as Unicode's composed form (NFC) has them, so that
/// `é` typed as `e` and a combining accent is one character, as it is when typed as `é`.
/// Counting stops after `limit + 1`.
pub fn name_chars(name: &str, limit: usize) -> usize {
    name.chars().nfc().take(limit + 1).count()
}

/// Words as they look, for comparing text with the room's notices: confusable letters folded
/// to their prototypes, invisible characters dropped, lower case, split at anything that is
/// not a letter or digit (spaces of every kind, punctuation). Only the first few count.
fn look_words(text: &str) -> Vec<String> {
    let folded: String = unicode_security::skeleton(text)
        .take(96)
        .flat_map(char::to_lowercase)
        .collect();
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(8)
        .map(String::from)
        .collect()
}

/// `text` as it looks, in tokens between spaces: look-alike letters folded as in
/// [`look_words`], invisible characters dropped, punctuation kept.
fn look_tokens(text: &str) -> Vec<String> {
    let folded: String = unicode_security::skeleton(text)
        .take(96)
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_whitespace() || printable(*c))
        .collect();
    folded
        .split_whitespace()
        .take(8)
        .map(String::from)
        .collect()
}

/// The room's notices that begin with a fixed word or two (`* more than N members: ...`,
/// `* welcome to the room, ...`).
const NOTICES: [&str; 7] = [
    "more than",
    "welcome to",
    "your encoding",
    "server shutting",
    "commands",
    "any other line",
    "bye",
];

/// Why `/me text` from `nick` is refused: the line `* nick text` must not read like one of
/// the room's notices, or a member could fake its own leave (`/me left (quit)`), a new name
/// (`/me is now known as alice`) or a count (nickname `3`, `/me members: ...`, or nickname `1`,
/// `/me member: ...`, as the room says it for one). The check sees through look-alike letters
/// and invisible characters, as the nickname rules do.
pub fn check_me(nick: &str, text: &str) -> Result<(), String> {
    let starts = |words: &[String], with: &[String]| {
        words.len() >= with.len() && words.iter().zip(with).all(|(w, p)| w == p)
    };
    // The notices' words as they look, worked out once.
    static PATTERNS: std::sync::LazyLock<[Vec<String>; 6]> = std::sync::LazyLock::new(|| {
        [
            "joined",
            "left",
            "is now known as",
            "members",
            "member",
            "online",
        ]
        .map(look_words)
    });
    static FIXED: std::sync::LazyLock<Vec<Vec<String>>> =
        std::sync::LazyLock::new(|| NOTICES.iter().map(|n| look_words(n)).collect());
    let [joined, left, renamed, members, member, online] = &*PATTERNS;
    let said = look_words(text);
    // Only the notices' own shapes: `joined` alone, `left` alone or followed by punctuation
    // (`left (quit)`, `left: ...`), `is now known as` one name. `/me left the keys at home`
    // is a sentence, not a notice.
    let tokens = look_tokens(text);
    let about_member = if starts(&said, joined) {
        tokens.len() == 1
    } else if starts(&said, left) {
        let glued = tokens
            .first()
            .is_some_and(|t| t.chars().any(|c| !c.is_alphanumeric()));
        let next = tokens.get(1).and_then(|t| t.chars().next());
        tokens.len() == 1 || glued || next.is_some_and(|c| !c.is_alphanumeric())
    } else {
        starts(&said, renamed) && tokens.len() <= 5
    };
    // A count: digits, or characters that pass for them (UTS #39 takes `З` and `Ʒ` for 3, `O`
    // and `0` for each other, `l`, `I`, `|` and `1` likewise).
    let shape: String = unicode_security::skeleton(nick).collect();
    let digit = |t: &str| t.chars().any(char::is_numeric);
    let number = (digit(nick) || digit(&shape))
        && shape.chars().all(|c| c.is_numeric() || "lIoO|".contains(c));
    let counted = number && [members, member, online].iter().any(|p| starts(&said, p));
    let mut line = look_words(nick);
    line.extend(said);
    if about_member || counted || FIXED.iter().any(|p| starts(&line, p)) {
        return Err("/me cannot make a line that reads like one of the room's notices".into());
    }
    Ok(())
}

/// Characters allowed in nicknames: visible, and not able to act on a terminal or reorder text.
/// Invisible ones are refused too, so that `server` plus a variation selector cannot pass for
/// the server, nor `guest-1` plus a grapheme joiner for guest-1: Unicode's
/// Default_Ignorable_Code_Point set (DerivedCoreProperties.txt), every format character
/// (General_Category Cf, which terminals draw with no width: `server` + U+FFFB looked like the
/// server), the blank Braille pattern, and code points of no script (unassigned, private use,
/// noncharacters: no one can tell what they look like).
fn printable(c: char) -> bool {
    use unicode_script::{Script, UnicodeScript};
    !(c.is_whitespace()
        || c.is_control()
        || c.script() == Script::Unknown
        || is_format(c)
        || matches!(
            c,
            '\u{ad}'
                | '\u{34f}'
                | '\u{61c}'
                | '\u{115f}'..='\u{1160}'
                | '\u{17b4}'..='\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fff8}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        ))
}

/// General_Category Cf (format characters), from Unicode 16's DerivedGeneralCategory.txt. No
/// crate we use exposes the general category; the list is short and changes rarely.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands() {
        assert_eq!(parse(""), Input::Empty);
        assert_eq!(parse("  \r"), Input::Empty);
        assert_eq!(parse("hello world"), Input::Say("hello world"));
        assert_eq!(parse("//etc/passwd"), Input::Say("/etc/passwd"));
        assert_eq!(parse("/nick  bob "), Input::Nick("bob"));
        assert_eq!(parse("/nick"), Input::Usage("usage: /nick NAME"));
        assert_eq!(parse("/WHO"), Input::Who);
        assert_eq!(
            parse("/msg bob  hi there"),
            Input::Msg {
                to: "bob",
                text: "hi there"
            }
        );
        assert_eq!(parse("/msg bob"), Input::Usage("usage: /msg NICK text"));
        assert_eq!(parse("/me waves"), Input::Me("waves"));
        assert_eq!(parse("/encoding gbk"), Input::Encoding(Some("gbk")));
        assert_eq!(parse("/encoding"), Input::Encoding(None));
        assert_eq!(parse("/quit"), Input::Quit(None));
        assert_eq!(parse("/quit see you"), Input::Quit(Some("see you")));
        assert_eq!(parse("/help"), Input::Help);
        assert_eq!(parse("/frob x"), Input::Unknown("frob"));
        assert_eq!(parse("/"), Input::Unknown(""));
    }

    #[test]
    fn nick_rules() {
        assert!(check_nick("alice").is_ok());
        assert!(check_nick("张三").is_ok());
        assert!(check_nick(&"x".repeat(32)).is_ok());
        assert!(
            check_nick(&"x".repeat(33))
                .unwrap_err()
                .contains("too long")
        );
        assert!(check_nick("a b").unwrap_err().contains("not allowed"));
        assert!(check_nick("a\x1bb").is_err());
        assert!(check_nick("a\u{202e}b").is_err());
        // Invisible characters that would make a name look like another one.
        for c in [
            '\u{fe0f}',
            '\u{34f}',
            '\u{3164}',
            '\u{2800}',
            '\u{200b}',
            '\u{e0061}',
            // Format characters outside Default_Ignorable (zero width in terminals).
            '\u{fffb}',
            '\u{13430}',
            '\u{600}',
            '\u{110bd}',
            // Unassigned, a noncharacter, private use.
            '\u{378}',
            '\u{ffff}',
            '\u{e000}',
        ] {
            assert!(check_nick(&format!("server{c}")).is_err(), "{c:?}");
            assert!(check_nick(&format!("{c}")).is_err(), "{c:?}");
        }
        // Visible names of every kind still pass: emoji, combining marks, other scripts.
        for ok in ["bob😀", "e\u{301}ric", "नमस्ते", "guest_1", "ÿ"] {
            assert!(check_nick(ok).is_ok(), "{ok}");
        }
        assert!(check_nick("Server").unwrap_err().contains("reserved"));
        // Lookalikes of "server": Cyrillic ѕ and е, a digit for a letter.
        assert!(
            check_nick("ѕеrvеr")
                .unwrap_err()
                .contains("looks like \"server\"")
        );
        assert!(check_nick("SERVER").unwrap_err().contains("reserved"));
        // Greek capital epsilons: "SERVER" as it looks.
        assert!(
            check_nick("S\u{395}RV\u{395}R")
                .unwrap_err()
                .contains("looks like \"server\"")
        );
        // Length in characters as they are composed: é typed as e and an accent is one.
        assert!(check_nick(&"e\u{301}".repeat(MAX_NICK_CHARS)).is_ok());
        assert_eq!(
            check_nick(&"e\u{301}".repeat(MAX_NICK_CHARS + 1)).unwrap_err(),
            "33 characters is too long (at most 32)"
        );
        assert!(check_nick("").is_err());
    }

    /// Whether two names may not both be in the room, and if so by which key.
    fn clash(a: &str, b: &str) -> Option<&'static str> {
        let (a, b) = (NickKeys::of(a), NickKeys::of(b));
        if a.id == b.id {
            Some("id")
        } else if a.looks.iter().any(|l| b.looks.contains(l)) {
            Some("look")
        } else {
            None
        }
    }

    #[test]
    fn names_and_lookalikes() {
        for (a, b) in [
            ("Bob", "bob"),
            ("BILL", "bill"),
            ("\u{e9}t\u{e9}", "e\u{301}te\u{301}"),
            ("ΝΙΚΟΣ", "νικος"),
            ("νικοσ", "νικος"),
            ("STRASSE", "straße"),
        ] {
            assert_eq!(clash(a, b), Some("id"), "{a:?} {b:?}");
        }
        for (a, b) in [
            ("alice", "\u{430}lice"),
            ("Alice", "\u{430}lice"),
            ("Alice", "\u{410}lice"),
            ("bill", "bi11"),
            ("bill", "biII"),
            ("BOB", "B0B"),
            ("modern", "rnodern"),
            ("server", "\u{405}\u{415}RV\u{415}R"),
            // Look-alikes of a name's capitals: Cyrillic and Greek letters, and digits for
            // letters.
            ("Bob", "\u{412}\u{41e}\u{412}"),
            ("Bob", "\u{392}\u{39f}\u{392}"),
            ("alice", "\u{391}LIC\u{395}"),
            ("eve", "\u{395}V\u{395}"),
            ("Bob", "B0B"),
            ("bob", "b0b"),
            // Beyond ASCII, in any mix of cases: Cyrillic В, О and Ь read as "BOb"; and В, о, В
            // ("BoB") through the capitals.
            ("Bob", "\u{412}\u{41e}\u{42c}"),
            ("bob", "\u{412}\u{41e}\u{42c}"),
            ("Bob", "\u{412}\u{43e}\u{412}"),
        ] {
            assert_eq!(clash(a, b), Some("look"), "{a:?} {b:?}");
        }
        for (a, b) in [
            ("alice", "alicia"),
            ("张三", "张四"),
            ("bob", "bop"),
            ("é", "e"),
            // A capital I is an l only in a mix of cases nobody types: `lAN`, `NElL`.
            ("lan", "IAN"),
            ("Nell", "NEIL"),
            ("all", "ALI"),
        ] {
            assert_eq!(clash(a, b), None, "{a:?} {b:?}");
        }
    }

    #[test]
    fn me_cannot_fake_the_rooms_notices() {
        for (nick, t) in [
            ("bob", "left (quit)"),
            ("bob", "Left"),
            ("bob", "joined"),
            ("bob", "is now known as alice"),
            ("bob", "left: bye"),
            ("bob", "left"),
            ("bob", "joined."),
            ("bob", "left , gone"),
            // Invisible and look-alike characters do not get past it.
            ("bob", "\u{200b}left (quit)"),
            ("bob", "\u{ad}joined"),
            ("bob", "l\u{435}ft (quit)"),
            ("bob", "Ieft (quit)"),
            ("bob", "j\u{43e}ined"),
            ("bob", "is\u{a0}now known as alice"),
            // Nicknames that make a notice of their own with the right words.
            ("3", "members: joins and leaves are announced again"),
            ("1", "member: joins and leaves are announced again"),
            ("12", "online: a, b"),
            // Letters that pass for a digit: Cyrillic Ze and Latin Ezh for 3, O for 0.
            ("\u{417}", "members: joins and leaves are announced again"),
            ("\u{1b7}", "online: a, b"),
            ("1O", "members: joins and leaves are announced again"),
            (
                "more",
                "than 1000 members: joins and leaves are no longer announced",
            ),
            ("welcome", "to the room, you are guest-9"),
            ("your", "encoding is now gbk"),
            ("bye", "for now"),
        ] {
            assert!(check_me(nick, t).is_err(), "{nick} {t}");
        }
        for (nick, t) in [
            ("bob", "waves"),
            ("bob", "leftover pizza"),
            ("bob", "joins in"),
            ("bob", "is happy"),
            ("3", "waves"),
            ("more", "coffee please"),
            ("lol", "members only"),
            // Sentences that start with a notice's word but do not have its shape.
            ("bob", "left the keys at home"),
            ("bob", "joined the company last year"),
            ("bob", "is now known as the best cook in town"),
        ] {
            assert!(check_me(nick, t).is_ok(), "{nick} {t}");
        }
    }

    proptest! {
        #[test]
        fn parse_is_total(s in "\\PC{0,80}|/[a-z]{0,8}( \\PC{0,20}){0,3}") {
            match parse(&s) {
                Input::Say(t) => prop_assert!(!t.trim().is_empty()),
                Input::Nick(n) => prop_assert!(!n.is_empty() && n.trim() == n),
                Input::Msg { to, text } => {
                    prop_assert!(!to.is_empty() && !to.contains(char::is_whitespace));
                    prop_assert!(!text.trim().is_empty());
                }
                _ => {}
            }
        }

        #[test]
        fn accepted_nicks_are_safe(s in "\\PC{0,40}") {
            if check_nick(&s).is_ok() {
                let mut clean = String::new();
                crate::codec::sanitize_into(&s, &mut clean);
                // Nothing escaped: at most a backslash doubled where it would start an escape.
                prop_assert!(clean == s || clean.replace("\\\\", "\\") == s, "{:?}", clean);
                prop_assert!(!s.contains(char::is_whitespace));
            }
        }
    }
}
