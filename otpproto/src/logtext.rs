//! Text from outside (a user name, a peer's label, a module argument) made
//! safe for one log line or audit entry.
//!
//! Some characters change how a line reads without being seen: control
//! characters (a newline starts a forged line), Unicode format characters
//! (U+202E RIGHT-TO-LEFT OVERRIDE shows `ali\u{202e}ecb` as `alibce`, a
//! zero-width space makes two names look alike) and the line and paragraph
//! separators U+2028 and U+2029. [`escape`] writes each of them as
//! `\u{hex}`, the notation of Rust's string literals, and a backslash as
//! `\\`, so what a line shows maps back to exactly one text: a user who
//! types the six characters `\u{a}` appears as `\\u{a}`, a real newline as
//! `\u{a}`. A text longer than the bound is cut and marked with `\...`.
//!
//! Escape each text once, where the line or entry is written: escaping an
//! escaped text doubles its backslashes.

use std::fmt;

/// The bound for one field of a log line or audit entry, in characters of
/// the original text.
pub const MAX_CHARS: usize = 256;

/// Ends a text that was cut at the bound. A backslash followed by a dot
/// appears nowhere else, since a backslash of the text becomes `\\`.
pub const CUT: &str = "\\...";

/// The format characters (Unicode general category Cf) and the line and
/// paragraph separators (Zl, Zp) as of Unicode 15, as inclusive ranges in
/// code point order. Control characters (Cc) are `char::is_control`.
const FORMAT_AND_SEPARATORS: [(char, char); 21] = [
    ('\u{00AD}', '\u{00AD}'),   // SOFT HYPHEN
    ('\u{0600}', '\u{0605}'),   // ARABIC NUMBER SIGN .. ARABIC NUMBER MARK ABOVE
    ('\u{061C}', '\u{061C}'),   // ARABIC LETTER MARK
    ('\u{06DD}', '\u{06DD}'),   // ARABIC END OF AYAH
    ('\u{070F}', '\u{070F}'),   // SYRIAC ABBREVIATION MARK
    ('\u{0890}', '\u{0891}'),   // ARABIC POUND / PIASTRE MARK ABOVE
    ('\u{08E2}', '\u{08E2}'),   // ARABIC DISPUTED END OF AYAH
    ('\u{180E}', '\u{180E}'),   // MONGOLIAN VOWEL SEPARATOR
    ('\u{200B}', '\u{200F}'),   // ZERO WIDTH SPACE .. RIGHT-TO-LEFT MARK
    ('\u{2028}', '\u{202E}'),   // LINE/PARAGRAPH SEPARATOR, bidi embeddings and overrides
    ('\u{2060}', '\u{2064}'),   // WORD JOINER .. INVISIBLE PLUS
    ('\u{2066}', '\u{206F}'),   // bidi isolates, deprecated format characters
    ('\u{FEFF}', '\u{FEFF}'),   // ZERO WIDTH NO-BREAK SPACE (byte order mark)
    ('\u{FFF9}', '\u{FFFB}'),   // interlinear annotation
    ('\u{110BD}', '\u{110BD}'), // KAITHI NUMBER SIGN
    ('\u{110CD}', '\u{110CD}'), // KAITHI NUMBER SIGN ABOVE
    ('\u{13430}', '\u{1343F}'), // Egyptian hieroglyph format controls
    ('\u{1BCA0}', '\u{1BCA3}'), // shorthand format controls
    ('\u{1D173}', '\u{1D17A}'), // musical symbol beams, ties, slurs, phrases
    ('\u{E0001}', '\u{E0001}'), // LANGUAGE TAG
    ('\u{E0020}', '\u{E007F}'), // tag characters
];

/// Whether `c` is written as an escape: a control, format or line or
/// paragraph separator character.
pub fn is_hidden(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    c.is_control()
        || FORMAT_AND_SEPARATORS
            .iter()
            .any(|&(first, last)| first <= c && c <= last)
}

/// Whether `byte` is an ASCII character [`escape`] keeps as it is.
fn is_plain_ascii(byte: u8) -> bool {
    (b' '..=b'~').contains(&byte) && byte != b'\\'
}

/// `text` as a log line or audit entry may hold it: at most `max_chars` of
/// its characters (then [`CUT`]), hidden characters ([`is_hidden`]) as
/// `\u{hex}`, a backslash as `\\`, everything else as it is.
pub fn escape(text: &str, max_chars: usize) -> String {
    let mut escaped = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    // Writing into a String cannot fail.
    let _ = write_escaped(&mut escaped, text, max_chars);
    escaped
}

/// [`escape`] as a value that writes the escaped text where it is
/// formatted (`format!("{}", escaped(user, MAX_CHARS))`), without a string
/// of its own.
pub fn escaped(text: &str, max_chars: usize) -> Escaped<'_> {
    Escaped { text, max_chars }
}

/// A text shown as [`escape`] writes it; made by [`escaped`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a> {
    text: &'a str,
    max_chars: usize,
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.text, self.max_chars)
    }
}

/// Writes `text` escaped into `out`: the runs of characters kept as they
/// are in one piece each, so a text with nothing to escape is one write.
fn write_escaped<W: fmt::Write>(out: &mut W, text: &str, max_chars: usize) -> fmt::Result {
    // Printable ASCII only, and no more bytes (so no more characters)
    // than the bound: nothing to escape or cut.
    if text.len() <= max_chars && text.bytes().all(is_plain_ascii) {
        return out.write_str(text);
    }
    // The start of the run not yet written.
    let mut run = 0;
    for (n, (at, c)) in text.char_indices().enumerate() {
        if n == max_chars {
            out.write_str(text.get(run..at).unwrap_or_default())?;
            return out.write_str(CUT);
        }
        if c == '\\' || is_hidden(c) {
            out.write_str(text.get(run..at).unwrap_or_default())?;
            if c == '\\' {
                out.write_str("\\\\")?;
            } else {
                write!(out, "{}", c.escape_unicode())?;
            }
            run = at + c.len_utf8();
        }
    }
    out.write_str(text.get(run..).unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The inverse of [`escape`] for a text that was not cut: whether the
    /// escape is unambiguous.
    fn unescape(escaped: &str) -> Option<String> {
        let mut text = String::new();
        let mut rest = escaped;
        while let Some(at) = rest.find('\\') {
            text.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(more) = after.strip_prefix('\\') {
                text.push('\\');
                rest = more;
            } else {
                let body = after.strip_prefix("u{")?;
                let end = body.find('}')?;
                let c = char::from_u32(u32::from_str_radix(&body[..end], 16).ok()?)?;
                if !is_hidden(c) {
                    return None;
                }
                text.push(c);
                rest = &body[end + 1..];
            }
        }
        text.push_str(rest);
        Some(text)
    }

    /// The escape character by character, as the definition reads: what
    /// the run-by-run writer must match.
    fn escape_by_char(text: &str, max_chars: usize) -> String {
        let mut escaped = String::new();
        let mut chars = text.chars();
        for c in chars.by_ref().take(max_chars) {
            if c == '\\' {
                escaped.push_str("\\\\");
            } else if is_hidden(c) {
                escaped.extend(c.escape_unicode());
            } else {
                escaped.push(c);
            }
        }
        if chars.next().is_some() {
            escaped.push_str(CUT);
        }
        escaped
    }

    #[test]
    fn the_displayed_form_is_the_escape() {
        for (text, bound) in [
            ("alice", MAX_CHARS),
            ("alice", 5),
            ("alice", 4),
            ("a\\b\nc", MAX_CHARS),
            ("\u{202e}x", 1),
            ("日本語", 2),
            ("", 0),
        ] {
            assert_eq!(escaped(text, bound).to_string(), escape(text, bound));
            assert_eq!(escape(text, bound), escape_by_char(text, bound));
        }
        assert_eq!(
            format!("user={} end", escaped("a b\tc", MAX_CHARS)),
            "user=a b\\u{9}c end"
        );
    }

    #[test]
    fn overrides_separators_and_controls_are_shown_as_escapes() {
        assert_eq!(escape("ali\u{202e}ecb", MAX_CHARS), "ali\\u{202e}ecb");
        assert_eq!(
            escape("a\nb\r\t\u{7f}", MAX_CHARS),
            "a\\u{a}b\\u{d}\\u{9}\\u{7f}"
        );
        assert_eq!(
            escape("x\u{2028}y\u{2029}", MAX_CHARS),
            "x\\u{2028}y\\u{2029}"
        );
        assert_eq!(
            escape("\u{feff}\u{200b}\u{e0041}", MAX_CHARS),
            "\\u{feff}\\u{200b}\\u{e0041}"
        );
        assert_eq!(escape("\u{85}", MAX_CHARS), "\\u{85}");
    }

    #[test]
    fn a_typed_escape_differs_from_the_character() {
        assert_eq!(escape("ali\\u{202e}ecb", MAX_CHARS), "ali\\\\u{202e}ecb");
        assert_ne!(
            escape("ali\\u{202e}ecb", MAX_CHARS),
            escape("ali\u{202e}ecb", MAX_CHARS)
        );
    }

    #[test]
    fn ordinary_text_passes_unchanged() {
        let printable: String = (' '..='~').filter(|c| *c != '\\').collect();
        assert_eq!(escape(&printable, MAX_CHARS), printable);
        for text in [
            "é",
            "日本",
            "José Müller",
            "алиса",
            "أحمد",
            "😀",
            "a\u{301}",
        ] {
            assert_eq!(escape(text, MAX_CHARS), text);
        }
    }

    #[test]
    fn the_table_holds_only_characters_that_rust_itself_escapes() {
        for &(first, last) in &FORMAT_AND_SEPARATORS {
            assert!(first <= last, "{first:?}..{last:?}");
            for c in first..=last {
                assert!(!c.is_control(), "{c:?} is a control character");
                assert!(
                    c.escape_debug().to_string().starts_with("\\u{"),
                    "{c:?} is printable"
                );
            }
        }
        for pair in FORMAT_AND_SEPARATORS.windows(2) {
            assert!(pair[0].1 < pair[1].0, "{pair:?} out of order");
        }
        // Neighbours that are visible.
        for c in [
            '\u{AC}',
            '\u{AE}',
            '\u{2027}',
            '\u{202F}',
            '\u{2065}',
            '\u{FEFE}',
            '\u{E0080}',
        ] {
            assert!(!is_hidden(c), "{c:?}");
        }
        for c in [
            '\u{61C}',
            '\u{180E}',
            '\u{200D}',
            '\u{2066}',
            '\u{1343F}',
            '\u{E007F}',
        ] {
            assert!(is_hidden(c), "{c:?}");
        }
    }

    #[test]
    fn long_text_is_cut_and_marked() {
        assert_eq!(escape("abcdef", 3), "abc\\...");
        assert_eq!(escape("abc", 3), "abc");
        assert_eq!(escape("", 0), "");
        assert_eq!(escape("a", 0), "\\...");
        assert_eq!(escape("\u{202e}\u{202e}", 1), "\\u{202e}\\...");
        let long = "x".repeat(10 * MAX_CHARS);
        assert_eq!(
            escape(&long, MAX_CHARS).chars().count(),
            MAX_CHARS + CUT.len()
        );
    }

    proptest! {
        #[test]
        fn runs_and_characters_escape_alike(text in any::<String>(), bound in 0usize..300) {
            let expected = escape_by_char(&text, bound);
            prop_assert_eq!(escaped(&text, bound).to_string(), expected.clone());
            prop_assert_eq!(escape(&text, bound), expected);
        }

        #[test]
        fn ascii_runs_escape_alike(text in "[ -~\\t\\n\\\\]{0,80}", bound in 0usize..100) {
            prop_assert_eq!(escape(&text, bound), escape_by_char(&text, bound));
        }

        #[test]
        fn no_hidden_character_survives(text in any::<String>(), bound in 0usize..64) {
            let escaped = escape(&text, bound);
            prop_assert!(!escaped.chars().any(is_hidden), "{:?}", escaped);
            // `\u{10ffff}` is the longest escape.
            prop_assert!(escaped.chars().count() <= bound * 10 + CUT.len());
        }

        #[test]
        fn the_escape_maps_back_to_the_text(text in any::<String>()) {
            prop_assume!(text.chars().count() <= MAX_CHARS);
            prop_assert_eq!(unescape(&escape(&text, MAX_CHARS)), Some(text));
        }

        #[test]
        fn a_cut_text_keeps_its_beginning(text in any::<String>(), bound in 0usize..16) {
            let escaped = escape(&text, bound);
            let kept: String = text.chars().take(bound).collect();
            if text.chars().count() > bound {
                let body = escaped.strip_suffix(CUT).expect("marked");
                prop_assert_eq!(unescape(body), Some(kept));
            } else {
                prop_assert_eq!(unescape(&escaped), Some(text));
            }
        }

        #[test]
        fn every_control_format_and_separator_character_is_hidden(
            text in "[\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]"
        ) {
            let c = text.chars().next().expect("one character");
            prop_assert!(is_hidden(c), "{:?}", c);
        }

        #[test]
        fn visible_text_is_unchanged(text in "[^\\\\\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]{0,64}") {
            prop_assert_eq!(escape(&text, MAX_CHARS), text);
        }
    }
}
