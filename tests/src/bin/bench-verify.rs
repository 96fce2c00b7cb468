//! What verifying an event-based (HOTP) code costs beside a time-based
//! (TOTP) one, in the store as otpd calls it and in the decision alone.
//!
//! A SQLite store in a temp dir holds `--users N` time-based tokens and N
//! event-based ones (loaded as hardware tokens and assigned). Each round
//! verifies every user's next valid code through `Store::verify_batch` in
//! batches of `--batch B` (as otpd's verifier thread does: one transaction,
//! audit rows, the conditional UPDATE), first all time-based users, then
//! all event-based ones; then times `--decisions M` decisions alone
//! (`otpcore::verify::decide`, window 1: 3 HMACs; `otpcore::hotp::decide`,
//! look-ahead 10: 21 HMACs, every candidate compared). Prints µs per
//! verification and per decision.
//!
//! cargo build --release -p e2e --bin bench-verify
//! target/release/bench-verify [--users N] [--batch B] [--decisions M]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use otpcore::hotp::{self, HotpParams, DEFAULT_WINDOW};
use otpcore::totp::{hotp as hotp_code, Algorithm, TokenParams};
use otpcore::verify::{self, Attempt, Counters, Policy};
use otpstore::{
    Channel, HardwareToken, ImportedToken, Store, TokenKind, VerifyOutcome, VerifyRequest,
};

/// Long steps, so that a run never crosses a step boundary.
const PERIOD: u64 = 300;
/// The event-based tokens' last used counter: past the first look-ahead,
/// so each decision computes the full 21 candidates.
const USED: u64 = 1_000;

const POLICY: Policy = Policy {
    window: 1,
    hotp_window: DEFAULT_WINDOW,
    max_failures: 5,
    lockout_seconds: 900,
};

fn secret(kind: u8, n: usize) -> Vec<u8> {
    let mut s = vec![kind; 20];
    s[..8].copy_from_slice(&(n as u64).to_be_bytes());
    s
}

/// Verifies `codes[i]` for `users[i]`, `batch` at a time; µs per code.
/// Every code is valid: an event-based one is refused only when it equals
/// the code of a used counter within the look-ahead (about 1 in 10^5),
/// and such refusals are counted in `refused`.
fn verify_all(
    store: &Store,
    users: &[String],
    codes: &[String],
    batch: usize,
    now: u64,
    refused: &mut usize,
) -> f64 {
    let started = Instant::now();
    for (users, codes) in users.chunks(batch).zip(codes.chunks(batch)) {
        let requests: Vec<VerifyRequest<'_>> = users
            .iter()
            .zip(codes)
            .map(|(user, code)| VerifyRequest {
                user,
                code,
                channel: Channel::Pam,
                peer: "bench",
                reauth: None,
                first_factor_wrong: false,
            })
            .collect();
        let outcomes = store.verify_batch(&requests, now, &POLICY).expect("verify");
        for outcome in outcomes {
            match outcome {
                VerifyOutcome::Accept => {}
                VerifyOutcome::Reject(_) => *refused += 1,
                VerifyOutcome::Error(e) => panic!("{e:?}"),
                VerifyOutcome::Reauth => panic!("a renegotiation without a RADIUS client"),
            }
        }
    }
    started.elapsed().as_secs_f64() * 1e6 / users.len() as f64
}

fn main() {
    let (mut users, mut batch, mut decisions) = (2_000usize, 64usize, 200_000usize);
    e2e::bench_args("bench-verify", |flag, value| {
        match flag {
            "--users" => users = e2e::bench_value(value, "--users N"),
            "--batch" => batch = e2e::bench_value(value, "--batch B"),
            "--decisions" => decisions = e2e::bench_value(value, "--decisions M"),
            _ => return false,
        }
        true
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let now = e2e::now_unix();
    let totp = TokenParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: PERIOD,
    };
    let totp_users: Vec<String> = (0..users).map(|n| format!("t{n}")).collect();
    let hotp_users: Vec<String> = (0..users).map(|n| format!("h{n}")).collect();
    let totp_secrets: Vec<Vec<u8>> = (0..users).map(|n| secret(1, n)).collect();
    let hotp_secrets: Vec<Vec<u8>> = (0..users).map(|n| secret(2, n)).collect();
    let imported: Vec<ImportedToken<'_>> = totp_users
        .iter()
        .zip(&totp_secrets)
        .map(|(user, secret)| ImportedToken {
            user,
            secret,
            params: totp,
            last_step: None,
        })
        .collect();
    store
        .import_tokens(&imported, "BENCH", false, now)
        .expect("import");
    let serials: Vec<String> = (0..users).map(|n| format!("HW{n:08}")).collect();
    let hardware: Vec<HardwareToken<'_>> = serials
        .iter()
        .zip(&hotp_secrets)
        .map(|(serial, secret)| HardwareToken {
            serial,
            secret,
            kind: TokenKind::Hotp,
            params: TokenParams { period: 0, ..totp },
            drift: 0,
            last_step: Some(USED),
        })
        .collect();
    store
        .import_hardware(&hardware, "BENCH", now)
        .expect("load");
    for (serial, user) in serials.iter().zip(&hotp_users) {
        store.assign(serial, user, false, now).expect("assign");
    }

    println!("{users} users of each kind, batches of {batch}, SQLite synchronous=normal");
    // Three rounds: the previous, current and next step (TOTP), the next
    // three counters (HOTP); which kind goes first alternates.
    for round in 0..3u64 {
        let step = now / PERIOD - 1 + round;
        let totp_codes: Vec<String> = totp_secrets
            .iter()
            .map(|s| totp.code_for_step(s, step).to_string())
            .collect();
        let hotp_codes: Vec<String> = hotp_secrets
            .iter()
            .map(|s| hotp_code(s, USED + 1 + round, 6, Algorithm::Sha1).to_string())
            .collect();
        let (mut totp_refused, mut hotp_refused) = (0, 0);
        let totp_all =
            |refused: &mut usize| verify_all(&store, &totp_users, &totp_codes, batch, now, refused);
        let hotp_all =
            |refused: &mut usize| verify_all(&store, &hotp_users, &hotp_codes, batch, now, refused);
        let (t, h) = if round % 2 == 0 {
            let t = totp_all(&mut totp_refused);
            (t, hotp_all(&mut hotp_refused))
        } else {
            let h = hotp_all(&mut hotp_refused);
            (totp_all(&mut totp_refused), h)
        };
        println!(
            "round {round}: verify_batch TOTP {t:.1} µs/code, HOTP {h:.1} µs/code \
             (refused: TOTP {totp_refused}, HOTP {hotp_refused})"
        );
    }

    let counters = Counters {
        last_step: Some(USED),
        ..Counters::default()
    };
    let key = secret(3, 0);
    let hotp_params = HotpParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
    };
    let look_ahead = Policy {
        window: DEFAULT_WINDOW,
        ..POLICY
    };
    let totp_code = totp.code_at(&key, now).to_string();
    let event_code = hotp_code(&key, USED + 5, 6, Algorithm::Sha1).to_string();
    let started = Instant::now();
    for _ in 0..decisions {
        let counters = Counters {
            last_step: Some(now / PERIOD - 2),
            ..Counters::default()
        };
        let verdict = verify::decide(&key, &totp, &totp_code, now, &POLICY, &counters, [0; 16]);
        assert!(matches!(verdict, verify::Verdict::Accept { .. }));
    }
    let t = started.elapsed().as_secs_f64() * 1e6 / decisions as f64;
    let started = Instant::now();
    for _ in 0..decisions {
        let verdict = hotp::decide(
            &key,
            &hotp_params,
            &event_code,
            Attempt::new(now, &look_ahead, &counters, [0; 16]),
        );
        assert!(matches!(verdict, verify::Verdict::Accept { .. }));
    }
    let h = started.elapsed().as_secs_f64() * 1e6 / decisions as f64;
    println!("decision alone: TOTP (window 1) {t:.2} µs, HOTP (look-ahead 10) {h:.2} µs");
}
