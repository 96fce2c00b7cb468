//! Self-service end to end: real unprivileged users (useradd, userdel on
//! drop) run `otpctl enrol` against otpd's `[self_service]` socket, without
//! a terminal and on a pseudo-terminal driven by expect(1); the setup mail
//! arrives at aiosmtpd, the phone (oathtool) activates on the setup page,
//! the first code confirms, and the user logs in through pamtester and a
//! real sshd. Requests that name another user, users outside
//! `allowed_groups`, replacing an active token, and garbage, oversized
//! lines and slow clients on the socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod login_support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{
    addressed_to, assert_success, describe, now_unix, oathtool_code_at, otpctl_bin, pamtester,
    require_root_and_peers, run_with_input, shows_digits, stderr, stdout, stdout_json,
    wait_for_fresh_step, EnvOptions, Issued, PamService, TestEnv, SYSTEM_PYTHON,
};
use login_support::{logged_in, require_login_peers, Phone, Sshd, TestUser};
use serde_json::{json, Value};

/// The activation password every test user chooses.
const PASSWORD: &str = "2468";

/// otpd with a `[self_service]` table holding `lines`.
fn env_with(lines: &str) -> TestEnv {
    TestEnv::start_with(EnvOptions {
        self_service: Some(lines.to_owned()),
        ..EnvOptions::default()
    })
}

/// `otpctl enrol --socket SOCKET ARGS` run as `user` (runuser), with
/// `input` on its standard input (not a terminal).
fn enrol_as(env: &TestEnv, user: &TestUser, args: &[&str], input: &str) -> Output {
    run_with_input(
        Command::new("runuser")
            .args(["-u", &user.name, "--"])
            .arg(otpctl_bin())
            .arg("enrol")
            .arg("--socket")
            .arg(env.self_socket_path())
            .args(args),
        input,
    )
}

/// Sends `bytes` to the socket at `path` as `user` (python3 run with
/// runuser) and returns up to `count` answer lines, fewer when otpd hangs
/// up.
fn raw_as(user: &TestUser, path: &Path, bytes: &[u8], count: usize) -> Vec<Value> {
    const SEND: &str = r#"
import socket, sys
path, count = sys.argv[1], int(sys.argv[2])
data = sys.stdin.buffer.read()
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(path)
s.sendall(data)
f = s.makefile("rb")
for _ in range(count):
    line = f.readline()
    if not line:
        break
    sys.stdout.buffer.write(line)
"#;
    let output = run_with_input(
        Command::new("runuser")
            .args(["-u", &user.name, "--", SYSTEM_PYTHON, "-c", SEND])
            .arg(path)
            .arg(count.to_string()),
        // Bytes that are not UTF-8 go through as they are.
        &String::from_utf8_lossy(bytes),
    );
    assert_success(&output, "python3 as the test user");
    stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// `otpctl enrol --email EMAIL --json --no-wait` as `user` with the
/// activation password on stdin and `extra` arguments; checks the answer
/// and that no output shows the password.
fn enrol_issued(env: &TestEnv, user: &TestUser, email: &str, extra: &[&str]) -> Issued {
    let mut args = vec!["--email", email, "--json", "--no-wait"];
    args.extend_from_slice(extra);
    let output = enrol_as(env, user, &args, &format!("{PASSWORD}\n"));
    assert_success(&output, "otpctl enrol");
    let json = stdout_json(&output);
    assert_eq!(json["user"], user.name.as_str(), "{json}");
    assert_eq!(json["email"], email, "{json}");
    assert_eq!(json["state"], "issued", "{json}");
    let user_id = json["user_id"].as_str().expect("user_id").to_owned();
    let setup_url = json["setup_url"].as_str().expect("setup_url").to_owned();
    assert_eq!(
        setup_url,
        format!(
            "{}/setup?sid={}&uid={user_id}",
            env.public_url(),
            e2e::SERVICE_ID
        )
    );
    for text in [stdout(&output), stderr(&output)] {
        assert!(
            !shows_digits(&text, PASSWORD, &user_id),
            "the activation password was shown: {}",
            describe(&output)
        );
    }
    Issued {
        user: user.name.clone(),
        email: email.to_owned(),
        user_id,
        setup_url,
        json,
    }
}

/// Activates `issued` on the setup page and confirms it with `otpctl enrol
/// --confirm --json` as `user`, with the previous step's code (so the
/// current step's code stays unused). The secret and the recovery codes.
fn activate_and_confirm(env: &TestEnv, user: &TestUser, issued: &Issued) -> (String, Vec<String>) {
    let token = env.activate_ok(&issued.user_id, PASSWORD);
    wait_for_fresh_step(60);
    let previous = oathtool_code_at(&token.secret, 60, now_unix().saturating_sub(60));
    let output = enrol_as(
        env,
        user,
        &["--confirm", "--json"],
        &format!("{previous}\n"),
    );
    assert_success(&output, "otpctl enrol --confirm");
    let json = stdout_json(&output);
    assert_eq!(json["state"], "active", "{json}");
    assert_eq!(json["user"], user.name.as_str(), "{json}");
    let codes: Vec<String> = json["recovery_codes"]
        .as_array()
        .expect("recovery_codes")
        .iter()
        .map(|c| c.as_str().expect("a code").to_owned())
        .collect();
    assert_eq!(codes.len(), 10, "{json}");
    (token.secret, codes)
}

/// The first token of `user` (mail `USER@example.jp`): enrolled without a
/// terminal, its setup mail checked, activated and confirmed. The
/// enrolment, the secret and the recovery codes.
fn first_token(env: &TestEnv, user: &TestUser) -> (Issued, String, Vec<String>) {
    let email = format!("{}@example.jp", user.name);
    let issued = enrol_issued(env, user, &email, &[]);
    env.setup_mail(&issued);
    let (secret, recovery) = activate_and_confirm(env, user, &issued);
    (issued, secret, recovery)
}

/// A PAM service with pam_otp asking otpd's PAM socket.
fn pam(env: &TestEnv) -> PamService {
    PamService::new(&format!("socket={}", env.socket_path().display()), &[])
}

fn logs_in(env: &TestEnv, pam: &PamService, user: &TestUser, code: &str) -> bool {
    let output = pam.authenticate(&user.name, &format!("{code}\n"));
    let ok = pamtester::ended_with(&output, pamtester::SUCCESS);
    assert!(
        ok || pamtester::ended_with(&output, pamtester::AUTH_ERR),
        "pamtester neither succeeded nor failed cleanly: {}\n{}",
        describe(&output),
        env.otpd_log()
    );
    ok
}

/// Entries of the audit trail of `user` on the self-service channel.
fn self_entries(env: &TestEnv, user: &str) -> Vec<Value> {
    env.audit(user)
        .into_iter()
        .filter(|e| e["channel"] == "self")
        .collect()
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_user_enrols_without_a_terminal_and_logs_in() {
    require_root_and_peers();
    require_login_peers();
    let user = TestUser::create();
    let env = env_with("");
    let (_, secret, recovery) = first_token(&env, &user);
    assert_eq!(env.show(&user.name)["state"], "active");
    // The security notice of a token confirmed through self-service.
    let notices = env.wait_for_notices(1);
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert!(addressed_to(
        &notices[0],
        &format!("{}@example.jp", user.name)
    ));
    assert!(env
        .otpd_log()
        .contains(&format!("sent the activated notice for user={}", user.name)));

    let pam = pam(&env);
    let mut phone = Phone::new(&secret);
    assert!(logs_in(&env, &pam, &user, &phone.next_code()));
    assert!(logs_in(&env, &pam, &user, &recovery[0]));
    assert!(!logs_in(&env, &pam, &user, &recovery[0]), "a spent code");

    let entries = self_entries(&env, &user.name);
    let reasons: Vec<&str> = entries
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default())
        .collect();
    for expected in [
        "issued user ID",
        "first code confirmed, token active",
        "10 recovery codes issued",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no {expected:?} in the self-service audit: {entries:#?}"
        );
    }
    assert!(entries.iter().all(|e| e["peer"]
        .as_str()
        .unwrap_or_default()
        .contains(&format!("uid={}", user.uid))));
}

/// Runs tests/expect/enrol.exp as `user`, typing `current` when asked for
/// a code of the active token; the phone activates once the setup mail is
/// there and hands the first code over. Exit status, the transcript and
/// the new token's secret.
fn enrol_on_a_terminal(
    env: &TestEnv,
    user: &TestUser,
    email: &str,
    current: Option<&str>,
) -> (i32, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("expect/enrol.exp");
    let transcript = env.root().join(format!("{}.transcript", user.name));
    let code_file = env.root().join("first-code");
    let mut dialogue = Command::new("expect")
        .arg("-f")
        .arg(&script)
        .arg(otpctl_bin())
        .arg(env.self_socket_path())
        .args([&user.name, email, PASSWORD])
        .arg(&code_file)
        .arg(current.unwrap_or("-"))
        .env("TRANSCRIPT", &transcript)
        .stdout(Stdio::null())
        .spawn()
        .expect("expect(1) runs (Debian package expect)");
    // The phone: the setup mail, the page, the app's code.
    let mails = env.setup_mails().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.setup_mails().len() == mails {
        if let Some(status) = dialogue.try_wait().expect("try_wait") {
            panic!(
                "the dialogue ended ({status}) before a mail came:\n{}",
                std::fs::read_to_string(&transcript).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no setup mail within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let user_id = env.sqlite(&format!(
        "SELECT user_id FROM enrolments WHERE user = '{}' AND state = 'issued'",
        user.name
    ));
    let token = env.activate_ok(user_id.trim(), PASSWORD);
    wait_for_fresh_step(60);
    let previous = oathtool_code_at(&token.secret, 60, now_unix().saturating_sub(60));
    let staged = code_file.with_extension("tmp");
    std::fs::write(&staged, &previous).expect("write the code");
    std::fs::rename(&staged, &code_file).expect("hand the code over");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = dialogue.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = dialogue.kill();
            panic!("the dialogue did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&transcript).unwrap_or_default();
    let code = status.code().unwrap_or(-1);
    assert!(!(3..=4).contains(&code), "the dialogue went wrong:\n{text}");
    (code, text, token.secret)
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_user_enrols_on_a_terminal_and_logs_in_with_ssh() {
    require_root_and_peers();
    require_login_peers();
    let user = TestUser::create();
    let env = env_with("");
    let email = format!("{}@example.jp", user.name);
    let (code, text, secret) = enrol_on_a_terminal(&env, &user, &email, None);
    assert_eq!(code, 0, "{text}\n{}", env.otpd_log());
    let user_id = env.show(&user.name)["user_id"]
        .as_str()
        .expect("user_id")
        .to_owned();
    assert!(
        !shows_digits(&text, PASSWORD, &user_id),
        "the activation password was echoed:\n{text}"
    );
    for expected in [
        "Setup mail sent to",
        "User ID:",
        "Waiting for the phone",
        "Your token is active.",
        "Recovery codes",
        "keep them apart from the phone",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert_eq!(env.show(&user.name)["state"], "active");

    let sshd = Sshd::start(env.root(), &env.socket_path(), &user);
    let mut phone = Phone::new(&secret);
    let (status, transcript) = sshd.login(&user, &phone.next_code());
    assert!(
        status == Some(0) && logged_in(&transcript),
        "key + code did not log in (exit {status:?}):\n{transcript}\n--- otpd ---\n{}\n--- sshd ---\n{}",
        env.otpd_log(),
        sshd.log()
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn no_field_enrols_anyone_but_the_peer() {
    require_root_and_peers();
    require_login_peers();
    let user = TestUser::create();
    let victim = TestUser::create();
    let env = env_with("");
    let enrol = |extra: Value| {
        let mut request = json!({
            "op": "enrol",
            "email": "attacker@example.jp",
            "activation_password": PASSWORD,
        });
        for (key, value) in extra.as_object().expect("object") {
            request[key] = value.clone();
        }
        request.to_string()
    };
    let lines = [
        enrol(json!({"user": victim.name})),
        enrol(json!({"uid": victim.uid})),
        enrol(json!({"name": victim.name})),
        enrol(json!({"user": victim.name, "uid": victim.uid, "name": victim.name})),
        json!({"op": "status", "user": victim.name}).to_string(),
        json!({"op": "confirm", "otp": "123456", "user": victim.name}).to_string(),
    ];
    let text = lines.join("\n") + "\n";
    let answers = raw_as(&user, &env.self_socket_path(), text.as_bytes(), lines.len());
    assert_eq!(answers.len(), lines.len(), "{answers:?}");
    for answer in &answers {
        assert_eq!(answer["result"], "error", "{answer}");
        assert_eq!(answer["error"], "malformed", "{answer}");
    }
    assert!(
        env.list().is_empty(),
        "something was issued: {:?}",
        env.list()
    );
    assert!(env.mails().is_empty(), "a mail was sent");
    assert!(env.audit(&victim.name).is_empty());
    // The same user, asking for themselves, is the peer's user.
    let answers = raw_as(&user, &env.self_socket_path(), b"{\"op\":\"status\"}\n", 1);
    assert_eq!(
        answers,
        [json!({"result": "status", "user": user.name, "state": "none"})]
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn only_members_of_the_allowed_groups_enrol() {
    require_root_and_peers();
    require_login_peers();
    let outsider = TestUser::create();
    let member = TestUser::create();
    let env = env_with(&format!("allowed_groups = [\"{}\"]", member.group));
    let output = enrol_as(
        &env,
        &outsider,
        &["--email", "outsider@example.jp", "--no-wait"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("permission denied"),
        "{}",
        describe(&output)
    );
    assert!(env.list().is_empty());
    assert!(env.mails().is_empty());
    assert!(
        env.otpd_log().contains("self-service: permission denied"),
        "{}",
        env.otpd_log()
    );
    let issued = enrol_issued(&env, &member, "member@example.jp", &[]);
    assert_eq!(issued.user, member.name);
    assert_eq!(env.list().len(), 1);
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn replacing_an_active_token_needs_a_current_code_or_a_recovery_code() {
    require_root_and_peers();
    require_login_peers();
    let user = TestUser::create();
    let env = env_with("");
    let (issued, first_secret, recovery) = first_token(&env, &user);
    let (email, first_user_id) = (issued.email, issued.user_id);
    let pam = pam(&env);
    let mut first = Phone::new(&first_secret);
    let mails = env.setup_mails().len();

    // Without a code: refused, nothing changes.
    let output = enrol_as(
        &env,
        &user,
        &["--email", &email, "--no-wait"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stderr(&output).contains("--otp"), "{}", describe(&output));
    // With a wrong code: refused and counted toward the lockout.
    let wrong = first.wrong_codes(1).remove(0);
    let output = enrol_as(
        &env,
        &user,
        &["--email", &email, "--no-wait", "--otp", &wrong],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("not accepted"),
        "{}",
        describe(&output)
    );
    assert!(!stderr(&output).contains(&wrong), "the code was echoed");
    let failures = env.sqlite(&format!(
        "SELECT failures FROM enrolments WHERE user = '{}' AND state = 'active'",
        user.name
    ));
    assert_eq!(failures.trim(), "1", "the wrong code was not counted");
    let show = env.show(&user.name);
    assert_eq!(show["state"], "active");
    assert_eq!(show["user_id"], first_user_id.as_str());
    assert_eq!(env.setup_mails().len(), mails, "a refused enrol sent mail");
    let refusals: Vec<Value> = self_entries(&env, &user.name)
        .into_iter()
        .filter(|e| e["result"] == "fail")
        .collect();
    assert!(refusals.len() >= 2, "{refusals:#?}");

    // With a current code: a new token; the old one works until the new
    // one is confirmed.
    let code = first.next_code();
    let second = enrol_issued(&env, &user, &email, &["--otp", &code]);
    assert!(
        logs_in(&env, &pam, &user, &first.next_code()),
        "the old token stopped working"
    );
    let (second_secret, second_recovery) = activate_and_confirm(&env, &user, &second);
    assert!(
        !logs_in(&env, &pam, &user, &first.next_code()),
        "the replaced token still works"
    );
    assert!(
        !logs_in(&env, &pam, &user, &recovery[1]),
        "an old recovery code still works"
    );
    let mut second_phone = Phone::new(&second_secret);
    assert!(logs_in(&env, &pam, &user, &second_phone.next_code()));

    // With a recovery code (the phone is lost).
    let third = enrol_issued(&env, &user, &email, &["--otp", &second_recovery[0]]);
    assert_eq!(env.show(&user.name)["user_id"], third.user_id.as_str());
    assert!(
        logs_in(&env, &pam, &user, &second_phone.next_code()),
        "the active token stopped working before the new one is confirmed"
    );
    assert!(
        !logs_in(&env, &pam, &user, &second_recovery[0]),
        "the recovery code was not spent"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn garbage_oversized_lines_and_slow_clients_change_nothing() {
    require_root_and_peers();
    require_login_peers();
    let user = TestUser::create();
    let env = env_with("");
    let socket = env.self_socket_path();
    let garbage = b"not json\n{\"op\":\"enrol\"}\n[\"status\"]\n{\"op\":\"status\"} x\n\
                    {\"op\":\"confirm\",\"otp\":123456}\n{\"op\":\"reboot\"}\n";
    let answers = raw_as(&user, &socket, garbage, 6);
    assert_eq!(answers.len(), 6, "{answers:?}");
    for answer in &answers {
        assert_eq!(answer["error"], "malformed", "{answer}");
    }
    assert!(
        answers.iter().all(|a| !a.to_string().contains("123456")),
        "a code was echoed"
    );
    let mut big = vec![b'x'; 5000];
    big.push(b'\n');
    big.extend_from_slice(b"{\"op\":\"status\"}\n");
    let answers = raw_as(&user, &socket, &big, 2);
    assert_eq!(answers.len(), 1, "otpd hangs up after an oversized line");
    assert!(answers[0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("4096")));

    // Slow clients: many connections that send part of a line and wait.
    // The PAM socket answers meanwhile, and otpd closes them in time.
    const HOLD: &str = r#"
import socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b'{"op":"sta')
    held.append(s)
print("held", flush=True)
start = time.time()
s = held[0]
s.settimeout(60)
closed = s.recv(100)
print("closed after %d s with %r" % (time.time() - start, closed), flush=True)
"#;
    let hold = Command::new("runuser")
        .args(["-u", &user.name, "--", SYSTEM_PYTHON, "-c", HOLD])
        .arg(&socket)
        .arg("80")
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 as the test user");
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let status = env.socket_request(&json!({"op": "status"}));
    assert_eq!(status["result"], "ok", "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the PAM socket was slow"
    );
    let output = hold.wait_with_output().expect("the slow client ends");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("held"), "{said}");
    let seconds: u64 = said
        .split("closed after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the slow client was not closed: {said}"));
    assert!(
        (25..=40).contains(&seconds) && said.contains("b''"),
        "an idle connection should be closed after about 30 s: {said}"
    );

    assert!(env.list().is_empty(), "something was issued");
    assert!(env.mails().is_empty(), "a mail was sent");
    let answers = raw_as(&user, &socket, b"{\"op\":\"status\"}\n", 1);
    assert_eq!(answers[0]["state"], "none", "{answers:?}");
    assert_eq!(env.socket_request(&json!({"op": "status"}))["result"], "ok");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn a_setup_mail_that_cannot_be_sent_leaves_nothing() {
    require_root_and_peers();
    require_login_peers();
    let user = TestUser::create();
    let env = TestEnv::start_with(EnvOptions {
        smtp: false,
        self_service: Some(String::new()),
        ..EnvOptions::default()
    });
    let output = enrol_as(
        &env,
        &user,
        &["--email", "nomail@example.jp", "--no-wait"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let said = stderr(&output);
    assert!(
        said.contains("cannot send the setup mail") && said.contains("nothing was issued"),
        "{said}"
    );
    assert!(!said.contains(PASSWORD), "{said}");
    assert!(
        env.list().is_empty(),
        "an enrolment was left: {:?}",
        env.list()
    );
    let entries = self_entries(&env, &user.name);
    assert!(
        entries
            .iter()
            .any(|e| e["result"] == "error"
                && e["reason"] == "setup mail not sent; enrolment withdrawn"),
        "{entries:#?}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn on_a_terminal_a_replacement_asks_for_the_current_code_without_echo() {
    require_root_and_peers();
    require_login_peers();
    let user = TestUser::create();
    let env = env_with("");
    let (issued, first_secret, _) = first_token(&env, &user);
    let current = Phone::new(&first_secret).next_code();
    let (code, text, _) = enrol_on_a_terminal(&env, &user, &issued.email, Some(&current));
    assert_eq!(code, 0, "{text}\n{}", env.otpd_log());
    assert!(text.contains("You have an active token"), "{text}");
    assert!(
        !text.contains(&current),
        "the current code was echoed:\n{text}"
    );
    assert!(text.contains("Your token is active."), "{text}");
    let show = env.show(&user.name);
    assert_eq!(show["state"], "active");
    assert_ne!(
        show["user_id"],
        issued.user_id.as_str(),
        "the token was not replaced"
    );
}
