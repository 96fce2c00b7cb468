//! What a recovery code costs to check, beside a one-time password: the
//! store's verification of one code (a transaction of its own, as a login
//! that finds no other in its batch), in process, on SQLite in a temp dir.
//!
//! Imports N users with active tokens, gives each a set of recovery codes,
//! then times, one request at a time and user after user: a right TOTP
//! code, a right recovery code, a wrong TOTP code and a wrong recovery
//! code. For scale, it also times one argon2id check with the activation
//! passwords' parameters, the cost a recovery code would pay for every
//! stored code it is compared with if the codes were kept that way.
//! Prints the median and p99 of each, in microseconds.
//!
//! cargo build --release -p e2e --bin bench-recovery
//! target/release/bench-recovery [--users N]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use otpcore::totp::{Algorithm, TokenParams};
use otpcore::verify::Policy;
use otpstore::{Channel, ImportedToken, NewEnrolment, Store, VerifyOutcome, VerifyRequest};

/// Long steps, so that a run never crosses a step boundary.
const PERIOD: u64 = 300;
const CODES: u32 = 10;

fn main() {
    let mut users: usize = 2_000;
    e2e::bench_args("bench-recovery", |flag, value| {
        match flag {
            "--users" => users = e2e::bench_value(value, "--users N"),
            _ => return false,
        }
        true
    });
    assert!(users > 0, "--users must be > 0");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let params = TokenParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: PERIOD,
    };
    let names: Vec<String> = (0..users).map(|i| format!("user{i:06}")).collect();
    let secrets: Vec<[u8; 20]> = (0..users)
        .map(|i| {
            let mut s = [0u8; 20];
            s[..8].copy_from_slice(&(i as u64).to_be_bytes());
            s[8..].copy_from_slice(b"bench-recov!");
            s
        })
        .collect();
    let tokens: Vec<ImportedToken<'_>> = names
        .iter()
        .zip(&secrets)
        .map(|(user, secret)| ImportedToken {
            user,
            secret,
            params,
            last_step: None,
        })
        .collect();
    store
        .import_tokens(&tokens, "BENCH", false, e2e::now_unix())
        .expect("import");
    let sets: Vec<Vec<String>> = names
        .iter()
        .map(|user| {
            store
                .replace_recovery_codes(user, CODES)
                .expect("codes")
                .expect("active")
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect()
        })
        .collect();
    let policy = Policy {
        window: 1,
        max_failures: 1_000_000,
        lockout_seconds: 1,
        hotp_window: otpcore::hotp::DEFAULT_WINDOW,
    };
    let now = e2e::now_unix();
    let time_one = |user: &str, code: &str, expect_accept: bool| -> Duration {
        let request = VerifyRequest {
            user,
            code,
            channel: Channel::Pam,
            peer: "bench",
            reauth: None,
            first_factor_wrong: false,
        };
        let start = Instant::now();
        let outcome = store
            .verify_codes(&[request], now, &policy)
            .expect("verify")
            .remove(0);
        let took = start.elapsed();
        assert_eq!(outcome == VerifyOutcome::Accept, expect_accept, "{user}");
        took
    };
    let report = |name: &str, mut took: Vec<Duration>| {
        took.sort();
        let micros: Vec<f64> = took.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        println!(
            "{name:<24} n={:<6} median {:>9.1} us  p99 {:>9.1} us",
            took.len(),
            e2e::median(&micros),
            e2e::percentile(&took, 0.99).as_secs_f64() * 1e6
        );
    };
    let right_totp: Vec<Duration> = names
        .iter()
        .zip(&secrets)
        .map(|(user, secret)| time_one(user, &params.code_at(secret, now), true))
        .collect();
    let right_recovery: Vec<Duration> = names
        .iter()
        .zip(&sets)
        .map(|(user, set)| time_one(user, &set[0], true))
        .collect();
    let wrong_totp: Vec<Duration> = names
        .iter()
        .zip(&secrets)
        .map(|(user, secret)| {
            let right = params.code_at(secret, now);
            let wrong = if right.as_str() == "000001" {
                "000002"
            } else {
                "000001"
            };
            time_one(user, wrong, false)
        })
        .collect();
    let wrong_recovery: Vec<Duration> = names
        .iter()
        .map(|user| time_one(user, "00000-00001", false))
        .collect();
    report("TOTP, right", right_totp);
    report("recovery code, right", right_recovery);
    report("TOTP, wrong", wrong_totp);
    report("recovery code, wrong", wrong_recovery);

    let enrolment = store
        .issue(
            &NewEnrolment {
                user: "argon2",
                email: "argon2@example.jp",
                service_id: "BENCH",
                params,
                language: "en",
                activation_password: "12345678",
                expires_at: now + 3600,
                replace: false,
            },
            now,
        )
        .expect("issue");
    let hash = store
        .reserve_activation_attempt(enrolment.id, 5, now)
        .expect("reserve")
        .expect("a try");
    let argon2: Vec<Duration> = (0..10)
        .map(|_| {
            let start = Instant::now();
            assert!(!hash.verify("87654321").expect("verify"));
            start.elapsed()
        })
        .collect();
    report("argon2id, one check", argon2);
}
