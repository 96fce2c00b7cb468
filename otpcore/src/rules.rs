//! The input rules of the issuance screen and the shape of
//! user IDs.

use std::fmt;

/// An input rule that a value broke. The message names the rule, so the
/// person typing knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("mail address must be 4 to 64 characters long (it has {0})")]
    EmailLength(usize),
    #[error("mail address may hold only half-width printable ASCII letters, digits and symbols, without spaces")]
    EmailCharacters,
    #[error(
        "mail address must look like local@domain (one @, text on both sides, a dot in the domain)"
    )]
    EmailShape,
    #[error("the two mail addresses do not match")]
    EmailMismatch,
    #[error("activation password must be 4 to 8 digits long (it has {0} characters)")]
    PasswordLength(usize),
    #[error("activation password may hold digits 0-9 only")]
    PasswordDigits,
    #[error("the two activation passwords do not match")]
    PasswordMismatch,
}

/// Checks a phone mail address: 4 to 64 printable ASCII characters without
/// spaces, shaped `local@domain`.
pub fn check_email(address: &str) -> Result<(), RuleError> {
    if !address.chars().all(|c| c.is_ascii_graphic()) {
        return Err(RuleError::EmailCharacters);
    }
    let len = address.len();
    if !(4..=64).contains(&len) {
        return Err(RuleError::EmailLength(len));
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err(RuleError::EmailShape);
    };
    let domain_ok = !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    // Characters that would break a mail header or need quoting.
    let local_ok = !local.is_empty()
        && !local.contains(['<', '>', '(', ')', ',', ';', ':', '"', '[', ']', '\\']);
    if !domain_ok || !local_ok {
        return Err(RuleError::EmailShape);
    }
    Ok(())
}

/// Checks the second entry of the mail address against the first.
pub fn check_email_pair(first: &str, second: &str) -> Result<(), RuleError> {
    check_email(first)?;
    if first != second {
        return Err(RuleError::EmailMismatch);
    }
    Ok(())
}

/// Checks an activation password: 4 to 8 ASCII digits, digits only.
pub fn check_activation_password(password: &str) -> Result<(), RuleError> {
    if !password.chars().all(|c| c.is_ascii_digit()) {
        return Err(RuleError::PasswordDigits);
    }
    let len = password.len();
    if !(4..=8).contains(&len) {
        return Err(RuleError::PasswordLength(len));
    }
    Ok(())
}

/// Checks the second entry of the activation password against the first.
pub fn check_activation_password_pair(first: &str, second: &str) -> Result<(), RuleError> {
    check_activation_password(first)?;
    if first != second {
        return Err(RuleError::PasswordMismatch);
    }
    Ok(())
}

/// Digits in a user ID: 14 decimal digits carry 46.5 bits.
pub const USER_ID_DIGITS: usize = 14;
const USER_ID_SPACE: u64 = 100_000_000_000_000;

/// A user ID: random, easy to type, printed in groups of four or fewer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// Builds a user ID from 64 random bits; `None` for the few values that
    /// would bias the result (the caller draws again).
    pub fn from_random(random: u64) -> Option<UserId> {
        let limit = u64::MAX - (u64::MAX % USER_ID_SPACE);
        (random < limit).then(|| UserId(format!("{:014}", random % USER_ID_SPACE)))
    }

    /// Parses a user ID as a person types it: spaces and hyphens are ignored.
    pub fn parse(text: &str) -> Option<UserId> {
        let digits: String = text.chars().filter(|c| *c != ' ' && *c != '-').collect();
        (digits.len() == USER_ID_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some(UserId(digits))
    }

    /// The canonical form, digits only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    /// Groups of four digits separated by hyphens, as shown to people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<&str> = self
            .0
            .as_bytes()
            .chunks(4)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        f.write_str(&groups.join("-"))
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_rules() {
        assert_eq!(check_email("a@b.jp"), Ok(()));
        assert_eq!(check_email("taro.yamada+otp@docomo.ne.jp"), Ok(()));
        assert_eq!(check_email("a@b"), Err(RuleError::EmailLength(3)));
        let long = format!("{}@example.com", "a".repeat(60));
        assert_eq!(check_email(&long), Err(RuleError::EmailLength(72)));
        assert_eq!(
            check_email("taro yamada@example.jp"),
            Err(RuleError::EmailCharacters)
        );
        assert_eq!(
            check_email("tarō@example.jp"),
            Err(RuleError::EmailCharacters)
        );
        assert_eq!(
            check_email("ｔａｒｏ@example.jp"),
            Err(RuleError::EmailCharacters)
        );
        assert_eq!(
            check_email("a\tb@example.jp"),
            Err(RuleError::EmailCharacters)
        );
        assert_eq!(check_email("taro.example.jp"), Err(RuleError::EmailShape));
        assert_eq!(check_email("taro@example"), Err(RuleError::EmailShape));
        assert_eq!(check_email("@example.jp"), Err(RuleError::EmailShape));
        assert_eq!(check_email("a@b@example.jp"), Err(RuleError::EmailShape));
        assert_eq!(check_email("a<b@example.jp"), Err(RuleError::EmailShape));
        assert_eq!(check_email("a@exa_mple.jp"), Err(RuleError::EmailShape));
        assert_eq!(check_email_pair("a@b.jp", "a@b.jp"), Ok(()));
        assert_eq!(
            check_email_pair("a@b.jp", "a@c.jp"),
            Err(RuleError::EmailMismatch)
        );
    }

    #[test]
    fn password_rules() {
        assert_eq!(check_activation_password("1234"), Ok(()));
        assert_eq!(check_activation_password("12345678"), Ok(()));
        assert_eq!(
            check_activation_password("123"),
            Err(RuleError::PasswordLength(3))
        );
        assert_eq!(
            check_activation_password("123456789"),
            Err(RuleError::PasswordLength(9))
        );
        assert_eq!(
            check_activation_password(""),
            Err(RuleError::PasswordLength(0))
        );
        assert_eq!(
            check_activation_password("12a4"),
            Err(RuleError::PasswordDigits)
        );
        assert_eq!(
            check_activation_password("１２３４"),
            Err(RuleError::PasswordDigits)
        );
        assert_eq!(
            check_activation_password("12 34"),
            Err(RuleError::PasswordDigits)
        );
        assert_eq!(
            check_activation_password_pair("1234", "1235"),
            Err(RuleError::PasswordMismatch)
        );
    }

    #[test]
    fn messages_name_the_rule() {
        assert!(RuleError::EmailLength(3).to_string().contains("4 to 64"));
        assert!(RuleError::PasswordLength(3)
            .to_string()
            .contains("4 to 8 digits"));
        assert!(RuleError::PasswordDigits
            .to_string()
            .contains("digits 0-9 only"));
    }

    #[test]
    fn user_ids() {
        let id = UserId::from_random(123_456_789).expect("unbiased");
        assert_eq!(id.as_str(), "00000123456789");
        assert_eq!(id.to_string(), "0000-0123-4567-89");
        assert_eq!(UserId::parse("0000-0123-4567-89"), Some(id.clone()));
        assert_eq!(UserId::parse("0000 0123 4567 89"), Some(id));
        assert_eq!(UserId::parse("123"), None);
        assert_eq!(UserId::parse("0000-0123-4567-8x"), None);
        assert!(UserId::from_random(u64::MAX).is_none());
        assert!((USER_ID_SPACE as f64).log2() >= 40.0);
    }
}
