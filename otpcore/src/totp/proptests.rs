//! Property tests of base32 secrets as people and other tools write them
//! (import files, otpctl): every secret comes back from any spelling of
//! its base32, and any text is decoded or refused without a panic.

use proptest::prelude::*;

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// A secret's base32, in either case, grouped, hyphenated or padded, is
    /// decoded to the secret.
    #[test]
    fn any_spelling_of_a_secret_decodes_to_it(
        secret in proptest::collection::vec(any::<u8>(), 1..80),
        lower in proptest::collection::vec(any::<bool>(), 0..128),
        separator in prop_oneof![Just(""), Just(" "), Just("-"), Just("\t")],
        padding in 0usize..7,
    ) {
        let encoded = base32(&secret);
        let cased: String = encoded
            .chars()
            .zip(lower.iter().chain(std::iter::repeat(&false)))
            .map(|(c, lower)| if *lower { c.to_ascii_lowercase() } else { c })
            .collect();
        let groups: Vec<String> = cased
            .chars()
            .collect::<Vec<_>>()
            .chunks(4)
            .map(|c| c.iter().collect())
            .collect();
        let written = format!("{}{}", groups.join(separator), "=".repeat(padding));
        let decoded = decode_base32(&written).map(|s| s.to_vec());
        prop_assert_eq!(decoded, Some(secret));
    }

    /// Any text: decoded only when what is left after white space, hyphens
    /// and padding is non-empty base32, and then re-encoding gives that
    /// back.
    #[test]
    fn any_text_decodes_only_as_base32(text in prop_oneof!["\\PC{0,40}", "[A-Za-z2-9 =\\-]{0,40}"]) {
        let cleaned: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-' && *c != '=')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        match decode_base32(&text) {
            Some(secret) => {
                prop_assert!(!secret.is_empty());
                let encoded = base32(&secret);
                prop_assert_eq!(encoded.as_str(), cleaned.as_str());
            }
            None => prop_assert!(
                cleaned.is_empty()
                    || !cleaned.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
                    || data_encoding::BASE32_NOPAD.decode(cleaned.as_bytes()).is_err(),
                "{:?} refused", text
            ),
        }
    }

    /// Algorithm names: each name `as_str` gives is parsed back; no other
    /// text is an algorithm.
    #[test]
    fn only_algorithm_names_parse(text in prop_oneof!["\\PC{0,8}", "(?i)sha(1|256|512|384)"]) {
        match Algorithm::parse(&text) {
            Some(algorithm) => prop_assert_eq!(algorithm.as_str(), text.as_str()),
            None => prop_assert!(!["SHA1", "SHA256", "SHA512"].contains(&text.as_str())),
        }
    }
}
