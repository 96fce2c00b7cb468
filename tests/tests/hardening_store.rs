//! The store under pressure, end to end:
//!
//! - Writers never fail on a locked database: concurrent `otpctl issue`,
//!   `otpctl import`, `otpctl confirm` and `POST /api/v1/confirm` beside a
//!   verify load on the socket, and two `otpctl issue` loops alone, all
//!   succeed every time.
//!
//! Root only. Peers: oathtool, aiosmtpd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;

use e2e::{
    assert_success, describe, e2e_enabled, now_unix, oathtool_code, socket_exchange, TestEnv,
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
fn writers_beside_a_verify_load_never_find_the_database_locked() {
    if !e2e_enabled() {
        return;
    }
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
fn two_issue_loops_never_find_the_database_locked() {
    if !e2e_enabled() {
        return;
    }
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
