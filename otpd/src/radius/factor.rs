//! The first factor of a RADIUS login: the user's directory password,
//! typed before the code in the same field, or alone in the first request
//! of a challenge.

use otpldap::{Directory, Verdict};

/// What the directory said of a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Password {
    Right,
    Wrong,
    /// No answer within `[ldap] timeout_ms`, or no directory to ask: the
    /// login is neither accepted nor refused.
    Unknown,
}

/// Splits a User-Password into the directory password and the code: the
/// code is its last `digits` characters, the password everything before.
/// `None` when nothing is left for the password.
pub(super) fn split_code(field: &str, digits: u32) -> Option<(&str, &str)> {
    let digits = usize::try_from(digits).ok()?;
    let (at, _) = field.char_indices().rev().nth(digits.checked_sub(1)?)?;
    (at > 0).then(|| field.split_at(at))
}

/// Asks the directory whether `password` is `user`'s, within its
/// `timeout_ms` (the check runs on the async runtime and never blocks a
/// worker thread). A failure to ask is logged, never with the password.
/// The exchange with the directory is a large future: it is boxed, so
/// that every RADIUS request's task stays small to spawn and to finish
/// (the tasks of logins without the directory carry only its pointer).
pub(super) async fn check(directory: Option<&Directory>, user: &str, password: &str) -> Password {
    let Some(directory) = directory else {
        log::error!("radius: a client's first factor is the directory, but there is no [ldap]");
        return Password::Unknown;
    };
    match Box::pin(directory.check_password(user, password.as_bytes())).await {
        Ok(Verdict::Right) => Password::Right,
        Ok(Verdict::Wrong) => Password::Wrong,
        Err(e) => {
            log::warn!("radius: cannot check a directory password, no answer sent: {e}");
            Password::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_code_is_the_last_digits() {
        assert_eq!(split_code("secret123456", 6), Some(("secret", "123456")));
        assert_eq!(split_code("s123456", 6), Some(("s", "123456")));
        assert_eq!(split_code("123456", 6), None);
        assert_eq!(split_code("12345", 6), None);
        assert_eq!(split_code("", 6), None);
        assert_eq!(
            split_code("pässwörd12345678", 8),
            Some(("pässwörd", "12345678"))
        );
        assert_eq!(split_code("ü12345é", 6), Some(("ü", "12345é")));
        assert_eq!(split_code("abc", 0), None);
    }

    proptest! {
        #[test]
        fn password_then_code_splits_back(password in "\\PC{1,40}", code in "[0-9]{6,8}") {
            let digits = u32::try_from(code.len()).unwrap();
            let field = format!("{password}{code}");
            prop_assert_eq!(split_code(&field, digits), Some((password.as_str(), code.as_str())));
        }

        #[test]
        fn any_field_splits_into_itself_or_not_at_all(field in "\\PC{0,130}", digits in 0u32..12) {
            match split_code(&field, digits) {
                Some((password, code)) => {
                    prop_assert!(!password.is_empty());
                    prop_assert_eq!(code.chars().count(), digits as usize);
                    prop_assert_eq!(format!("{password}{code}"), field);
                }
                None => prop_assert!(digits == 0 || field.chars().count() <= digits as usize),
            }
        }
    }
}
