//! Checks on what the programs print and answer: user IDs, codes and
//! passwords in text, secrets in JSON.

use std::process::Output;

use serde_json::Value;

use crate::process::{describe, said};

/// Asserts that a login (pamtester's `output`) asked for the code with
/// pam_otp's default prompt and did not echo the `code` typed.
pub fn assert_prompted_without_echo(output: &Output, code: &str) {
    assert!(
        said(output).contains("One-time password: "),
        "the prompt: {}",
        describe(output)
    );
    assert!(
        !said(output).contains(code),
        "the code was echoed: {}",
        describe(output)
    );
}

/// A user ID in groups of four digits joined by `sep`.
pub fn grouped(user_id: &str, sep: &str) -> String {
    user_id
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(sep)
}

/// Whether `text` shows the user ID, plain or in groups of four.
pub fn shows_user_id(text: &str, user_id: &str) -> bool {
    text.contains(user_id)
        || text.contains(&grouped(user_id, "-"))
        || text.contains(&grouped(user_id, " "))
}

/// Whether `digits` occurs in `text` as a run of digits of its own (not
/// inside a longer number), once the user ID's forms are taken out.
pub fn shows_digits(text: &str, digits: &str, user_id: &str) -> bool {
    let mut text = text.to_owned();
    for form in [
        grouped(user_id, "-"),
        grouped(user_id, " "),
        user_id.to_owned(),
    ] {
        text = text.replace(&form, " ");
    }
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(pos) = text[start..].find(digits) {
        let at = start + pos;
        let end = at + digits.len();
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(end).copied();
        if !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(|b| b.is_ascii_digit())
        {
            return true;
        }
        start = at + 1;
    }
    false
}

/// Panics if an HTTP answer carries a secret.
pub fn assert_no_secret(body: &Value, what: &str) {
    assert!(
        body.get("secret").is_none() && body.get("otpauth_uri").is_none(),
        "{what} must not carry a secret: {body}"
    );
    assert!(
        !body.to_string().contains("otpauth://"),
        "{what} must not carry a secret: {body}"
    );
}

/// The enrolments of `otpctl list --json`, whether it prints an array or
/// an object holding one.
pub fn enrolment_array(value: &Value) -> Vec<Value> {
    if let Some(items) = value.as_array() {
        return items.clone();
    }
    if let Some(object) = value.as_object() {
        if let Some(items) = object.values().find_map(|v| v.as_array()) {
            return items.clone();
        }
        if object.is_empty() {
            return Vec::new();
        }
    }
    panic!("otpctl list --json printed neither an array nor an object holding one: {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_runs() {
        let uid = "12345678432190";
        assert!(!shows_digits(
            "id 1234-5678-4321-90 and 543210",
            "4321",
            uid
        ));
        assert!(shows_digits("password: 4321.", "4321", uid));
        assert!(!shows_digits(&format!("uid={uid}"), "4321", uid));
    }
}
