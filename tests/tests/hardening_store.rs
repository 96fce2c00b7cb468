//! The store under pressure and across migrations, end to end:
//!
//! - Writers never fail on a locked database: concurrent `otpctl issue`,
//!   `otpctl import`, `otpctl confirm` and `POST /api/v1/confirm` beside a
//!   verify load on the socket, and two `otpctl issue` loops alone, all
//!   succeed every time.
//! - Re-importing a token never lowers its replay state: a code accepted
//!   before `otpctl import --replace` of the same secret is refused after
//!   it, also when the period changes; the codes that
//!   google-authenticator-libpam (in pamtester) accepted, which its file
//!   lists as used (`" DISALLOW_REUSE`), stay refused.
//! - A replay state in the future (a code accepted while the server clock
//!   ran ahead) locks a user out until `otpctl resync` with two consecutive
//!   codes moves it back; the move is audited.
//!
//! Root only. Peers: oathtool, sqlite3, pamtester, aiosmtpd,
//! google-authenticator and its PAM module (libpam-google-authenticator).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::Duration;

use e2e::{
    assert_success, describe, google_authenticator_file, now_unix, oathtool_code, oathtool_code_at,
    require_root_and_peers, run_with_input, said, socket_exchange, PamService, TestEnv,
};
use otpcore::totp::{Algorithm, TokenParams};
use serde_json::{json, Value};

const PASSWORD: &str = "4321";

// ---------------------------------------------------------------------------
// Helpers

/// A random base32 secret of 20 bytes (160 bits) and its bytes.
fn random_secret() -> (String, Vec<u8>) {
    let mut bytes = vec![0u8; 20];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    (otpcore::totp::base32(&bytes).to_string(), bytes)
}

/// Sleeps until at least `needed` seconds of the current `period`-second
/// step remain, so codes computed now stay current for that long.
fn wait_for_room(period: u64, needed: u64) {
    let into = now_unix() % period;
    if period - into < needed {
        thread::sleep(Duration::from_secs(period - into + 1));
    }
}

/// Writes `text` to `name` under the test's directory; its path.
fn write_file(env: &TestEnv, name: &str, text: &str) -> String {
    let path = env.root().join(name);
    fs::write(&path, text).expect("write the import file");
    path.to_str().expect("utf-8 path").to_owned()
}

/// `otpctl import --format FORMAT --json ARGS...`, which must succeed.
fn import_ok(env: &TestEnv, format: &str, args: &[&str]) {
    let mut all = vec!["import", "--format", format, "--json"];
    all.extend_from_slice(args);
    let output = env.otpctl(&all, "");
    assert_success(&output, &format!("otpctl {all:?}"));
}

/// One verify request over the socket: "accept", "reject" or "error".
fn verify(env: &TestEnv, user: &str, otp: &str) -> String {
    let answer = env.socket_request(&json!({
        "op": "verify", "user": user, "otp": otp, "service": "hardening-store",
    }));
    answer["result"].as_str().unwrap_or("?").to_owned()
}

/// The reason of the newest audit entry of `user`.
fn last_reason(env: &TestEnv, user: &str) -> String {
    env.audit(user)
        .last()
        .and_then(|e| e["reason"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The stored last accepted step of `user`'s active token ("" for none).
fn last_step(env: &TestEnv, user: &str) -> String {
    env.sqlite(&format!(
        "SELECT last_step FROM enrolments WHERE user = '{user}' AND state = 'active'"
    ))
    .trim()
    .to_owned()
}

// ---------------------------------------------------------------------------
// Writers beside a verify load

/// Runs of each writer loop; small enough for a two-core machine.
const ISSUES: usize = 16;
const IMPORTS: usize = 12;
const CONFIRMS: usize = 16;
const VERIFY_THREADS: usize = 3;

/// Runs of the concurrent loops by kind, and a line for each failed one.
#[derive(Default)]
struct Failures {
    /// (kind, runs, failed runs)
    tally: Mutex<Vec<(String, usize, usize)>>,
    lines: Mutex<Vec<String>>,
}

impl Failures {
    /// Counts a run of `what`; records it when it failed.
    fn record(&self, what: &str, ok: bool, detail: impl FnOnce() -> String) {
        {
            let mut tally = self.tally.lock().unwrap();
            let index = match tally.iter().position(|(kind, ..)| kind == what) {
                Some(index) => index,
                None => {
                    tally.push((what.to_owned(), 0, 0));
                    tally.len() - 1
                }
            };
            tally[index].1 += 1;
            tally[index].2 += usize::from(!ok);
        }
        if !ok {
            let line = format!("{what}: {}", detail());
            self.lines.lock().unwrap().push(line);
        }
    }

    /// Prints the tally (failed/runs by kind) and asserts that nothing
    /// failed.
    fn assert_none(&self, what: &str) {
        let lines = self.lines.lock().unwrap();
        let tally = self.tally.lock().unwrap();
        let figures: Vec<String> = tally
            .iter()
            .map(|(kind, runs, failed)| format!("{kind} {failed}/{runs}"))
            .collect();
        eprintln!("{what}: failed/runs: {}", figures.join(", "));
        assert!(
            lines.is_empty(),
            "{what}: {} runs failed ({}):\n{}",
            lines.len(),
            figures.join(", "),
            lines.join("\n")
        );
    }
}

/// `otpctl issue USER --email ... --json --no-wait`, recorded in `failures`.
fn issue_run(env: &TestEnv, failures: &Failures, what: &str, user: &str) {
    let output = env.otpctl(
        &[
            "issue",
            user,
            "--email",
            &format!("{user}@example.jp"),
            "--json",
            "--no-wait",
        ],
        &format!("{PASSWORD}\n"),
    );
    failures.record(what, output.status.success(), || describe(&output));
}

/// Two `otpctl issue` loops of `runs` each, users `PREFIX-a-N` and
/// `PREFIX-b-N`, recorded in `failures`. The loops start each run
/// together, so the two processes reach the store at about the same time.
fn issue_loops(env: &TestEnv, failures: &Failures, prefix: &str, runs: usize) {
    let together = Barrier::new(2);
    thread::scope(|scope| {
        for lane in ["a", "b"] {
            let together = &together;
            scope.spawn(move || {
                for n in 0..runs {
                    together.wait();
                    issue_run(
                        env,
                        failures,
                        "otpctl issue",
                        &format!("{prefix}-{lane}-{n}"),
                    );
                }
            });
        }
    });
}

/// `otpctl import --format csv` of three users with fresh secrets, `runs`
/// times: even runs add new users, odd runs replace the previous run's.
fn import_loop(env: &TestEnv, failures: &Failures, runs: usize) {
    for n in 0..runs {
        let batch = n - n % 2;
        let lines: String = (0..3)
            .map(|k| format!("imp{batch}-{k},{}\n", random_secret().0))
            .collect();
        let path = write_file(env, &format!("import-{n}.csv"), &lines);
        let mut args = vec!["import", "--format", "csv", "--json", &path];
        let what = if n % 2 == 1 {
            args.push("--replace");
            "otpctl import --replace"
        } else {
            "otpctl import"
        };
        let output = env.otpctl(&args, "");
        failures.record(what, output.status.success(), || describe(&output));
    }
}

/// Issues and activates a token for each user (two at a time); the users
/// with their user IDs and secrets, waiting for the first code.
fn activated(env: &TestEnv, users: &[String]) -> Vec<(String, String, String)> {
    let half = users.len() / 2;
    thread::scope(|scope| {
        let lanes: Vec<_> = [&users[..half], &users[half..]]
            .into_iter()
            .map(|lane| {
                scope.spawn(move || {
                    lane.iter()
                        .map(|user| {
                            let issued = env.issue(user, &format!("{user}@example.jp"), PASSWORD);
                            let token = env.activate_ok(&issued.user_id, PASSWORD);
                            (user.clone(), issued.user_id, token.secret)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        lanes
            .into_iter()
            .flat_map(|lane| lane.join().expect("enrolment thread"))
            .collect()
    })
}

/// Confirms each activated token with its current code: even ones with
/// `otpctl confirm`, odd ones with `POST /api/v1/confirm`.
fn confirm_loop(env: &TestEnv, failures: &Failures, tokens: &[(String, String, String)]) {
    for (n, (user, user_id, secret)) in tokens.iter().enumerate() {
        let code = oathtool_code(secret, 60);
        if n % 2 == 0 {
            let output = env.otpctl(&["confirm", user, "--json"], &format!("{code}\n"));
            failures.record("otpctl confirm", output.status.success(), || {
                describe(&output)
            });
        } else {
            let (status, body) = env.confirm_api(user_id, &code);
            failures.record("POST /api/v1/confirm", status == 200, || {
                format!("{status} {body}")
            });
        }
    }
}

/// Verify requests on the socket until `stop`: wrong codes, right codes
/// (accepted once a step, then replays) and unknown users, every one a
/// committed write of otpd. Returns how many were answered; an "error"
/// answer or a broken connection is recorded in `failures`.
fn verify_load(
    env: &TestEnv,
    users: &[(String, Vec<u8>)],
    stop: &AtomicBool,
    failures: &Failures,
) -> usize {
    const THIRTY: TokenParams = TokenParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 30,
    };
    let mut answered = 0;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let requests: Vec<Value> = users
            .iter()
            .flat_map(|(user, secret)| {
                let right = THIRTY.code_at(secret, now_unix()).to_string();
                let wrong = format!("{:06}", (round * 7919) % 1_000_000);
                [right, wrong]
                    .map(|otp| json!({"op": "verify", "user": user, "otp": otp, "service": "load"}))
            })
            .chain([json!({"op": "verify", "user": "nobody", "otp": "123456", "service": "load"})])
            .collect();
        match socket_exchange(&env.socket_path(), &requests) {
            Ok(answers) => {
                answered += answers.len();
                for answer in answers {
                    failures.record("socket verify", answer["result"] != "error", || {
                        answer.to_string()
                    });
                }
            }
            Err(e) => failures.record("socket verify", false, || e.to_string()),
        }
    }
    answered
}

/// Lets otpd answer every activation and confirmation of the loops: the
/// per-address rate limit would refuse most of them from 127.0.0.1.
fn raise_http_rate_limit(env: &mut TestEnv) {
    env.stop_otpd();
    let text = fs::read_to_string(&env.config).expect("read otpd.toml");
    let raised = text.replacen("[http]\n", "[http]\nrate_limit_per_minute = 10000\n", 1);
    assert_ne!(raised, text, "otpd.toml has an [http] table");
    fs::write(&env.config, raised).expect("write otpd.toml");
    env.start_otpd_again();
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn writers_beside_a_verify_load_never_find_the_database_locked() {
    require_root_and_peers();
    let mut env = TestEnv::start();
    raise_http_rate_limit(&mut env);
    let load_users: Vec<(String, Vec<u8>)> = (0..VERIFY_THREADS)
        .map(|k| (format!("load{k}"), random_secret().1))
        .collect();
    let csv: String = load_users
        .iter()
        .map(|(user, bytes)| format!("{user},{}\n", otpcore::totp::base32(bytes).as_str()))
        .collect();
    let path = write_file(&env, "load.csv", &csv);
    import_ok(&env, "csv", &[&path]);

    let users: Vec<String> = (0..CONFIRMS).map(|n| format!("conf{n}")).collect();
    let waiting = activated(&env, &users);

    let writers = Failures::default();
    let load = Failures::default();
    let stop = AtomicBool::new(false);
    let env = &env;
    let answered: usize = thread::scope(|scope| {
        let verifiers: Vec<_> = load_users
            .iter()
            .map(|user| {
                let (stop, load) = (&stop, &load);
                scope.spawn(move || verify_load(env, std::slice::from_ref(user), stop, load))
            })
            .collect();
        let issues = scope.spawn(|| {
            for n in 0..ISSUES {
                issue_run(env, &writers, "otpctl issue", &format!("iss{n}"));
            }
        });
        let imports = scope.spawn(|| import_loop(env, &writers, IMPORTS));
        let confirms = scope.spawn(|| confirm_loop(env, &writers, &waiting));
        for writer in [issues, imports, confirms] {
            writer.join().expect("writer thread");
        }
        stop.store(true, Ordering::Relaxed);
        verifiers
            .into_iter()
            .map(|v| v.join().expect("verify thread"))
            .sum()
    });
    eprintln!("verify load: {answered} requests answered during the writes");
    assert!(
        answered >= 100,
        "the verify load hardly ran ({answered} answers)"
    );
    writers.assert_none("writers beside a verify load");
    load.assert_none("verify load");

    // Every write took effect: the tokens are there in the expected states.
    let list = env.list();
    let state = |user: &str| {
        list.iter()
            .find(|e| e["user"] == user)
            .map(|e| e["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    for n in 0..ISSUES {
        assert_eq!(state(&format!("iss{n}")), "issued", "iss{n}");
    }
    for n in 0..CONFIRMS {
        assert_eq!(state(&format!("conf{n}")), "active", "conf{n}");
    }
    for n in (0..IMPORTS).step_by(2) {
        for k in 0..3 {
            assert_eq!(state(&format!("imp{n}-{k}")), "active", "imp{n}-{k}");
        }
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn two_issue_loops_never_find_the_database_locked() {
    require_root_and_peers();
    let env = TestEnv::start();
    let failures = Failures::default();
    issue_loops(&env, &failures, "two", 25);
    failures.assert_none("two otpctl issue loops");
    let issued = env
        .list()
        .iter()
        .filter(|e| e["user"].as_str().is_some_and(|u| u.starts_with("two-")))
        .count();
    assert_eq!(issued, 50);
}

// ---------------------------------------------------------------------------
// Re-imports keep the replay state

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn reimporting_a_token_keeps_its_used_codes_refused() {
    require_root_and_peers();
    let env = TestEnv::start();
    let pam = PamService::new(&format!("socket={}", env.socket_path().display()), &[]);
    let (secret, _) = random_secret();
    let csv = write_file(&env, "reuse.csv", &format!("reuse,{secret}\n"));
    import_ok(&env, "csv", &[&csv]);

    // A login through PAM spends the current code.
    wait_for_room(30, 20);
    let login_time = now_unix();
    let code = oathtool_code_at(&secret, 30, login_time);
    let login = pam.authenticate("reuse", &format!("{code}\n"));
    assert!(
        login.status.success() && said(&login).contains("successfully authenticated"),
        "first login: {}\n{}",
        describe(&login),
        env.otpd_log()
    );
    let used = last_step(&env, "reuse");
    assert!(!used.is_empty(), "the login recorded no step");

    // The same secret again with --replace: the code stays spent.
    import_ok(&env, "csv", &["--replace", &csv]);
    assert_eq!(last_step(&env, "reuse"), used, "the replay state was reset");
    let again = pam.authenticate("reuse", &format!("{code}\n"));
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert_eq!(last_reason(&env, "reuse"), "code already used");

    // The same secret with 60-second steps: every 60-second step that
    // overlaps the spent 30-second step is spent too.
    let sixty = write_file(&env, "reuse60.csv", &format!("reuse,{secret},60\n"));
    import_ok(&env, "csv", &["--replace", &sixty]);
    let used: u64 = used.parse().expect("a step number");
    assert_eq!(
        last_step(&env, "reuse"),
        ((used + 1) * 30 - 1).div_euclid(60).to_string()
    );
    let code60 = oathtool_code_at(&secret, 60, login_time);
    assert_eq!(verify(&env, "reuse", &code60), "reject");
    assert_eq!(last_reason(&env, "reuse"), "code already used");

    // Another secret owes nothing to the old one's use.
    let (fresh, _) = random_secret();
    let other = write_file(&env, "fresh.csv", &format!("reuse,{fresh}\n"));
    import_ok(&env, "csv", &["--replace", &other]);
    assert_eq!(last_step(&env, "reuse"), "");
    assert_eq!(verify(&env, "reuse", &oathtool_code(&fresh, 30)), "accept");
}

/// A PAM service of google-authenticator-libpam alone, reading the secret
/// file `DIR/USER` as root; the service file is removed on drop.
struct GoogleAuthenticatorPam {
    name: String,
    path: PathBuf,
}

impl GoogleAuthenticatorPam {
    fn new(dir: &Path) -> GoogleAuthenticatorPam {
        let name = format!("otpd-e2e-ga-{}", std::process::id());
        let path = Path::new("/etc/pam.d").join(&name);
        fs::write(
            &path,
            format!(
                "auth required pam_google_authenticator.so secret={}/${{USER}} user=root\n",
                dir.display()
            ),
        )
        .expect("write the /etc/pam.d service file");
        GoogleAuthenticatorPam { name, path }
    }

    /// Logs `user` in with `code` through pamtester; whether it succeeded.
    fn login(&self, user: &str, code: &str) -> bool {
        let output = run_with_input(
            Command::new("pamtester").args([self.name.as_str(), user, "authenticate"]),
            &format!("{code}\n"),
        );
        output.status.success()
    }
}

impl Drop for GoogleAuthenticatorPam {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The steps that a google-authenticator file lists as used.
fn disallowed_steps(path: &Path) -> Vec<u64> {
    let text = fs::read_to_string(path).expect("read the google-authenticator file");
    text.lines()
        .find_map(|l| l.strip_prefix("\" DISALLOW_REUSE"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|w| w.parse().expect("a step number"))
        .collect()
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn google_authenticator_used_codes_stay_refused_after_import() {
    require_root_and_peers();
    let env = TestEnv::start();
    let dir = env.root().join("ga");
    fs::create_dir(&dir).expect("ga dir");
    let (gaused, gaprev) = (dir.join("gaused"), dir.join("gaprev"));
    let used_secret = google_authenticator_file(&gaused);
    let prev_secret = google_authenticator_file(&gaprev);

    // google-authenticator-libpam accepts the current code of gaused and the
    // previous step's code of gaprev, and records their steps.
    let pam = GoogleAuthenticatorPam::new(&dir);
    wait_for_room(30, 20);
    let now = now_unix();
    let step = now / 30;
    let current = oathtool_code_at(&used_secret, 30, now);
    let previous = oathtool_code_at(&prev_secret, 30, now - 30);
    assert!(pam.login("gaused", &current), "google-authenticator login");
    assert!(pam.login("gaprev", &previous), "google-authenticator login");
    assert!(!pam.login("gaused", &current), "google-authenticator reuse");
    assert_eq!(disallowed_steps(&gaused), [step]);
    assert_eq!(disallowed_steps(&gaprev), [step - 1]);

    import_ok(
        &env,
        "google-authenticator",
        &[dir.to_str().expect("utf-8")],
    );
    assert_eq!(last_step(&env, "gaused"), step.to_string());
    assert_eq!(last_step(&env, "gaprev"), (step - 1).to_string());

    // The codes used with google-authenticator are refused by otpd; a later
    // one is not.
    assert_eq!(verify(&env, "gaused", &current), "reject");
    assert_eq!(last_reason(&env, "gaused"), "code already used");
    assert_eq!(verify(&env, "gaprev", &previous), "reject");
    assert_eq!(last_reason(&env, "gaprev"), "code already used");
    assert_eq!(
        verify(&env, "gaprev", &oathtool_code_at(&prev_secret, 30, now)),
        "accept"
    );
}

// ---------------------------------------------------------------------------
// Resync repairs a replay state in the future

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn resync_moves_a_replay_state_in_the_future_back() {
    require_root_and_peers();
    let env = TestEnv::start();
    let (secret, _) = random_secret();
    let csv = write_file(&env, "ahead.csv", &format!("ahead,{secret},60\n"));
    import_ok(&env, "csv", &[&csv]);
    wait_for_room(60, 30);
    let now = now_unix();
    let code = |offset: i64| oathtool_code_at(&secret, 60, now.saturating_add_signed(offset * 60));
    assert_eq!(verify(&env, "ahead", &code(-1)), "accept");
    assert_eq!(last_step(&env, "ahead"), (now / 60 - 1).to_string());

    // A code accepted while the server clock ran ten hours ahead.
    env.sqlite("UPDATE enrolments SET last_step = last_step + 600 WHERE user = 'ahead' AND state = 'active'");
    let future: u64 = last_step(&env, "ahead").parse().expect("a step");
    assert_eq!(verify(&env, "ahead", &code(0)), "reject");
    assert_eq!(last_reason(&env, "ahead"), "code already used");

    // The code the phone showed a minute ago and the one it shows now
    // repair it.
    let output = env.otpctl(&["resync", "ahead", &code(-1), &code(0)], "");
    assert_success(&output, "otpctl resync with two consecutive codes");
    let repaired: u64 = last_step(&env, "ahead").parse().expect("a step");
    assert_eq!(repaired, now / 60);
    let entry = env
        .audit("ahead")
        .into_iter()
        .rev()
        .find(|e| e["channel"] == "cli")
        .expect("an otpctl audit entry");
    assert_eq!(entry["result"], "ok", "{entry}");
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("replay state moved back")
            && reason.contains(&future.to_string())
            && reason.contains(&repaired.to_string()),
        "{entry}"
    );

    // The next code logs in; the resync's own codes stay spent, and
    // resyncing with them again is refused.
    assert_eq!(verify(&env, "ahead", &code(1)), "accept");
    assert_eq!(verify(&env, "ahead", &code(0)), "reject");
    assert_eq!(last_reason(&env, "ahead"), "code already used");
    let again = env.otpctl(&["resync", "ahead", &code(-1), &code(0)], "");
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert_eq!(last_step(&env, "ahead"), (now / 60 + 1).to_string());
}
