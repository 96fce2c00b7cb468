//! Property tests of user IDs as people type them on the activation page:
//! any text is read or refused without a panic, every ID comes back from
//! the way it is shown, and spaces and hyphens are all that is forgiven.

use proptest::prelude::*;

use super::*;

/// An ID's digits as someone may type them: spaces and hyphens anywhere.
fn typed(digits: &str, separators: &[(usize, bool)]) -> String {
    let mut text: Vec<char> = digits.chars().collect();
    for (at, hyphen) in separators {
        let at = at % (text.len() + 1);
        text.insert(at, if *hyphen { '-' } else { ' ' });
    }
    text.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// An ID, as shown (groups of four joined by hyphens), is read back as
    /// itself.
    #[test]
    fn shown_ids_are_read_back(random in any::<u64>()) {
        if let Some(id) = UserId::from_random(random) {
            prop_assert_eq!(id.as_str().len(), USER_ID_DIGITS);
            prop_assert_eq!(UserId::parse(&id.to_string()), Some(id));
        }
    }

    /// Fourteen digits with spaces and hyphens anywhere are the ID of those
    /// digits.
    #[test]
    fn spaces_and_hyphens_anywhere_are_ignored(
        digits in "[0-9]{14}",
        separators in proptest::collection::vec((any::<usize>(), any::<bool>()), 0..8),
    ) {
        let id = UserId::parse(&typed(&digits, &separators));
        prop_assert_eq!(id.as_ref().map(UserId::as_str), Some(digits.as_str()));
    }

    /// Any text: an ID only when, spaces and hyphens aside, it is fourteen
    /// ASCII digits, and then the ID is those digits.
    #[test]
    fn any_text_is_an_id_only_when_it_is_fourteen_digits(
        text in prop_oneof!["\\PC{0,24}", "[0-9 \\-]{10,20}", "[0-9０-９a\\-]{12,16}"],
    ) {
        let digits: String = text.chars().filter(|c| !" -".contains(*c)).collect();
        let expected = (digits.len() == USER_ID_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some(digits);
        prop_assert_eq!(UserId::parse(&text).map(|id| id.as_str().to_owned()), expected);
    }
}
