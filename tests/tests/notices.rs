//! Security notices end to end (`[mail] notify`): the built otpd and
//! otpctl, a real SMTP server (aiosmtpd), the setup page's forms, pamtester
//! with a real /etc/pam.d service and oathtool as the phone. A notice goes
//! to the address recorded at issue, in the language recorded there, once
//! per event, and holds no code, secret, password or link; `notify = []`
//! sends none; a mail server that does not answer holds up no login.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use e2e::pamtester::{ended_with, AUTH_ERR, SUCCESS};
use e2e::{
    addressed_to, assert_notice_keeps_secrets, assert_success, describe, oathtool_code,
    require_root_and_peers, stdout, stdout_json, wait_for_fresh_step, EnvOptions, Issued, Mail,
    PamService, TestEnv,
};

/// Not a year: no date in a notice can show it.
const PASSWORD: &str = "8642";

/// `otpctl issue USER --email EMAIL --lang LANG --json --no-wait`.
fn issue_in(env: &TestEnv, user: &str, email: &str, lang: &str, replace: bool) -> Issued {
    let mut args = vec![
        "issue",
        user,
        "--email",
        email,
        "--lang",
        lang,
        "--json",
        "--no-wait",
    ];
    if replace {
        args.push("--replace");
    }
    let output = env.otpctl(&args, &format!("{PASSWORD}\n"));
    assert_success(&output, "otpctl issue");
    let json = stdout_json(&output);
    let field = |key: &str| json[key].as_str().unwrap_or_default().to_owned();
    Issued {
        user: user.to_owned(),
        email: email.to_owned(),
        user_id: field("user_id"),
        setup_url: field("setup_url"),
        json: json.clone(),
    }
}

/// `count` codes of six digits, none of them `secret`'s current one or
/// one another: wrong codes that each count.
fn wrong_codes(secret: &str, count: u8) -> Vec<String> {
    let right = oathtool_code(secret, 60);
    (1..=count)
        .map(|shift| {
            right
                .bytes()
                .map(|b| char::from(b'0' + (b - b'0' + shift) % 10))
                .collect()
        })
        .collect()
}

/// A mail's text with its line breaks and runs of spaces as one space.
fn words(mail: &Mail) -> String {
    mail.body.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The notices to `address`.
fn to(notices: &[Mail], address: &str) -> Vec<Mail> {
    notices
        .iter()
        .filter(|m| addressed_to(m, address))
        .cloned()
        .collect()
}

/// Waits a moment longer than otpd needs to send a notice, then returns
/// every notice: for "and no more than that".
fn settled(env: &TestEnv) -> Vec<Mail> {
    std::thread::sleep(Duration::from_secs(3));
    env.notices()
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn activation_through_the_page_is_told_in_the_language_of_the_issue() {
    require_root_and_peers();
    // The deployment speaks English; this token was issued in Japanese.
    let env = TestEnv::start_with(EnvOptions {
        language: Some("en"),
        ..EnvOptions::default()
    });
    let issued = issue_in(&env, "hanako", "hanako@example.jp", "ja", false);
    assert!(env.notices().is_empty(), "issuing is no notice");
    let secret = env.enrol_through_page(&issued, PASSWORD, "ja");

    let notices = env.wait_for_notices(1);
    assert_eq!(notices.len(), 1, "{notices:#?}");
    let notice = &notices[0];
    assert!(addressed_to(notice, "hanako@example.jp"), "{notice:#?}");
    assert!(
        notice.subject.contains("有効になりました"),
        "{}",
        notice.subject
    );
    assert!(notice.body.contains("hanako 様"), "{}", notice.body);
    assert!(notice.body.contains("TESTSVC"), "{}", notice.body);
    assert!(
        notice.body.contains("管理者へご連絡ください"),
        "{}",
        notice.body
    );
    assert!(
        notice
            .charsets
            .iter()
            .all(|c| c.eq_ignore_ascii_case("utf-8")),
        "{:?}",
        notice.charsets
    );
    let code = oathtool_code(&secret, 60);
    assert_notice_keeps_secrets(notice, &[&secret, PASSWORD, &code, &issued.user_id]);
    assert!(
        env.otpd_log()
            .contains("sent the activated notice for user=hanako"),
        "{}",
        env.otpd_log()
    );
    assert_eq!(settled(&env).len(), 1, "one activation, one notice");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_lock_through_pam_is_told_once() {
    require_root_and_peers();
    let env = TestEnv::start_with(EnvOptions {
        language: Some("en"),
        extra_toml: "\n[policy]\nmax_failures = 3\n".to_owned(),
        ..EnvOptions::default()
    });
    let secret = env.enrol_active("alice");
    // otpctl confirm sent the activation notice before it exited.
    assert_eq!(env.notices().len(), 1, "{:#?}", env.notices());

    let pam = PamService::new(&format!("socket={}", env.socket_path().display()), &[]);
    wait_for_fresh_step(60);
    let right = oathtool_code(&secret, 60);
    let tried = wrong_codes(&secret, 6);
    for wrong in &tried {
        let output = pam.authenticate("alice", &format!("{wrong}\n"));
        assert!(ended_with(&output, AUTH_ERR), "{}", describe(&output));
    }
    // Locked: the right code is refused too, and tells nobody again.
    let output = pam.authenticate("alice", &format!("{right}\n"));
    assert!(ended_with(&output, AUTH_ERR), "{}", describe(&output));

    let notices = env.wait_for_notices(2);
    let locked: Vec<&Mail> = notices
        .iter()
        .filter(|m| m.subject.contains("locked"))
        .collect();
    assert_eq!(locked.len(), 1, "{notices:#?}");
    let notice = locked[0];
    assert!(addressed_to(notice, "alice@example.jp"), "{notice:#?}");
    assert!(notice.body.contains("Hello alice"), "{}", notice.body);
    assert!(words(notice).contains("SSH, sudo"), "{}", notice.body);
    assert!(words(notice).contains("is locked until"), "{}", notice.body);
    let mut secrets: Vec<&str> = tried.iter().map(String::as_str).collect();
    secrets.extend([secret.as_str(), right.as_str(), PASSWORD]);
    assert_notice_keeps_secrets(notice, &secrets);
    let all = settled(&env);
    assert_eq!(all.len(), 2, "activated and one lock: {all:#?}");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_replaced_token_is_told_at_its_old_address_once_the_new_one_is_confirmed() {
    require_root_and_peers();
    let env = TestEnv::start_with(EnvOptions {
        language: Some("en"),
        ..EnvOptions::default()
    });
    let old_secret = env.enrol_active("alice");
    assert_eq!(to(&env.notices(), "alice@example.jp").len(), 1);

    let issued = issue_in(&env, "alice", "alice.new@example.com", "en", true);
    let token = env.activate_ok(&issued.user_id, PASSWORD);
    assert_eq!(
        settled(&env).len(),
        1,
        "the old token still works: nobody is told yet"
    );
    wait_for_fresh_step(60);
    let (status, body) = env.confirm_api(&issued.user_id, &oathtool_code(&token.secret, 60));
    assert_eq!(status, 200, "{body}");

    let notices = env.wait_for_notices(3);
    let old = to(&notices, "alice@example.jp");
    let new = to(&notices, "alice.new@example.com");
    assert_eq!(old.len(), 2, "activated, then replaced: {notices:#?}");
    assert_eq!(new.len(), 1, "the new token's activation: {notices:#?}");
    let replaced: Vec<&Mail> = old
        .iter()
        .filter(|m| m.subject.contains("replaced"))
        .collect();
    assert_eq!(replaced.len(), 1, "{old:#?}");
    assert!(
        words(replaced[0]).contains("stopped working at that moment"),
        "{}",
        replaced[0].body
    );
    assert!(new[0].subject.contains("active"), "{}", new[0].subject);
    for notice in old.iter().chain(&new) {
        assert_notice_keeps_secrets(notice, &[&old_secret, &token.secret, PASSWORD]);
    }
    assert_eq!(settled(&env).len(), 3);
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn notify_empty_sends_no_notice() {
    require_root_and_peers();
    let env = TestEnv::start_with(EnvOptions {
        extra_toml: "notify = []\n\n[policy]\nmax_failures = 3\nrecovery_codes = 2\n".to_owned(),
        ..EnvOptions::default()
    });
    // Confirmed through otpctl and through otpd's API.
    let secret = env.enrol_active("alice");
    let issued = env.issue("bob", "bob@example.jp", PASSWORD);
    let token = env.activate_ok(&issued.user_id, PASSWORD);
    wait_for_fresh_step(60);
    let (status, body) = env.confirm_api(&issued.user_id, &oathtool_code(&token.secret, 60));
    assert_eq!(status, 200, "{body}");
    let recovery = body["recovery_codes"][0].as_str().expect("a recovery code");
    assert!(env.otpctl_test("bob", recovery));
    let pam = PamService::new(&format!("socket={}", env.socket_path().display()), &[]);
    for wrong in wrong_codes(&secret, 4) {
        let output = pam.authenticate("alice", &format!("{wrong}\n"));
        assert!(ended_with(&output, AUTH_ERR), "{}", describe(&output));
    }
    let audit = env.audit("alice");
    assert!(
        audit.iter().any(|e| e["reason"] == "token locked"),
        "{audit:#?}"
    );
    let mails = {
        std::thread::sleep(Duration::from_secs(3));
        env.mails()
    };
    assert_eq!(mails.len(), 2, "the two setup mails only: {mails:#?}");
    assert!(env.notices().is_empty());
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_mail_server_that_does_not_answer_holds_up_no_login() {
    require_root_and_peers();
    let mut env = TestEnv::start_with(EnvOptions {
        extra_toml: "\n[policy]\nrecovery_codes = 3\n".to_owned(),
        ..EnvOptions::default()
    });
    env.enrol_active("alice");
    let output = env.otpctl(&["recovery-codes", "alice", "--json"], "");
    assert_success(&output, "otpctl recovery-codes");
    let codes: Vec<String> = stdout_json(&output)["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("a code").to_owned())
        .collect();
    // A new token, activated: otpctl confirms it below, with no mail
    // server at all.
    let issued = issue_in(&env, "alice", "alice.new@example.jp", "ja", true);
    let token = env.activate_ok(&issued.user_id, PASSWORD);

    // The mail server takes connections and never says a word: each send
    // waits for smtp_timeout_seconds (10 s here).
    env.stop_smtp();
    let silent = TcpListener::bind(("127.0.0.1", env.smtp_port)).expect("bind the SMTP port");
    let pam = PamService::new(&format!("socket={}", env.socket_path().display()), &[]);
    for code in &codes {
        let asked = Instant::now();
        let output = pam.authenticate("alice", &format!("{code}\n"));
        let took = asked.elapsed();
        assert!(ended_with(&output, SUCCESS), "{}", describe(&output));
        assert!(
            took < Duration::from_secs(3),
            "a login waited {took:?} for the mail server"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let failure = "cannot send the recovery_used notice for user=alice";
    while !env.otpd_log().contains(failure) {
        assert!(
            Instant::now() < deadline,
            "otpd did not log the failed notice:\n{}",
            env.otpd_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = env.otpd_log();
    for code in &codes {
        assert!(
            !log.contains(code.as_str()) && !log.contains(&code.replace('-', "")),
            "a recovery code in otpd's log"
        );
    }
    assert!(
        !log.contains("リカバリーコード"),
        "a mail's text in the log"
    );

    // otpctl with the mail server gone: the confirmation stands (exit 0,
    // the new token active), each notice it could not send a warning.
    drop(silent);
    let output = env.otpctl(
        &["confirm", "alice"],
        &format!("{}\n", oathtool_code(&token.secret, 60)),
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(env.show("alice")["email"], "alice.new@example.jp");
    let warned = e2e::stderr(&output);
    for event in ["replaced", "activated"] {
        assert!(
            warned.contains(&format!(
                "warning: cannot send the {event} notice for alice"
            )),
            "{}",
            describe(&output)
        );
    }
    assert!(!warned.contains(&token.secret), "{}", describe(&output));
    assert!(stdout(&output).contains("active"), "{}", describe(&output));
}
