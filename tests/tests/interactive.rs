//! `otpctl issue` on a real pseudo-terminal, driven by expect(1) as an
//! administrator would type: the mail address twice, the activation password
//! twice without echo, then the confirmation prompt.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use e2e::{otpctl_bin, require_root_and_peers, shows_digits, TestEnv};

/// Runs tests/expect/issue.exp; exit status and everything the terminal showed.
fn drive(env: &TestEnv, user: &str, email: &str, second: &str, password: &str) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("expect/issue.exp");
    let transcript = env.root().join(format!("{user}.transcript"));
    let output = Command::new("expect")
        .arg("-f")
        .arg(&script)
        .arg(otpctl_bin())
        .arg(&env.config)
        .args([user, email, second, password])
        .env("TRANSCRIPT", &transcript)
        .output()
        .expect("expect(1) runs (Debian package expect)");
    let text = std::fs::read_to_string(&transcript).unwrap_or_default();
    let code = output.status.code().unwrap_or(-1);
    assert_ne!(code, 3, "a prompt never came:\n{text}");
    (code, text)
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn mismatched_second_mail_address_is_refused() {
    require_root_and_peers();
    let env = TestEnv::start();
    let (code, text) = drive(&env, "bob", "bob@example.jp", "bob@example.org", "8642");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("the two mail addresses do not match"),
        "{text}"
    );
    assert!(
        !text.contains("Activation password"),
        "asked on after a mismatch:\n{text}"
    );
    assert!(env.list().is_empty(), "a refused issue stored something");
    assert!(env.mails().is_empty(), "a refused issue sent mail");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn interactive_issue_hides_the_password_and_waits_for_confirmation() {
    require_root_and_peers();
    let env = TestEnv::start();
    let (code, text) = drive(
        &env,
        "carol",
        "carol@example.jp",
        "carol@example.jp",
        "8642",
    );
    assert_eq!(code, 0, "{text}");
    let show = env.show("carol");
    let user_id = show["user_id"].as_str().expect("user_id").to_owned();
    assert!(
        !shows_digits(&text, "8642", &user_id),
        "the activation password was echoed:\n{text}"
    );
    for expected in [
        "Service ID: TESTSVC",
        "User ID:",
        "Setup URL:",
        "Not confirmed yet",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert_eq!(show["state"], "issued");
    assert_eq!(env.wait_for_mails(1).len(), 1);
}
