//! Enrolment end to end: `otpctl issue` mails the setup
//! link through a real SMTP server, the JSON API activates, oathtool plays
//! the phone, and `otpctl confirm` or the API confirms.
//!
//! Each test starts its own daemon and SMTP server, so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::{
    assert_no_secret, assert_success, describe, oathtool_code, require_root_and_peers,
    shows_digits, stderr, stdout_json, wait_for_fresh_step, wrong_code, EnvOptions, TestEnv,
    SERVICE_ID,
};
use serde_json::{json, Value};

const PASSWORD: &str = "4321";
const WRONG_PASSWORD: &str = "9999";

/// Checks, once the secret is known, that the setup mail carries neither
/// the activation password nor the secret.
fn assert_mail_keeps_secrets(env: &TestEnv, user_id: &str, secret: &str) {
    let mails = env.setup_mails();
    assert_eq!(mails.len(), 1, "one setup mail expected: {mails:#?}");
    let mail = &mails[0];
    let plain_secret = e2e::normalize_base32(secret)
        .trim_end_matches('=')
        .to_owned();
    for text in [mail.subject.as_str(), mail.body.as_str(), mail.raw.as_str()] {
        assert!(
            !shows_digits(text, PASSWORD, user_id),
            "the setup mail shows the activation password:\n{text}"
        );
        let squeezed: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect::<String>()
            .to_ascii_uppercase();
        assert!(
            !squeezed.contains(&plain_secret),
            "the setup mail carries the secret:\n{text}"
        );
    }
}

fn state(show: &Value) -> &str {
    show["state"].as_str().unwrap_or_default()
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn issue_activate_and_confirm_with_otpctl() {
    require_root_and_peers();
    let env = TestEnv::start();
    let issued = env.issue("alice", "alice@example.jp", PASSWORD);
    env.setup_mail(&issued);
    assert_eq!(state(&env.show("alice")), "issued");

    let (status, body) = env.activate(&issued.user_id, WRONG_PASSWORD);
    assert_eq!(status, 401, "wrong activation password: {body}");
    assert_eq!(body["attempts_left"], 4, "{body}");
    assert!(body["error"].is_string(), "401 without error: {body}");
    assert_no_secret(&body, "a 401");

    let token = env.activate_ok(&issued.user_id, PASSWORD);
    assert_eq!(state(&env.show("alice")), "activated");

    let (status, body) = env.activate(&issued.user_id, PASSWORD);
    assert_eq!(status, 410, "second activation must be refused: {body}");
    assert_no_secret(&body, "a second activation");

    assert_mail_keeps_secrets(&env, &issued.user_id, &token.secret);

    wait_for_fresh_step(60);
    let code = oathtool_code(&token.secret, 60);
    let output = env.otpctl(&["confirm", "alice", "--json"], &format!("{code}\n"));
    assert_success(&output, "otpctl confirm with oathtool's 60-second code");
    let confirmed = stdout_json(&output);
    assert_eq!(confirmed["user"], "alice", "{confirmed}");
    assert_eq!(confirmed["state"], "active", "{confirmed}");
    assert_eq!(confirmed["period"], 60, "{confirmed}");
    assert_eq!(confirmed["adapted"], false, "{confirmed}");

    let show = env.show("alice");
    assert_eq!(state(&show), "active", "{show}");
    assert_eq!(show["period"], 60, "{show}");
    assert_eq!(show["service_id"], SERVICE_ID, "{show}");
    assert_eq!(show["user_id"], issued.user_id.as_str(), "{show}");
    assert_eq!(show["email"], "alice@example.jp", "{show}");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn issue_activate_and_confirm_with_the_api() {
    require_root_and_peers();
    let env = TestEnv::start_with(EnvOptions {
        language: Some("en"),
        ..EnvOptions::default()
    });
    let issued = env.issue("bob", "bob.smith+otp@example.com", PASSWORD);
    env.setup_mail(&issued);

    let (status, body) = env.confirm_api(&issued.user_id, "123456");
    assert_eq!(status, 410, "confirmation before activation: {body}");

    let token = env.activate_ok(&issued.user_id, PASSWORD);
    assert_mail_keeps_secrets(&env, &issued.user_id, &token.secret);

    wait_for_fresh_step(60);
    let (status, body) = env.confirm_api(&issued.user_id, &wrong_code(&token.secret));
    assert_eq!(status, 401, "wrong code: {body}");
    assert!(body["error"].is_string(), "401 without error: {body}");
    assert_eq!(state(&env.show("bob")), "activated");

    wait_for_fresh_step(60);
    let code = oathtool_code(&token.secret, 60);
    let (status, body) = env.confirm_api(&issued.user_id, &code);
    assert_eq!(status, 200, "right code: {body}");
    assert_eq!(body["state"], "active", "{body}");
    assert_eq!(body["period"], 60, "{body}");
    assert_eq!(body["adapted"], false, "{body}");
    assert_no_secret(&body, "a confirmation");

    let (status, body) = env.confirm_api(&issued.user_id, &code);
    assert_eq!(status, 410, "second confirmation: {body}");
    assert_eq!(state(&env.show("bob")), "active");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn confirm_adapts_to_an_app_with_30_second_codes() {
    require_root_and_peers();
    let env = TestEnv::start();
    let issued = env.issue("carol", "carol@example.jp", "12345678");
    let token = env.activate_ok(&issued.user_id, "12345678");

    wait_for_fresh_step(30);
    let code30 = oathtool_code(&token.secret, 30);
    assert_ne!(
        code30,
        oathtool_code(&token.secret, 60),
        "the 30- and 60-second codes collide by chance; rerun"
    );
    let output = env.otpctl(&["confirm", "carol", "--json"], &format!("{code30}\n"));
    assert_success(&output, "otpctl confirm with a 30-second code");
    let confirmed = stdout_json(&output);
    assert_eq!(confirmed["state"], "active", "{confirmed}");
    assert_eq!(confirmed["period"], 30, "{confirmed}");
    assert_eq!(confirmed["adapted"], true, "{confirmed}");
    let show = env.show("carol");
    assert_eq!(state(&show), "active", "{show}");
    assert_eq!(show["period"], 30, "{show}");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn issue_refuses_each_broken_input_rule() {
    require_root_and_peers();
    let env = TestEnv::start();
    let long = format!("{}@example.jp", "a".repeat(65 - "@example.jp".len()));
    assert_eq!(long.len(), 65);
    // (address, password, what the message must name: any of these, case-insensitively)
    let cases: Vec<(String, &str, &[&str])> = vec![
        ("a@b".into(), PASSWORD, &["4 to 64"]),
        (long, PASSWORD, &["4 to 64"]),
        (
            "alicé@example.jp".into(),
            PASSWORD,
            &["ascii", "half-width"],
        ),
        (
            "ａlice@example.jp".into(),
            PASSWORD,
            &["ascii", "half-width"],
        ),
        ("alice smith@example.jp".into(), PASSWORD, &["space"]),
        (
            "alice\t@example.jp".into(),
            PASSWORD,
            &["ascii", "control", "space"],
        ),
        ("alice.example.jp".into(), PASSWORD, &["local@domain", "@"]),
        ("alice@example.jp".into(), "123", &["4 to 8"]),
        ("alice@example.jp".into(), "123456789", &["4 to 8"]),
        (
            "alice@example.jp".into(),
            "12ab",
            &["0-9", "digits only", "only digits"],
        ),
        (
            "alice@example.jp".into(),
            "１２３４",
            &["0-9", "digits only", "only digits"],
        ),
    ];
    for (email, password, names) in &cases {
        let output = env.otpctl(
            &["issue", "alice", "--email", email, "--json", "--no-wait"],
            &format!("{password}\n"),
        );
        assert_eq!(
            output.status.code(),
            Some(1),
            "issue with email {email:?} and password {password:?} must be refused: {}",
            describe(&output)
        );
        let message = stderr(&output).to_lowercase();
        assert!(
            names.iter().any(|n| message.contains(n)),
            "the message for {email:?}/{password:?} must name the rule ({names:?}): {}",
            describe(&output)
        );
    }
    let listed = env.list();
    assert!(
        listed.is_empty(),
        "refused issues must store nothing: {listed:?}"
    );
    let mails = env.mails();
    assert!(
        mails.is_empty(),
        "refused issues must mail nothing: {mails:#?}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn five_wrong_activation_passwords_invalidate() {
    require_root_and_peers();
    let env = TestEnv::start();
    let issued = env.issue("dave", "dave@example.jp", PASSWORD);
    for left in (1..=4).rev() {
        let (status, body) = env.activate(&issued.user_id, WRONG_PASSWORD);
        assert_eq!(status, 401, "wrong password: {body}");
        assert_eq!(body["attempts_left"], left, "{body}");
    }
    let (status, body) = env.activate(&issued.user_id, WRONG_PASSWORD);
    assert!(
        status == 410 || (status == 401 && body["attempts_left"] == 0),
        "fifth wrong password must invalidate: {status} {body}"
    );
    let text = body.to_string().to_lowercase();
    assert!(
        text.contains("invalidated") || text.contains("too many"),
        "the fifth answer must say the enrolment is invalidated: {body}"
    );
    assert_no_secret(&body, "the fifth wrong password");

    let (status, body) = env.activate(&issued.user_id, PASSWORD);
    assert_eq!(status, 410, "right password after invalidation: {body}");
    assert_no_secret(&body, "an invalidated enrolment");
    assert_eq!(state(&env.show("dave")), "invalidated");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn expired_link_gives_no_secret() {
    require_root_and_peers();
    let env = TestEnv::start();
    let issued = env.issue("erin", "erin@example.jp", PASSWORD);
    env.sqlite("UPDATE enrolments SET expires_at = 0;");
    let (status, body) = env.activate(&issued.user_id, PASSWORD);
    assert_eq!(status, 410, "activation of an expired link: {body}");
    assert_no_secret(&body, "an expired link");
    assert!(
        body.to_string().to_lowercase().contains("expire"),
        "the answer must say the link expired: {body}"
    );
    assert_ne!(state(&env.show("erin")), "activated");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn smtp_down_leaves_no_usable_enrolment() {
    require_root_and_peers();
    let env = TestEnv::start_with(EnvOptions {
        smtp: false,
        ..EnvOptions::default()
    });
    let output = env.otpctl(
        &[
            "issue",
            "frank",
            "--email",
            "frank@example.jp",
            "--json",
            "--no-wait",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let message = stderr(&output).to_lowercase();
    assert!(
        message.contains("cannot send the setup mail"),
        "stderr must report the SMTP failure: {}",
        describe(&output)
    );
    let usable: Vec<Value> = env
        .list()
        .into_iter()
        .filter(|e| {
            e["user"] == "frank"
                && matches!(
                    e["state"].as_str(),
                    Some("issued") | Some("activated") | Some("active")
                )
        })
        .collect();
    assert!(
        usable.is_empty(),
        "no usable enrolment may remain: {usable:?}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn unknown_ids_and_malformed_requests() {
    require_root_and_peers();
    let env = TestEnv::start();
    let issued = env.issue("grace", "grace@example.jp", PASSWORD);
    let unknown_user = if issued.user_id == "00000000000000" {
        "11111111111111"
    } else {
        "00000000000000"
    };
    for (service_id, user_id) in [
        (SERVICE_ID, unknown_user),
        ("NOSUCHSVC", issued.user_id.as_str()),
    ] {
        let (status, body) = env.http_post_json(
            "/api/v1/activate",
            &json!({"service_id": service_id, "user_id": user_id, "activation_password": PASSWORD}),
        );
        assert_eq!(status, 401, "unknown ids {service_id}/{user_id}: {body}");
        assert!(body["error"].is_string(), "401 without error: {body}");
        assert!(
            body.get("attempts_left").is_none(),
            "unknown ids must not get an attempts count: {body}"
        );
        assert_no_secret(&body, "unknown ids");
    }

    let malformed: [&[u8]; 5] = [
        br#"{"service_id":"#,
        b"not json",
        br#"{"service_id":"TESTSVC"}"#,
        br#"{"service_id":"TESTSVC","user_id":12345678901234,"activation_password":4321}"#,
        b"[]",
    ];
    for body in malformed {
        let (status, text) = env.http_post_raw("/api/v1/activate", "application/json", body);
        assert_eq!(
            status,
            400,
            "activate with {:?}: {text}",
            String::from_utf8_lossy(body)
        );
    }
    for body in [
        &br#"{"otp":"#[..],
        br#"{"service_id":"TESTSVC","user_id":"1"}"#,
    ] {
        let (status, text) = env.http_post_raw("/api/v1/confirm", "application/json", body);
        assert_eq!(
            status,
            400,
            "confirm with {:?}: {text}",
            String::from_utf8_lossy(body)
        );
    }

    let (status, text) = env.http_get("/healthz");
    assert_eq!(status, 200, "daemon unhealthy after bad input: {text}");
    // Neither unknown ids nor malformed requests used up grace's attempts.
    let (status, body) = env.activate(&issued.user_id, WRONG_PASSWORD);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["attempts_left"], 4, "{body}");
    assert_eq!(state(&env.show("grace")), "issued");
}
