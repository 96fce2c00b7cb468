//! Login end to end: a real sshd and a real sudo
//! with `libpam_otp.so` in their PAM stacks, the Unix socket's peer
//! credential check, concurrent verification, lockout and unlock, and a
//! daemon killed with SIGKILL while it verifies.
//!
//! sshd and sudo run in private mount namespaces (`unshare --mount`) in
//! which a temp PAM file (and sudoers) is bound over the system's, so the
//! machine's /etc/pam.d and /etc/sudoers are never changed. Test users are
//! made with useradd and removed with userdel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod login_support;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use e2e::{
    assert_success, describe, require_root_and_peers, socket_exchange, stdout, EnvOptions, TestEnv,
    SYSTEM_PYTHON,
};
use login_support::{logged_in, require_login_peers, Phone, Sshd, Sudo, TestUser};
use serde_json::{json, Value};

fn verify(user: &str, otp: &str) -> Value {
    json!({"op": "verify", "user": user, "otp": otp, "service": "e2e", "rhost": "192.0.2.7"})
}

/// Audit entries of the login channel (the socket) that accepted a code.
fn accepted_logins(entries: &[Value]) -> Vec<&Value> {
    entries
        .iter()
        .filter(|e| e["channel"] == "pam" && e["result"] == "ok")
        .collect()
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn ssh_login_with_publickey_and_one_time_password() {
    require_root_and_peers();
    require_login_peers();
    let env = TestEnv::start();
    let user = TestUser::create();
    let mut phone = Phone::new(&env.enrol_active(&user.name));
    let sshd = Sshd::start(env.root(), &env.socket_path(), &user);

    let wrong = phone.wrong_codes(1).remove(0);
    let (status, transcript) = sshd.login(&user, &wrong);
    assert!(
        !logged_in(&transcript) && status != Some(0),
        "a wrong code let ssh in (exit {status:?}):\n{transcript}\n--- otpd ---\n{}",
        env.otpd_log()
    );
    assert_eq!(
        status,
        Some(255),
        "ssh should fail to log in:\n{transcript}"
    );
    assert!(
        transcript.contains("Permission denied"),
        "no 'Permission denied' after a wrong code:\n{transcript}"
    );

    let code = phone.next_code();
    let (status, transcript) = sshd.login(&user, &code);
    assert!(
        status == Some(0) && logged_in(&transcript),
        "the right code did not log in (exit {status:?}):\n{transcript}\n--- otpd ---\n{}\n--- sshd ---\n{}",
        env.otpd_log(),
        sshd.log()
    );
    assert!(
        !transcript.contains(&code),
        "the code was echoed on the terminal:\n{transcript}"
    );

    // The same code again is a replay.
    let (status, transcript) = sshd.login(&user, &code);
    assert!(
        !logged_in(&transcript) && status != Some(0),
        "a spent code logged in again:\n{transcript}"
    );

    let entries = env.audit(&user.name);
    let accepted = accepted_logins(&entries);
    assert_eq!(
        accepted.len(),
        1,
        "one accepted login expected: {entries:#?}"
    );
    let peer = accepted[0]["peer"].as_str().unwrap_or_default();
    assert!(
        peer.contains("service=sshd") && peer.contains("rhost=127.0.0.1"),
        "the PAM module should send the service and remote host: {peer}"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn sudo_with_one_time_password() {
    require_root_and_peers();
    require_login_peers();
    let env = TestEnv::start();
    let user = TestUser::create();
    let mut phone = Phone::new(&env.enrol_active(&user.name));
    let sudo = Sudo::new(env.root(), &env.socket_path(), &user);

    let wrong = phone.wrong_codes(1).remove(0);
    let output = sudo.id_u(&user, &wrong);
    assert!(
        !output.status.success() && stdout(&output).trim() != "0",
        "sudo let a wrong code through: {}\n--- otpd ---\n{}",
        describe(&output),
        env.otpd_log()
    );

    let code = phone.next_code();
    let output = sudo.id_u(&user, &code);
    assert!(
        output.status.success() && stdout(&output).trim() == "0",
        "sudo with the right code: {}\n--- otpd ---\n{}",
        describe(&output),
        env.otpd_log()
    );
    let err = e2e::stderr(&output);
    assert!(
        err.contains("One-time password (sudo):"),
        "sudo should show the module's prompt: {err:?}"
    );
    assert!(!err.contains(&code), "the code was echoed: {err:?}");

    let output = sudo.id_u(&user, &code);
    assert!(
        !output.status.success() && stdout(&output).trim() != "0",
        "sudo accepted a spent code again: {}",
        describe(&output)
    );

    let entries = env.audit(&user.name);
    let accepted = accepted_logins(&entries);
    assert_eq!(
        accepted.len(),
        1,
        "one accepted sudo expected: {entries:#?}"
    );
    let peer = accepted[0]["peer"].as_str().unwrap_or_default();
    assert!(peer.contains("service=sudo"), "{peer}");
}

/// Connects to the socket as `user` with Python and sends one line; prints
/// the answer, or `CONNECT-ERROR <errno>`.
const ASK_SOCKET_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("CONNECT-ERROR", e.errno)
    sys.exit(0)
s.sendall(sys.argv[2].encode() + b"\n")
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode().strip())
"#;

fn ask_as(user: &TestUser, env: &TestEnv, request: &Value) -> String {
    let socket = env.socket_path().display().to_string();
    let output = user.run(
        SYSTEM_PYTHON,
        &["-c", ASK_SOCKET_PY, &socket, &request.to_string()],
    );
    assert_success(&output, "python3 as the test user");
    stdout(&output).trim().to_owned()
}

/// Lets other users reach the socket file (the temp dir is 0700) and gives
/// the socket to `user`'s group.
fn open_socket_to(env: &TestEnv, user: &TestUser) {
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the temp dir");
    std::os::unix::fs::chown(env.socket_path(), None, Some(user.gid)).expect("chgrp the socket");
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn socket_refuses_unprivileged_users_unless_their_group_is_allowed() {
    require_root_and_peers();
    require_login_peers();
    let env = TestEnv::start();
    let user = TestUser::create();
    let mut phone = Phone::new(&env.enrol_active("alice"));

    // The socket file itself (0660 root:root) keeps other users out.
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the temp dir");
    let answer = ask_as(&user, &env, &json!({"op": "status"}));
    assert_eq!(
        answer, "CONNECT-ERROR 13",
        "connect should fail with EACCES"
    );

    // Through the file permissions, SO_PEERCRED still refuses.
    open_socket_to(&env, &user);
    let denied = json!({"result": "error", "message": "permission denied"});
    let answer = ask_as(&user, &env, &json!({"op": "status"}));
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap_or(Value::String(answer.clone())),
        denied
    );
    let code = phone.next_code();
    let answer = ask_as(&user, &env, &verify("alice", &code));
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap_or(Value::String(answer.clone())),
        denied
    );
    let log = env.otpd_log();
    assert!(
        log.contains("permission denied") && log.contains(&format!("uid={}", user.uid)),
        "the refusal should be logged with the peer's uid:\n{log}"
    );
    // The refused request did not spend the code.
    assert!(
        env.otpctl_test("alice", &code),
        "root's verification of the code after the refused one:\n{}",
        env.otpd_log()
    );

    // Another daemon whose allowed_groups holds the user's group answers.
    let allowed = TestEnv::start_with(EnvOptions {
        socket_toml: format!("allowed_groups = [\"{}\"]\n", user.group),
        ..EnvOptions::default()
    });
    allowed.wait_for_socket();
    open_socket_to(&allowed, &user);
    let answer: Value = serde_json::from_str(&ask_as(&user, &allowed, &json!({"op": "status"})))
        .expect("JSON answer");
    assert_eq!(answer["result"], "ok", "{answer}");
    assert!(answer["version"].is_string(), "{answer}");
    let answer: Value = serde_json::from_str(&ask_as(
        &user,
        &allowed,
        &verify("nobody-enrolled", "123456"),
    ))
    .expect("JSON answer");
    assert_eq!(answer, json!({"result": "reject"}));
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn one_hundred_concurrent_verifications_accept_once() {
    require_root_and_peers();
    let env = TestEnv::start();
    let mut phone = Phone::new(&env.enrol_active("dave"));
    env.wait_for_socket();
    let code = phone.next_code();
    let socket = env.socket_path();
    let barrier = Arc::new(Barrier::new(100));
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let socket = socket.clone();
            let barrier = Arc::clone(&barrier);
            let request = verify("dave", &code);
            std::thread::spawn(move || {
                barrier.wait();
                socket_exchange(&socket, &[request]).map(|mut a| a.remove(0))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for thread in threads {
        let answer = thread.join().expect("thread");
        answers.push(answer.unwrap_or_else(|e| panic!("socket: {e}\n{}", env.otpd_log())));
    }
    let accepted = answers.iter().filter(|a| a["result"] == "accept").count();
    let rejected = answers.iter().filter(|a| a["result"] == "reject").count();
    assert_eq!(
        (accepted, rejected),
        (1, 99),
        "exactly one accept of 100 concurrent requests: {answers:?}"
    );
    let entries = env.audit("dave");
    assert_eq!(accepted_logins(&entries).len(), 1, "{entries:#?}");
}

/// Five distinct wrong codes through `otpctl test`.
fn five_failures(env: &TestEnv, phone: &Phone, user: &str) {
    for wrong in phone.wrong_codes(5) {
        assert!(!env.otpctl_test(user, &wrong), "a wrong code was accepted");
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn lockout_after_five_failures_until_unlock() {
    require_root_and_peers();
    let env = TestEnv::start();
    let mut phone = Phone::new(&env.enrol_active("erin"));
    five_failures(&env, &phone, "erin");
    let code = phone.next_code();
    assert!(
        !env.otpctl_test("erin", &code),
        "a locked token accepted the right code"
    );
    // Locked looks like any other refusal to the caller.
    assert_eq!(
        env.socket_request(&verify("erin", &code)),
        json!({"result": "reject"})
    );
    let entries = env.audit("erin");
    assert!(
        entries
            .iter()
            .any(|e| e["channel"] == "pam"
                && e["reason"].as_str().is_some_and(|r| r.contains("locked"))),
        "the audit trail should say why: {entries:#?}"
    );

    let output = env.otpctl(&["unlock", "erin"], "");
    assert_success(&output, "otpctl unlock");
    assert!(
        env.otpctl_test("erin", &code),
        "the right code after unlock:\n{}",
        env.otpd_log()
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn lockout_lifts_by_itself_after_lockout_seconds() {
    require_root_and_peers();
    let env = TestEnv::start_with(EnvOptions {
        extra_toml: "[policy]\nmax_failures = 5\nlockout_seconds = 3\n".to_owned(),
        ..EnvOptions::default()
    });
    let mut phone = Phone::new(&env.enrol_active("frank"));
    five_failures(&env, &phone, "frank");
    let code = phone.next_code();
    assert!(
        !env.otpctl_test("frank", &code),
        "a locked token accepted the right code"
    );
    std::thread::sleep(Duration::from_millis(4200));
    assert!(
        env.otpctl_test("frank", &code),
        "the lock should have lifted after 3 s:\n{}",
        env.otpd_log()
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn sigkill_while_verifying_keeps_enrolments_and_spent_codes() {
    require_root_and_peers();
    // Replays count as failures: a high limit keeps the stream from
    // locking the token.
    let mut env = TestEnv::start_with(EnvOptions {
        extra_toml: "[policy]\nmax_failures = 1000000\n".to_owned(),
        ..EnvOptions::default()
    });
    let mut phone = Phone::new(&env.enrol_active("grace"));
    env.wait_for_socket();
    let spent = phone.next_code();
    let wrong = phone.wrong_codes(1).remove(0);

    let answered = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let (answered, accepted, stop) = (
            Arc::clone(&answered),
            Arc::clone(&accepted),
            Arc::clone(&stop),
        );
        let socket = env.socket_path();
        let requests = [verify("grace", &spent), verify("grace", &wrong)];
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Until the daemon is gone: connection refused or cut.
                let Ok(answers) = socket_exchange(&socket, &requests) else {
                    return;
                };
                for answer in answers {
                    if answer["result"] == "accept" {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < 200 {
        assert!(
            Instant::now() < deadline,
            "the request stream stalled:\n{}",
            env.otpd_log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    env.kill_otpd_9();
    stop.store(true, Ordering::Relaxed);
    stream.join().expect("stream thread");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the code should be accepted exactly once before the kill"
    );

    env.start_otpd_again();
    assert_eq!(env.show("grace")["state"], "active");
    assert_eq!(
        env.socket_request(&verify("grace", &spent)),
        json!({"result": "reject"}),
        "a code accepted before SIGKILL must stay spent:\n{}",
        env.otpd_log()
    );
    let fresh = phone.next_code();
    assert_eq!(
        env.socket_request(&verify("grace", &fresh)),
        json!({"result": "accept"}),
        "a fresh code after the restart:\n{}",
        env.otpd_log()
    );
}
