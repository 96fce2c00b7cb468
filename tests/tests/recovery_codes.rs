//! Recovery codes end to end: handed out at confirmation (the JSON API,
//! `otpctl confirm`, the page in a real browser), each working once through
//! the real peers (pamtester with a real /etc/pam.d service, radclient,
//! `otpctl test`), replaced as a set by `otpctl recovery-codes`, audited as
//! `recovery`, never written to otpd's log or the audit trail; input that
//! only looks like one is a plain failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod browser_support;

use browser_support::Browser;
use e2e::pamtester::{ended_with, AUTH_ERR, SUCCESS};
use e2e::{
    addressed_to, assert_notice_keeps_secrets, assert_success, describe, oathtool_code,
    require_root_and_peers, stdout, stdout_json, wait_for_fresh_step, EnvOptions, Mail, PamService,
    TestEnv,
};
use serde_json::{json, Value};

const RADIUS_SECRET: &str = "e2e-recovery-secret";
/// `[policy] recovery_codes` of these tests: not the default, so the count
/// is seen to come from the configuration.
const COUNT: usize = 6;

/// otpd with `[policy] recovery_codes = COUNT` and RADIUS on a free
/// loopback port; the port comes back too.
fn recovery_env() -> (TestEnv, u16) {
    let port = e2e::free_port();
    let env = TestEnv::start_with(EnvOptions {
        extra_toml: format!(
            "\n[policy]\nrecovery_codes = {COUNT}\n{}",
            e2e::cluster::radius_toml(port, "nas", RADIUS_SECRET)
        ),
        ..EnvOptions::default()
    });
    (env, port)
}

/// Whether `code` has the shown form `12345-67890`.
fn shaped(code: &str) -> bool {
    code.len() == 11
        && code.bytes().enumerate().all(|(i, b)| {
            if i == 5 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// The codes of a JSON array, each checked for its shape.
fn codes_of(value: &Value) -> Vec<String> {
    let codes: Vec<String> = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array of codes: {value}"))
        .iter()
        .map(|c| c.as_str().expect("a string").to_owned())
        .collect();
    assert!(codes.iter().all(|c| shaped(c)), "{codes:?}");
    codes
}

/// The recovery codes in a text, in order.
fn codes_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter(|w| shaped(w))
        .map(str::to_owned)
        .collect()
}

/// Issues and activates `user`'s token through the API, then confirms it
/// there: the answer of the confirmation and the token's secret.
fn confirmed_through_api(env: &TestEnv, user: &str) -> (Value, String) {
    let issued = env.issue(user, &format!("{user}@example.jp"), "4321");
    let token = env.activate_ok(&issued.user_id, "4321");
    wait_for_fresh_step(60);
    let (status, answer) = env.confirm_api(&issued.user_id, &oathtool_code(&token.secret, 60));
    assert_eq!(status, 200, "{answer}");
    (answer, token.secret)
}

fn radclient(port: u16, user: &str, code: &str) -> Output {
    e2e::run_with_input(
        Command::new("radclient")
            .args(["-x", "-r", "1", "-t", "3"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["auth", RADIUS_SECRET]),
        &format!(
            "User-Name = \"{user}\"\nUser-Password = \"{code}\"\nMessage-Authenticator = 0x00\n"
        ),
    )
}

fn radius_says(output: &Output, answer: &str) -> bool {
    stdout(output).contains(answer)
}

/// Asserts that no code of `codes`, with or without its hyphen, appears
/// in otpd's log or the audit trail.
fn assert_nowhere(env: &TestEnv, codes: &[String]) {
    let log = env.otpd_log();
    let audit = env.otpctl(&["audit", "--json"], "");
    assert_success(&audit, "otpctl audit");
    let trail = stdout(&audit);
    for code in codes {
        let bare = code.replace('-', "");
        for (name, text) in [("otpd's log", &log), ("the audit trail", &trail)] {
            assert!(
                !text.contains(code.as_str()) && !text.contains(&bare),
                "a recovery code in {name}"
            );
        }
    }
}

/// The security notices of the four recovery codes used first (two
/// through PAM, one through RADIUS, one by `otpctl test` over otpd's
/// socket): one each, to the token's address, in Japanese (the
/// deployment's language at issue), each with the codes left then and
/// the channel, none with a code.
fn assert_recovery_notices(env: &TestEnv, codes: &[String]) {
    let notices = env.wait_for_notices(5);
    let used: Vec<&Mail> = notices
        .iter()
        .filter(|m| m.subject.contains("リカバリーコードが使用されました"))
        .collect();
    assert_eq!(used.len(), 4, "{notices:#?}");
    let mut left: Vec<usize> = used
        .iter()
        .map(|m| {
            assert!(addressed_to(m, "alice@example.jp"), "{m:#?}");
            let shown: Vec<&str> = codes.iter().map(String::as_str).collect();
            assert_notice_keeps_secrets(m, &shown);
            (0..COUNT)
                .find(|n| m.body.contains(&format!("残りのリカバリーコード：{n} 個")))
                .unwrap_or_else(|| panic!("no count of codes left:\n{}", m.body))
        })
        .collect();
    left.sort_unstable();
    assert_eq!(left, [COUNT - 4, COUNT - 3, COUNT - 2, COUNT - 1]);
    let through = |words: &str| used.iter().filter(|m| m.body.contains(words)).count();
    assert_eq!(through("（RADIUS）"), 1, "{used:#?}");
    assert_eq!(through("SSH、sudo"), 3, "{used:#?}");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn recovery_codes_work_once_through_pam_radius_and_otpctl_test() {
    require_root_and_peers();
    let (env, port) = recovery_env();
    let (answer, _secret) = confirmed_through_api(&env, "alice");
    assert_eq!(answer["state"], "active", "{answer}");
    let codes = codes_of(&answer["recovery_codes"]);
    assert_eq!(codes.len(), COUNT);
    assert_eq!(env.show("alice")["recovery_codes_left"], COUNT);

    let pam = PamService::new(&format!("socket={}", env.socket_path().display()), &[]);
    let login = |input: &str| pam.authenticate("alice", &format!("{input}\n"));
    let output = login(&codes[0]);
    assert!(ended_with(&output, SUCCESS), "{}", describe(&output));
    let output = login(&codes[0]);
    assert!(ended_with(&output, AUTH_ERR), "{}", describe(&output));
    // Without the hyphen, with spaces around it.
    let output = login(&format!("  {}  ", codes[1].replace('-', "")));
    assert!(ended_with(&output, SUCCESS), "{}", describe(&output));

    let output = radclient(port, "alice", &codes[2]);
    assert!(
        radius_says(&output, "Access-Accept"),
        "{}",
        describe(&output)
    );
    let output = radclient(port, "alice", &codes[2]);
    assert!(
        radius_says(&output, "Access-Reject"),
        "{}",
        describe(&output)
    );

    assert!(env.otpctl_test("alice", &codes[3]));
    assert!(!env.otpctl_test("alice", &codes[3]));
    assert_eq!(env.show("alice")["recovery_codes_left"], COUNT - 4);
    assert_recovery_notices(&env, &codes);

    // A new set: the old codes stop working, the new ones work.
    let output = env.otpctl(&["recovery-codes", "alice", "--json"], "");
    assert_success(&output, "otpctl recovery-codes");
    let new = codes_of(&stdout_json(&output)["recovery_codes"]);
    assert_eq!(new.len(), COUNT);
    assert!(!env.otpctl_test("alice", &codes[4]));
    let output = login(&new[0]);
    assert!(ended_with(&output, SUCCESS), "{}", describe(&output));
    assert_eq!(env.show("alice")["recovery_codes_left"], COUNT - 1);
    let printed = env.otpctl(&["recovery-codes", "alice"], "");
    assert_success(&printed, "otpctl recovery-codes");
    let printed_codes = codes_in(&stdout(&printed));
    assert_eq!(printed_codes.len(), COUNT, "{}", describe(&printed));
    assert!(!env.otpctl_test("alice", &new[1]));
    assert!(env.otpctl_test("alice", &printed_codes[5]));

    // Input that only looks like a recovery code is a plain failure.
    assert_success(&env.otpctl(&["unlock", "alice"], ""), "otpctl unlock");
    for bad in [
        "12345-6789",
        "12345-678901",
        "1234a-67890",
        "12345--6789",
        "12-345-6789",
    ] {
        assert!(!env.otpctl_test("alice", bad), "{bad}");
    }
    assert_success(&env.otpctl(&["unlock", "alice"], ""), "otpctl unlock");
    let output = radclient(port, "alice", "abcde-fghij");
    assert!(
        radius_says(&output, "Access-Reject"),
        "{}",
        describe(&output)
    );
    assert!(
        env.otpctl_test("alice", &printed_codes[4]),
        "{}",
        env.otpd_log()
    );

    let audit = env.audit("alice");
    let recovered: Vec<&Value> = audit.iter().filter(|e| e["result"] == "recovery").collect();
    assert_eq!(recovered.len(), 7, "{audit:#?}");
    let channels: Vec<&str> = recovered
        .iter()
        .map(|e| e["channel"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        channels,
        ["pam", "pam", "radius", "pam", "pam", "pam", "pam"],
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["reason"] == "wrong or used recovery code" && e["result"] == "fail"),
        "{audit:#?}"
    );
    let all: Vec<String> = codes
        .iter()
        .chain(&new)
        .chain(&printed_codes)
        .cloned()
        .collect();
    assert_nowhere(&env, &all);
    // otpd still answers.
    assert_eq!(env.socket_request(&json!({"op": "status"}))["result"], "ok");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn otpctl_confirm_prints_the_codes_and_revoke_takes_them() {
    require_root_and_peers();
    let (env, _port) = recovery_env();
    let issued = env.issue("bob", "bob@example.jp", "4321");
    let token = env.activate_ok(&issued.user_id, "4321");
    wait_for_fresh_step(60);
    let output = env.otpctl(
        &["confirm", "bob"],
        &format!("{}\n", oathtool_code(&token.secret, 60)),
    );
    assert_success(&output, "otpctl confirm");
    let text = stdout(&output);
    assert!(text.contains("Token of bob is active."), "{text}");
    assert!(text.contains("Recovery codes"), "{text}");
    let codes = codes_in(&text);
    assert_eq!(codes.len(), COUNT, "{text}");
    let shown = env.otpctl(&["show", "bob"], "");
    assert!(
        stdout(&shown).contains(&format!("Recovery codes left: {COUNT}")),
        "{}",
        describe(&shown)
    );

    // The JSON form carries them as the API does.
    let secret = env.enrol_active("carol");
    assert!(!secret.is_empty());
    assert_eq!(env.show("carol")["recovery_codes_left"], COUNT);

    assert_success(&env.otpctl(&["revoke", "bob"], ""), "otpctl revoke");
    assert!(!env.otpctl_test("bob", &codes[0]));
    assert_nowhere(&env, &codes);
}

/// Waits until the page's text satisfies `ready`; the text.
fn wait_for_text(browser: &Browser, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = browser.text();
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn the_page_shows_the_codes_once_in_japanese_and_english() {
    require_root_and_peers();
    let (env, _port) = recovery_env();
    for (lang, user, heading) in [
        ("ja", "hanako", "リカバリーコード"),
        ("en", "henry", "Recovery codes"),
    ] {
        let issued = env.issue(user, &format!("{user}@example.jp"), "4321");
        let browser = Browser::start(lang);
        browser.open(&issued.setup_url);
        browser.script(
            "document.querySelector('[name=activation_password]').value = '4321';\
             document.querySelector('[name=activation_password]').form.submit();",
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let secret = loop {
            let html = browser
                .script("return document.documentElement.outerHTML;")
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(at) = html.find("secret=") {
                let rest = &html[at + 7..];
                let end = rest.find(['&', '"']).unwrap_or(rest.len());
                break rest[..end].to_owned();
            }
            assert!(Instant::now() < deadline, "{lang}: no token page:\n{html}");
            std::thread::sleep(Duration::from_millis(200));
        };
        wait_for_fresh_step(60);
        let code = oathtool_code(&secret, 60);
        browser.script(&format!(
            "document.querySelector('[name=otp]').value = '{code}';\
             document.querySelector('[name=otp]').form.submit();"
        ));
        let text = wait_for_text(&browser, "recovery codes", |t| t.contains(heading));
        let codes = codes_in(&text);
        assert_eq!(codes.len(), COUNT, "{lang}:\n{text}");
        browser.check_fits(&format!("recovery-codes-{lang}"));
        browser.script("document.querySelector('section.recovery').scrollIntoView();");
        browser.check_fits(&format!("recovery-codes-list-{lang}"));
        browser.session_call(
            "POST",
            "goog/cdp/execute",
            &json!({"cmd": "Emulation.setEmulatedMedia", "params": {"media": "print"}}),
        );
        browser.check_fits(&format!("recovery-codes-print-{lang}"));
        browser.session_call(
            "POST",
            "goog/cdp/execute",
            &json!({"cmd": "Emulation.setEmulatedMedia", "params": {"media": ""}}),
        );

        // Neither a reload nor going back shows them again.
        browser.session_call("POST", "refresh", &json!({}));
        std::thread::sleep(Duration::from_millis(500));
        let again = browser.text();
        assert!(
            codes.iter().all(|c| !again.contains(c.as_str())),
            "{lang} reload:\n{again}"
        );
        browser.session_call("POST", "back", &json!({}));
        std::thread::sleep(Duration::from_millis(500));
        let back = browser.text();
        assert!(
            codes.iter().all(|c| !back.contains(c.as_str())),
            "{lang} back:\n{back}"
        );

        // The codes shown are the token's.
        assert!(env.otpctl_test(user, &codes[COUNT - 1]));
        assert_eq!(env.show(user)["recovery_codes_left"], COUNT - 1);
        assert_nowhere(&env, &codes);
    }
}
