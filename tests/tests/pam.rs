//! PAM login end to end: the built `libpam_otp.so`,
//! loaded by the real libpam in `pamtester` through a real service file in
//! /etc/pam.d, talks to the built `otpd` over its Unix socket; oathtool
//! plays the phone. valgrind watches one login.
//!
//! Root only (they write /etc/pam.d); peers: pamtester, valgrind (Debian
//! packages of the same names). Each test has its own service file and
//! daemon, so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::time::{Duration, Instant};

use e2e::{
    assert_success, describe, normalize_base32, now_unix, oathtool_code, require_root_and_peers,
    run_with_input, said, wait_for_fresh_step, wrong_code, PamService, TestEnv,
};

const PASSWORD: &str = "4321";

use e2e::pamtester::{AUTHINFO_UNAVAIL, AUTH_ERR, SERVICE_ERR, SUCCESS};

// ---------------------------------------------------------------------------
// Helpers

/// Panics unless the PAM tests can run here: root with the harness's
/// peers, pamtester and valgrind.
fn require_pam_peers() {
    require_root_and_peers();
    e2e::require_tools(&[("pamtester", "pamtester"), ("valgrind", "valgrind")]);
}

/// `PamService::authenticate` under valgrind, its report in `log`.
fn authenticate_under_valgrind(
    service: &PamService,
    user: &str,
    input: &str,
    log: &Path,
) -> Output {
    run_with_input(
        Command::new("valgrind")
            .arg("--error-exitcode=99")
            .arg("--leak-check=full")
            .arg("--errors-for-leak-kinds=definite")
            .arg(format!("--log-file={}", log.display()))
            .args(["pamtester", service.name(), user, "authenticate"]),
        input,
    )
}

/// Asserts the outcome: exit 0 and "successfully authenticated", or exit 1
/// and the given pam_strerror text.
#[track_caller]
fn assert_outcome(output: &Output, expected: &str, what: &str, env: Option<&TestEnv>) {
    assert!(
        e2e::pamtester::ended_with(output, expected),
        "{what}: expected {expected:?}: {}\n--- otpd log ---\n{}",
        describe(output),
        env.map(TestEnv::otpd_log).unwrap_or_default()
    );
}

/// The daemon's socket (`[socket] path` of the harness's config), once it
/// exists.
fn otpd_socket(env: &TestEnv) -> PathBuf {
    let path = env.root().join("otpd.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "otpd did not create its socket {}:\n{}",
            path.display(),
            env.otpd_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    path
}

/// The TOTP code (SHA1, 6 digits, 60 s) of the step holding `unix`.
fn code_at(secret: &str, unix: u64) -> String {
    let output = Command::new("oathtool")
        .args(["--totp=SHA1", "-s", "60", "-N"])
        .arg(format!("@{unix}"))
        .arg("-b")
        .arg(normalize_base32(secret))
        .output()
        .expect("run oathtool");
    assert_success(&output, "oathtool -N");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Issues, activates and confirms a token for `user`; its secret. The
/// confirmation spends the current step, so logins use the next one
/// ([`next_code`]), which the default window of 1 accepts.
fn enrol(env: &TestEnv, user: &str) -> String {
    let issued = env.issue(user, &format!("{user}@example.jp"), PASSWORD);
    let token = env.activate_ok(&issued.user_id, PASSWORD);
    wait_for_fresh_step(60);
    let code = oathtool_code(&token.secret, 60);
    let output = env.otpctl(&["confirm", user, "--json"], &format!("{code}\n"));
    assert_success(&output, "otpctl confirm");
    token.secret
}

/// The code of the step after the current one.
fn next_code(secret: &str) -> String {
    code_at(secret, now_unix() + 60)
}

/// Kills the test's own otpd (the one started with this env's config),
/// found by its command line; the socket file stays behind, as after a
/// crash. (TestEnv has no stop method yet.)
fn kill_otpd(env: &TestEnv) {
    let config = env.config.to_string_lossy().into_owned();
    let mut killed = false;
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_ours = args.first().is_some_and(|a| a.ends_with("otpd"))
            && args
                .windows(2)
                .any(|w| w[0] == "--config" && w[1] == config);
        if is_ours {
            let status = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {pid}");
            killed = true;
        }
    }
    assert!(killed, "found no otpd running with --config {config}");
}

// ---------------------------------------------------------------------------
// The real daemon

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn good_code_once_then_replay_and_garbage_refused() {
    require_pam_peers();
    let env = TestEnv::start();
    let secret = enrol(&env, "alice");
    let socket = otpd_socket(&env);
    let service = PamService::new(&format!("socket={}", socket.display()), &[]);

    let code = next_code(&secret);
    let output = service.authenticate("alice", &format!("{code}\n"));
    assert_outcome(&output, SUCCESS, "the current code", Some(&env));
    e2e::assert_prompted_without_echo(&output, &code);

    let output = service.authenticate("alice", &format!("{code}\n"));
    assert_outcome(
        &output,
        AUTH_ERR,
        "the same code again (replay)",
        Some(&env),
    );

    let output = service.authenticate("alice", &format!("{}\n", wrong_code(&secret)));
    assert_outcome(&output, AUTH_ERR, "a wrong code", Some(&env));

    let output = service.authenticate("alice", "not a code\n");
    assert_outcome(&output, AUTH_ERR, "garbage", Some(&env));

    // nullok lets through only users without a token, never a wrong code.
    let nullok = PamService::new(
        &format!("socket={} nullok", socket.display()),
        &["auth required pam_permit.so"],
    );
    let output = nullok.authenticate("alice", "000000\n");
    assert_outcome(&output, AUTH_ERR, "nullok with a wrong code", Some(&env));
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn user_without_token_refused_unless_nullok() {
    require_pam_peers();
    let env = TestEnv::start();
    let socket = otpd_socket(&env);

    let plain = PamService::new(&format!("socket={}", socket.display()), &[]);
    let output = plain.authenticate("nobody-enrolled", "123456\n");
    assert_outcome(&output, AUTH_ERR, "a user without a token", Some(&env));

    // PAM_IGNORE, and the next module decides: pam_permit lets through ...
    let nullok = PamService::new(
        &format!("socket={} nullok", socket.display()),
        &["auth required pam_permit.so"],
    );
    let output = nullok.authenticate("nobody-enrolled", "\n");
    assert_outcome(
        &output,
        SUCCESS,
        "nullok, no token, then pam_permit",
        Some(&env),
    );

    // ... pam_deny refuses: PAM_IGNORE is never success on its own.
    let denied = PamService::new(
        &format!("socket={} nullok", socket.display()),
        &["auth required pam_deny.so"],
    );
    let output = denied.authenticate("nobody-enrolled", "\n");
    assert_outcome(
        &output,
        AUTH_ERR,
        "nullok, no token, then pam_deny",
        Some(&env),
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn stopped_daemon_fails_closed() {
    require_pam_peers();
    let env = TestEnv::start();
    let socket = otpd_socket(&env);
    let service = PamService::new(&format!("socket={} timeout_ms=2000", socket.display()), &[]);
    // Reachable first: a refusal from otpd.
    let output = service.authenticate("nobody-enrolled", "123456\n");
    assert_outcome(&output, AUTH_ERR, "otpd running", Some(&env));

    kill_otpd(&env);
    let nullok = PamService::new(
        &format!("socket={} nullok", socket.display()),
        &["auth sufficient pam_permit.so"],
    );
    for (service, what) in [(&service, "otpd killed"), (&nullok, "otpd killed, nullok")] {
        let output = service.authenticate("nobody-enrolled", "123456\n");
        assert_outcome(&output, AUTHINFO_UNAVAIL, what, None);
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn one_login_under_valgrind() {
    require_pam_peers();
    let env = TestEnv::start();
    let secret = enrol(&env, "erin");
    let socket = otpd_socket(&env);
    let service = PamService::new(&format!("socket={}", socket.display()), &[]);
    let log = env.root().join("valgrind.log");
    let output =
        authenticate_under_valgrind(&service, "erin", &format!("{}\n", next_code(&secret)), &log);
    let report = fs::read_to_string(&log).unwrap_or_default();
    assert_ne!(
        output.status.code(),
        Some(99),
        "valgrind found errors:\n{report}\n{}",
        describe(&output)
    );
    assert_outcome(&output, SUCCESS, "a login under valgrind", Some(&env));
    for bad in [
        "Invalid read",
        "Invalid write",
        "Invalid free",
        "uninitialised",
    ] {
        assert!(!report.contains(bad), "valgrind: {bad}:\n{report}");
    }
}

// ---------------------------------------------------------------------------
// No daemon needed

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn nothing_listening_fails_closed() {
    require_pam_peers();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    for path in [&missing, &stale] {
        let service = PamService::new(
            &format!("socket={} nullok", path.display()),
            &["auth sufficient pam_permit.so"],
        );
        let output = service.authenticate("alice", "123456\n");
        assert_outcome(
            &output,
            AUTHINFO_UNAVAIL,
            &format!("{}", path.display()),
            None,
        );
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn unknown_argument_fails_closed() {
    require_pam_peers();
    let service = PamService::new(
        "socket=/nonexistent/otpd.sock no_such_option",
        &["auth sufficient pam_permit.so"],
    );
    let output = service.authenticate("alice", "123456\n");
    assert_outcome(&output, SERVICE_ERR, "an unknown argument", None);
    assert!(
        !said(&output).contains("One-time password"),
        "prompted despite the bad configuration: {}",
        describe(&output)
    );
}

/// Real libpam and pamtester against a scripted otpd on a socket: the
/// request the module sends (PAM_SERVICE included, the code as typed), the
/// custom prompt, and each answer's outcome.
#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn real_libpam_against_a_fake_otpd() {
    require_pam_peers();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let answers = [
        r#"{"result":"accept"}"#,
        r#"{"result":"reject"}"#,
        r#"{"result":"error","message":"internal error"}"#,
        "garbage",
        r#"{"result":"ignore"}"#,
    ];
    let server = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for answer in answers {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            reader
                .into_inner()
                .write_all(format!("{answer}\n").as_bytes())
                .unwrap();
            requests.push(line);
        }
        requests
    });
    let service = PamService::new(
        &format!("socket={} prompt=[Code please: ]", path.display()),
        &[],
    );
    for (expected, what) in [
        (SUCCESS, "accept"),
        (AUTH_ERR, "reject"),
        (AUTHINFO_UNAVAIL, "error"),
        (AUTHINFO_UNAVAIL, "garbage"),
        (AUTH_ERR, "ignore without nullok"),
    ] {
        let output = service.authenticate("alice", "135790\n");
        assert_outcome(&output, expected, what, None);
        assert!(
            said(&output).contains("Code please: "),
            "{}",
            describe(&output)
        );
    }
    let requests = server.join().unwrap();
    for line in requests {
        let request: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            request,
            serde_json::json!({"op": "verify", "user": "alice", "otp": "135790",
                               "service": service.name()}),
            "{line}"
        );
    }
}
