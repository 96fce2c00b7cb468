//! Recovery codes: one-use codes for the day a phone is lost. Each is ten
//! digits, shown `12345-67890` and typed with or without the hyphen.
//! Only input of that shape is treated as a recovery code, so the usual
//! six- to eight-digit codes never take the recovery path.

use zeroize::Zeroizing;

/// Digits of a recovery code.
pub const DIGITS: usize = 10;

/// Where the shown form breaks the digits with a hyphen.
const HYPHEN_AT: usize = DIGITS / 2;

/// The ten digits of `input` when it has the shape of a recovery code:
/// ten ASCII digits, or five, a hyphen and five, with surrounding
/// whitespace ignored. `None` for anything else.
pub fn digits(input: &str) -> Option<Zeroizing<String>> {
    let text = input.trim().as_bytes();
    let shaped = match text.len() {
        DIGITS => text.iter().all(u8::is_ascii_digit),
        n if n == DIGITS + 1 => text.iter().enumerate().all(|(i, b)| {
            if i == HYPHEN_AT {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        }),
        _ => false,
    };
    shaped.then(|| {
        Zeroizing::new(
            text.iter()
                .filter(|b| b.is_ascii_digit())
                .map(|b| char::from(*b))
                .collect(),
        )
    })
}

/// The shown form of ten digits: `12345-67890`.
pub fn shown(digits: &str) -> Zeroizing<String> {
    let (head, tail) = digits.split_at(digits.len().min(HYPHEN_AT));
    Zeroizing::new(format!("{head}-{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_digits_with_or_without_the_hyphen_are_recovery_codes() {
        for input in [
            "12345-67890",
            "1234567890",
            "  12345-67890\n",
            "\t1234567890 ",
        ] {
            assert_eq!(
                digits(input).as_deref().map(String::as_str),
                Some("1234567890"),
                "{input:?}"
            );
        }
    }

    #[test]
    fn other_shapes_are_not() {
        for input in [
            "",
            "123456",
            "12345678",
            "123456789",
            "12345678901",
            "1234-567890",
            "123456-7890",
            "12345--67890",
            "12-345-67890",
            "12345-6789a",
            "abcde-fghij",
            "12345 67890",
            "١٢٣٤٥-٦٧٨٩٠",
            "-1234567890",
            "1234567890-",
        ] {
            assert!(digits(input).is_none(), "{input:?}");
        }
    }

    #[test]
    fn shown_breaks_after_five() {
        assert_eq!(shown("1234567890").as_str(), "12345-67890");
    }
}
