use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use otpcore::enrol::State;
use otpcore::totp::Algorithm;
use rusqlite::{Connection, TransactionBehavior};

use super::*;

mod copy;
mod hotp;
mod notices;
mod recovery;

const PARAMS: TokenParams = TokenParams {
    algorithm: Algorithm::Sha1,
    digits: 6,
    period: 60,
};
const NOW: u64 = 1_800_000_000;

fn new_enrolment(user: &str, replace: bool) -> NewEnrolment<'_> {
    NewEnrolment {
        user,
        email: "alice@example.jp",
        service_id: "SVC",
        params: PARAMS,
        language: "ja",
        activation_password: "4321",
        expires_at: NOW + 3600,
        replace,
    }
}

/// The store of the test whose files are in `dir`: SQLite there, or, when
/// `OTPSTORE_TEST_POSTGRES` holds a superuser URL of a PostgreSQL server, a
/// database of its own on that server (the same one for the same `dir`),
/// with the key file in `dir`. The tests that call this run unchanged on
/// both backends; the others test what only SQLite has.
fn open(dir: &Path) -> Result<Store> {
    let Some(url) = postgres_database(dir, "") else {
        return Store::open(dir);
    };
    let mut config = otpcore::config::Config::embedded_defaults(dir);
    config.store.backend = otpcore::config::StoreBackend::Postgresql;
    config.store.url = Some(url);
    config.store.pool_size = 4;
    Store::from_config(&config)
}

/// With `OTPSTORE_TEST_POSTGRES`, the URL of a database of the test whose
/// files are in `dir` (`suffix` tells several apart), created on first use.
fn postgres_database(dir: &Path, suffix: &str) -> Option<String> {
    let admin = std::env::var("OTPSTORE_TEST_POSTGRES").ok()?;
    static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let name = format!(
        "otpstore_{:016x}{suffix}",
        dir.to_string_lossy()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b))
                .wrapping_mul(0x100_0000_01b3))
    );
    {
        let mut created = CREATED.lock().expect("lock");
        if !created.contains(&name) {
            psql(&admin, &format!("CREATE DATABASE {name}"));
            created.push(name.clone());
        }
    }
    let (server, _) = admin.rsplit_once('/').expect("a database in the URL");
    Some(format!("{server}/{name}"))
}

/// Runs `sql` with psql in the database at `url`, stopping at the first
/// error (the test fails with psql's message); psql's output, trimmed.
fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args(["-qAt", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A store of the test's own ([`open`]) in a new temp dir, which lasts as
/// long as the returned guard.
fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("open");
    (dir, store)
}

/// Issues an enrolment for `user` at [`NOW`], replacing nothing.
fn issue(store: &Store, user: &str) -> Enrolment {
    store
        .issue(&new_enrolment(user, false), NOW)
        .expect("issue")
}

/// Resyncs `user` at [`NOW`] with two consecutive codes, searching a day
/// of steps either way, with a window of one step.
fn resync(store: &Store, user: &str, first: &str, second: &str) -> Resync {
    store
        .resync(user, first, second, NOW, 1440, 1)
        .expect("resync")
}

/// The wrong activation passwords counted for the enrolment `id`.
fn activation_failures(store: &Store, id: i64) -> u32 {
    store
        .db
        .by_id(id)
        .expect("q")
        .expect("exists")
        .activation_failures
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("exists").permissions().mode() & 0o777
}

#[test]
fn first_open_creates_private_files_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    drop(Store::open(&state).expect("first open"));
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join(KEY_FILE)), 0o600);
    assert_eq!(mode(&state.join(DB_FILE)), 0o600);
    Store::open(&state).expect("second open");
}

#[test]
fn wrong_or_missing_key_is_refused() {
    let (dir, store) = fresh();
    issue(&store, "alice");
    drop(store);
    let key = dir.path().join(KEY_FILE);
    fs::remove_file(&key).expect("remove key");
    assert!(matches!(open(dir.path()), Err(StoreError::MissingKey(_))));
    keyfile::write_new_key(&key).expect("new key");
    assert!(matches!(open(dir.path()), Err(StoreError::WrongKey(_))));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = open(dir.path()).err().expect("loose key refused");
    assert!(err.to_string().contains("0600"), "{err}");
}

#[test]
fn secrets_and_passwords_are_not_stored_in_the_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let e = issue(&store, "alice");
    let secret = store.secret(&e).expect("secret");
    let (hash, sealed): (String, Vec<u8>) = Connection::open(dir.path().join(DB_FILE))
        .expect("db")
        .query_row("SELECT password_hash, secret FROM enrolments", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("row");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("4321"));
    assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_slice()));
    let stored = store
        .reserve_activation_attempt(e.id, 5, NOW)
        .expect("reserve")
        .expect("a try");
    assert!(stored.verify("4321").expect("check"));
    assert!(!stored.verify("1234").expect("check"));
}

#[test]
fn enrolment_walks_issue_activate_confirm() {
    let (_dir, store) = fresh();
    let e = issue(&store, "alice");
    assert_eq!(e.state, State::Issued);
    assert_eq!(e.params, PARAMS);
    let found = store
        .by_ids("SVC", &e.user_id)
        .expect("query")
        .expect("found");
    assert_eq!(found.id, e.id);
    assert!(store.by_ids("OTHER", &e.user_id).expect("query").is_none());

    let secret = store
        .activate(e.id, NOW + 10)
        .expect("activate")
        .expect("secret");
    assert_eq!(secret.len(), 20);
    assert!(
        store.activate(e.id, NOW + 11).expect("again").is_none(),
        "secret handed out once"
    );
    assert!(store
        .db
        .mark_confirmed(e.id, 30, 42, NOW + 20)
        .expect("confirm")
        .is_some());
    assert!(store
        .db
        .mark_confirmed(e.id, 30, 42, NOW + 21)
        .expect("confirm twice")
        .is_none());
    let active = store.active("alice").expect("query").expect("active");
    assert_eq!(active.params.period, 30);
    assert_eq!(active.last_step, Some(42));
    assert_eq!(store.secret(&active).expect("secret"), secret);
}

#[test]
fn first_code_confirms_or_adapts() {
    let (_dir, store) = fresh();
    let e = issue(&store, "alice");
    assert_eq!(
        store
            .confirm_first_code(&e, "000000", NOW, 1, true)
            .expect("q"),
        FirstCode::NotActivated
    );
    let secret = store
        .activate(e.id, NOW)
        .expect("activate")
        .expect("secret");
    let e = store.latest("alice").expect("q").expect("e");
    // NOW + 40 lies in the second half of a minute: its 30-second code
    // is no 60-second code nearby.
    let t = NOW + 40;
    let thirty = TokenParams {
        period: 30,
        ..PARAMS
    };
    let code = thirty.code_at(&secret, t);
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    assert_eq!(
        store
            .confirm_first_code(&e, &spaced, t, 1, false)
            .expect("q"),
        FirstCode::Wrong
    );
    assert_eq!(
        store
            .confirm_first_code(&e, &spaced, t, 1, true)
            .expect("q"),
        FirstCode::Active {
            period: 30,
            adapted: true
        }
    );
    let active = store.active("alice").expect("q").expect("active");
    assert_eq!(
        (active.params.period, active.last_step),
        (30, Some(thirty.step_at(t)))
    );
}

#[test]
fn confirming_a_token_words_one_audit_line_per_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("open");
    let adapting = otpcore::config::TokenConfig::default();
    let fixed = otpcore::config::TokenConfig {
        adapt_period: false,
        ..adapting.clone()
    };
    let checked = |e: &Enrolment, code: &str, t: u64, token| {
        store.confirm_token(e, code, t, token).expect("confirm")
    };

    // A 30-second app: refused without adaptation, adapted with it.
    let (alice, secret) = activated(&store, "alice");
    let t = NOW + 40;
    let code = TokenParams {
        period: 30,
        ..PARAMS
    }
    .code_at(&secret, t);
    let wrong = checked(&alice, &code, t, &fixed);
    assert_eq!(wrong.outcome, FirstCode::Wrong);
    let adapted = checked(&alice, &code, t, &adapting);
    assert_eq!(
        adapted.outcome,
        FirstCode::Active {
            period: 30,
            adapted: true
        }
    );

    // The configured period: no adaptation.
    let (bob, secret) = activated(&store, "bob");
    let code60 = PARAMS.code_at(&secret, NOW);
    let plain = checked(&bob, &code60, NOW, &adapting);
    assert_eq!(
        plain.outcome,
        FirstCode::Active {
            period: 60,
            adapted: false
        }
    );
    let lines: Vec<_> = [&wrong, &adapted, &plain]
        .iter()
        .map(|c| c.audit.clone().expect("an audit line"))
        .collect();
    assert_eq!(
        lines,
        [
            (
                AuditResult::Fail,
                "confirmation refused: wrong first code".to_owned()
            ),
            (
                AuditResult::Ok,
                "first code confirmed, token active; period adapted to 30 s (the app ignores period=60)"
                    .to_owned()
            ),
            (
                AuditResult::Ok,
                "first code confirmed, token active (period 60 s)".to_owned()
            ),
        ]
    );
    for (_, reason) in &lines {
        assert!(!reason.contains(code.as_str()) && !reason.contains(code60.as_str()));
    }

    // Confirmed meanwhile: nothing was decided about the code.
    let again = checked(&bob, &code60, NOW, &adapting);
    assert_eq!(
        again,
        FirstCodeChecked {
            outcome: FirstCode::NotActivated,
            audit: None
        }
    );
}

const POLICY: Policy = Policy {
    window: 1,
    hotp_window: 10,
    max_failures: 3,
    lockout_seconds: 900,
};

/// `user`'s enrolment, issued and activated at [`NOW`], as stored then;
/// and its secret.
fn activated(store: &Store, user: &str) -> (Enrolment, Zeroizing<Vec<u8>>) {
    let e = issue(store, user);
    let secret = store
        .activate(e.id, NOW)
        .expect("activate")
        .expect("secret");
    (store.latest(user).expect("q").expect("e"), secret)
}

/// An active token for `user`; returns its secret.
fn active_token(store: &Store, user: &str) -> Zeroizing<Vec<u8>> {
    let (e, secret) = activated(store, user);
    assert!(store
        .db
        .mark_confirmed(e.id, 60, 0, NOW)
        .expect("confirm")
        .is_some());
    secret
}

/// A request of `code` for `user` from `peer`, outside RADIUS's window and
/// first factor.
fn request<'a>(user: &'a str, code: &'a str, channel: Channel, peer: &'a str) -> VerifyRequest<'a> {
    VerifyRequest {
        user,
        code,
        channel,
        peer,
        reauth: None,
        first_factor_wrong: false,
    }
}

fn verify(store: &Store, user: &str, code: &str, now: u64) -> VerifyOutcome {
    store
        .verify_batch(&[request(user, code, Channel::Pam, "uid=0")], now, &POLICY)
        .expect("verify")
        .remove(0)
}

#[test]
fn verification_accepts_once_and_audits() {
    let (_dir, store) = fresh();
    let secret = active_token(&store, "alice");
    let code = PARAMS.code_at(&secret, NOW);
    assert_eq!(verify(&store, "alice", &code, NOW), VerifyOutcome::Accept);
    assert_eq!(
        verify(&store, "alice", &code, NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );
    assert_eq!(
        verify(&store, "bob", &code, NOW),
        VerifyOutcome::Reject(Refusal::NoToken)
    );
    let audit = store.audit_entries(None, NOW).expect("audit");
    let reasons: Vec<&str> = audit.iter().map(|a| a.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["code accepted", "code already used", "no active token"]
    );
    assert!(audit
        .iter()
        .all(|a| !a.reason.contains(code.as_str()) && !a.peer.contains(code.as_str())));
}

/// The whole audit trail of `store`, each entry as `part` maps it.
fn trail<T>(store: &Store, part: impl Fn(AuditEntry) -> T) -> Vec<T> {
    store
        .audit_entries(None, 0)
        .expect("audit")
        .into_iter()
        .map(part)
        .collect()
}

#[test]
fn a_batch_of_any_size_audits_every_request_in_its_order() {
    let (_dir, store) = fresh();
    let mut expected = Vec::new();
    for size in [1, 3, 31, 32, 33, 63, 70] {
        let names: Vec<(String, String)> = (0..size)
            .map(|i| (format!("nobody{size}-{i}"), format!("peer {i}")))
            .collect();
        let batch: Vec<VerifyRequest<'_>> = names
            .iter()
            .map(|(user, peer)| request(user, "123456", Channel::Pam, peer))
            .collect();
        let outcomes = store.verify_batch(&batch, NOW, &POLICY).expect("verify");
        assert_eq!(outcomes.len(), size);
        expected.extend(names);
    }
    assert_eq!(trail(&store, |a| (a.user, a.peer)), expected);
}

/// Runs `postgres` in the PostgreSQL database of the test whose files are
/// in `dir` ([`open`]) with psql, or `sqlite` in its SQLite file; returns
/// psql's output (nothing for SQLite).
fn run_sql(dir: &Path, postgres: &str, sqlite: &str) -> String {
    match postgres_database(dir, "") {
        Some(url) => psql(&url, postgres),
        None => {
            Connection::open(dir.join(DB_FILE))
                .expect("db")
                .execute_batch(sqlite)
                .expect("sql");
            String::new()
        }
    }
}

/// A batch whose write fails keeps nothing: no spent step, no failure, no
/// audit row, no transaction left open (on PostgreSQL the write and its
/// COMMIT go to the server together, and the failed write turns the
/// COMMIT into a rollback); the batches after it are served.
#[test]
fn a_batch_whose_write_fails_keeps_nothing_and_the_next_is_served() {
    let (dir, store) = fresh();
    let alice = active_token(&store, "alice");
    let code = PARAMS.code_at(&alice, NOW);
    let before = trail(&store, |a| a.reason).len();
    run_sql(
        dir.path(),
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$; \
         CREATE TRIGGER refuse BEFORE UPDATE ON enrolments FOR EACH ROW EXECUTE FUNCTION refuse()",
        "CREATE TRIGGER refuse BEFORE UPDATE ON enrolments BEGIN SELECT RAISE(ABORT, 'refused'); END",
    );
    for batch in [
        vec![request("alice", &code, Channel::Pam, "uid=0")],
        vec![
            request("nobody", &code, Channel::Radius, "nas=gw"),
            request("alice", "000000", Channel::Radius, "nas=gw"),
        ],
    ] {
        for _ in 0..6 {
            assert!(store.verify_batch(&batch, NOW, &POLICY).is_err());
        }
    }
    assert_eq!(trail(&store, |a| a.reason).len(), before);
    let open = run_sql(
        dir.path(),
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        "",
    );
    assert!(
        open.is_empty() || open == "0",
        "{open} transactions left open"
    );
    run_sql(
        dir.path(),
        "SET lock_timeout = '2s'; DROP TRIGGER refuse ON enrolments",
        "DROP TRIGGER refuse",
    );
    assert_eq!(verify(&store, "alice", &code, NOW), VerifyOutcome::Accept);
    assert_eq!(
        verify(&store, "alice", &code, NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );
    assert_eq!(
        trail(&store, |a| a.reason)[before..],
        ["code accepted", "code already used"]
    );
}

#[test]
fn one_batch_decides_in_order_and_audits_every_request() {
    let (_dir, store) = fresh();
    let alice = active_token(&store, "alice");
    let bob = active_token(&store, "bob");
    let code = PARAMS.code_at(&alice, NOW);
    let next = PARAMS.code_at(&alice, NOW + 60);
    let bob_codes: Vec<String> = [NOW, NOW + 60, NOW + 120]
        .iter()
        .map(|t| PARAMS.code_at(&bob, *t).to_string())
        .collect();
    let wrong = ["000000", "111111", "222222"]
        .into_iter()
        .find(|c| !bob_codes.iter().any(|b| b == c))
        .expect("a wrong code");
    let radius = |user, code| request(user, code, Channel::Radius, "nas=gw");
    let batch = [
        radius("zed", &code),
        radius("bob", wrong),
        radius("alice", &code),
        radius("alice", &code),
        radius("bob", wrong),
        radius("alice", &next),
    ];
    let outcomes = store
        .verify_batch(&batch, NOW + 60, &POLICY)
        .expect("verify");
    assert_eq!(
        outcomes,
        [
            VerifyOutcome::Reject(Refusal::NoToken),
            VerifyOutcome::Reject(Refusal::WrongCode),
            VerifyOutcome::Accept,
            VerifyOutcome::Reject(Refusal::Replay),
            VerifyOutcome::Reject(Refusal::RepeatedWrongCode),
            VerifyOutcome::Accept,
        ]
    );
    let reasons = trail(&store, |a| (a.user, a.reason));
    let expected: Vec<(String, String)> = batch
        .iter()
        .zip(&outcomes)
        .map(|(r, o)| {
            let reason = match o {
                VerifyOutcome::Accept => "code accepted",
                VerifyOutcome::Reauth => "code accepted again within the renegotiation window",
                VerifyOutcome::Reject(refusal) => refusal.as_str(),
                VerifyOutcome::Error(_) => "token record unreadable",
            };
            (r.user.to_owned(), reason.to_owned())
        })
        .collect();
    assert_eq!(reasons, expected);
    let counters = store.counters("alice").expect("q").expect("active");
    assert_eq!(counters.last_step, Some(PARAMS.step_at(NOW + 60)));
    assert_eq!(
        store.counters("bob").expect("q").expect("active").failures,
        1
    );
}

#[test]
fn a_large_import_is_not_held_to_the_deadline_of_one_call() {
    let (_dir, store) = fresh();
    let names: Vec<String> = (0..1_500).map(|i| format!("user{i}")).collect();
    let secret = [7u8; 20];
    let tokens: Vec<ImportedToken<'_>> = names
        .iter()
        .map(|user| ImportedToken {
            user,
            secret: &secret,
            params: PARAMS,
            last_step: None,
        })
        .collect();
    store
        .import_tokens(&tokens, "SVC", false, NOW)
        .expect("one import of 1,500 tokens");
    assert_eq!(store.list().expect("list").len(), 1_500);
}

#[test]
fn concurrent_connections_accept_a_code_once() {
    let (dir, store) = fresh();
    let secret = active_token(&store, "alice");
    let code = PARAMS.code_at(&secret, NOW).to_string();
    let accepted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let code = code.clone();
                let path = dir.path().to_owned();
                scope.spawn(move || {
                    let own = open(&path).expect("open");
                    (0..5)
                        .filter(|_| verify(&own, "alice", &code, NOW) == VerifyOutcome::Accept)
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(accepted, 1);
}

#[test]
fn lockout_unlock_and_resync() {
    let (_dir, store) = fresh();
    let secret = active_token(&store, "alice");
    for wrong in ["000001", "000002", "000003"] {
        assert!(matches!(
            verify(&store, "alice", wrong, NOW),
            VerifyOutcome::Reject(Refusal::WrongCode)
        ));
    }
    let code = PARAMS.code_at(&secret, NOW);
    assert_eq!(
        verify(&store, "alice", &code, NOW),
        VerifyOutcome::Reject(Refusal::Locked)
    );
    assert_eq!(
        store.counters("alice").expect("q").map(|c| c.locked_until),
        Some(Some(NOW + 900))
    );
    assert!(store.unlock("alice").expect("unlock"));
    assert_eq!(verify(&store, "alice", &code, NOW), VerifyOutcome::Accept);

    // The phone runs ten minutes fast.
    let fast = PARAMS.step_at(NOW) + 10;
    let first = PARAMS.code_for_step(&secret, fast);
    let second = PARAMS.code_for_step(&secret, fast + 1);
    assert_eq!(resync(&store, "alice", &second, &first), Resync::NotFound);
    assert_eq!(
        resync(&store, "alice", &first, &second),
        Resync::Done {
            drift: 11,
            step: fast + 1
        }
    );
    let next = PARAMS.code_for_step(&secret, fast + 2);
    assert_eq!(
        verify(&store, "alice", &next, NOW + 60),
        VerifyOutcome::Accept
    );
}

#[test]
fn import_is_all_or_nothing() {
    let (_dir, store) = fresh();
    active_token(&store, "bob");
    let secret = b"12345678901234567890";
    let token = |user| ImportedToken {
        user,
        secret,
        params: PARAMS,
        last_step: None,
    };
    let err = store.import_tokens(&[token("alice"), token("bob")], "SVC", false, NOW);
    assert!(matches!(err, Err(StoreError::HasActive { .. })));
    assert!(store.active("alice").expect("q").is_none(), "half imported");
    store
        .import_tokens(&[token("alice"), token("bob")], "SVC", true, NOW)
        .expect("import");
    let alice = store.active("alice").expect("q").expect("active");
    assert_eq!(store.secret(&alice).expect("secret").as_slice(), secret);
    let code = PARAMS.code_at(secret, NOW);
    assert_eq!(verify(&store, "bob", &code, NOW), VerifyOutcome::Accept);
}

#[test]
fn revoke_and_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("a")).expect("open");
    let secret = active_token(&store, "alice");
    let copy = dir.path().join("copy.db");
    store.backup(&copy).expect("backup");
    assert_eq!(mode(&copy), 0o600);
    assert!(
        store.backup(&copy).is_err(),
        "an existing file is not overwritten"
    );
    assert_eq!(store.revoke("alice").expect("revoke"), 1);
    let code = PARAMS.code_at(&secret, NOW);
    assert_eq!(
        verify(&store, "alice", &code, NOW),
        VerifyOutcome::Reject(Refusal::NoToken)
    );
    // The copy, with the key file beside it, is a store that still knows alice.
    let restored = dir.path().join("b");
    fs::create_dir(&restored).expect("dir");
    fs::set_permissions(&restored, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::copy(&copy, restored.join(DB_FILE)).expect("copy db");
    fs::copy(dir.path().join("a").join(KEY_FILE), restored.join(KEY_FILE)).expect("copy key");
    let back = Store::open(&restored).expect("open the copy");
    assert_eq!(verify(&back, "alice", &code, NOW), VerifyOutcome::Accept);
}

#[test]
fn expired_link_does_not_activate() {
    let (_dir, store) = fresh();
    let e = issue(&store, "alice");
    assert!(store
        .activate(e.id, NOW + 3600)
        .expect("activate")
        .is_none());
    assert!(store.extend(e.id, NOW + 7200).expect("extend"));
    assert!(store
        .activate(e.id, NOW + 3600)
        .expect("activate")
        .is_some());
}

/// A wrong password on a reserved try: checked against the hash the
/// reservation returned, then counted.
fn wrong_try(store: &Store, id: i64, limit: u32) -> ActivationFailure {
    let hash = store
        .reserve_activation_attempt(id, limit, NOW)
        .expect("reserve")
        .expect("a try");
    assert!(!hash.verify("0000").expect("check"));
    store
        .activation_failed(id, limit)
        .expect("count")
        .expect("issued")
}

#[test]
fn wrong_passwords_invalidate_at_the_limit() {
    let (_dir, store) = fresh();
    let e = issue(&store, "alice");
    for n in 1..5 {
        let f = wrong_try(&store, e.id, 5);
        assert_eq!((f.failures, f.invalidated), (n, false));
    }
    let f = wrong_try(&store, e.id, 5);
    assert_eq!((f.failures, f.invalidated), (5, true));
    assert!(store
        .reserve_activation_attempt(e.id, 5, NOW)
        .expect("reserve")
        .is_none());
    assert!(store.activation_failed(e.id, 5).expect("count").is_none());
    assert!(store.activate(e.id, NOW).expect("activate").is_none());
    let latest = store.latest("alice").expect("q").expect("exists");
    assert_eq!(
        (latest.state, latest.activation_failures),
        (State::Invalidated, 5)
    );
    // An invalidated enrolment does not block a new issue.
    issue(&store, "alice");
}

#[test]
fn tries_are_taken_before_the_check_and_never_exceed_the_limit() {
    let (dir, store) = fresh();
    let e = issue(&store, "alice");
    // Eight connections (otpd and otpctl share the file) reserve at once.
    let taken = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let store = open(dir.path()).expect("open");
                    store
                        .reserve_activation_attempt(e.id, 3, NOW)
                        .expect("reserve")
                        .is_some()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|taken| *taken)
            .count()
    });
    assert_eq!(taken, 3);
    let pending = store.db.by_id(e.id).expect("q").expect("exists");
    assert_eq!(
        (pending.state, pending.activation_failures),
        (State::Issued, 3)
    );
    // Any wrong one of them, at the limit, invalidates.
    let f = store
        .activation_failed(e.id, 3)
        .expect("count")
        .expect("issued");
    assert_eq!((f.failures, f.invalidated), (3, true));

    // A right password hands its try back: the count keeps wrong ones.
    let e = issue(&store, "bob");
    wrong_try(&store, e.id, 5);
    let hash = store
        .reserve_activation_attempt(e.id, 5, NOW)
        .expect("reserve")
        .expect("a try");
    assert_eq!(activation_failures(&store, e.id), 2);
    assert!(hash.verify("4321").expect("check"));
    assert!(store.activate(e.id, NOW).expect("activate").is_some());
    let activated = store.db.by_id(e.id).expect("q").expect("exists");
    assert_eq!(
        (activated.state, activated.activation_failures),
        (State::Activated, 1)
    );
    // A try still being checked then finds nothing to count.
    assert!(store.activation_failed(e.id, 5).expect("count").is_none());

    // No try on an expired link.
    let e = issue(&store, "carol");
    assert!(store
        .reserve_activation_attempt(e.id, 5, e.expires_at)
        .expect("reserve")
        .is_none());
    assert_eq!(activation_failures(&store, e.id), 0);
}

#[test]
fn replace_keeps_the_old_token_until_confirmed() {
    let (_dir, store) = fresh();
    let old = issue(&store, "alice");
    assert!(matches!(
        store.issue(&new_enrolment("alice", false), NOW),
        Err(StoreError::HasPending { .. })
    ));
    store.activate(old.id, NOW).expect("activate");
    store
        .db
        .mark_confirmed(old.id, 60, 1, NOW)
        .expect("confirm");
    assert!(matches!(
        store.issue(&new_enrolment("alice", false), NOW),
        Err(StoreError::HasActive { .. })
    ));
    let new = store
        .issue(&new_enrolment("alice", true), NOW)
        .expect("replace");
    assert_eq!(
        store.active("alice").expect("q").map(|e| e.id),
        Some(old.id)
    );
    assert_eq!(
        store.pending("alice").expect("q").map(|e| e.id),
        Some(new.id)
    );
    store.activate(new.id, NOW).expect("activate");
    store
        .db
        .mark_confirmed(new.id, 60, 2, NOW)
        .expect("confirm");
    assert_eq!(
        store.active("alice").expect("q").map(|e| e.id),
        Some(new.id)
    );
    assert_eq!(store.list().expect("list").len(), 1);
}

#[test]
fn withdraw_removes_only_issued() {
    let (_dir, store) = fresh();
    let e = issue(&store, "alice");
    assert!(store.withdraw(e.id).expect("withdraw"));
    assert!(store.latest("alice").expect("q").is_none());
}

#[test]
fn audit_round_trip() {
    let (_dir, store) = fresh();
    for (t, user) in [(10, "alice"), (20, "bob"), (30, "alice")] {
        store
            .audit(&AuditEntry {
                time: t,
                user: user.to_owned(),
                channel: Channel::Cli.as_str().to_owned(),
                peer: "uid=0".to_owned(),
                result: AuditResult::Ok,
                reason: "issued".to_owned(),
            })
            .expect("audit");
    }
    assert_eq!(store.audit_entries(None, 0).expect("all").len(), 3);
    let alice: Vec<u64> = store
        .audit_entries(Some("alice"), 15)
        .expect("q")
        .iter()
        .map(|e| e.time)
        .collect();
    assert_eq!(alice, vec![30]);
}

/// The `i`th entry of a long trail: three users, both results, texts that
/// tell the entries apart.
fn numbered_entry(i: u64) -> AuditEntry {
    AuditEntry {
        time: NOW + i,
        user: ["alice", "bob", "carol"][(i % 3) as usize].to_owned(),
        channel: Channel::Pam.as_str().to_owned(),
        peer: format!("uid={i} service=sshd"),
        result: if i.is_multiple_of(2) {
            AuditResult::Ok
        } else {
            AuditResult::Fail
        },
        reason: format!("entry {i}"),
    }
}

/// Why a test stopped a stream of audit entries.
enum Stopped {
    Store(StoreError),
    Enough,
}

impl From<StoreError> for Stopped {
    fn from(e: StoreError) -> Self {
        Stopped::Store(e)
    }
}

#[test]
fn the_audit_trail_streams_in_order_over_many_pages() {
    let (_dir, store) = fresh();
    let page = postgres::AUDIT_PAGE as u64;
    let rows = 3 * page + 7;
    // Written in one transaction, as a copy writes them.
    let written: Vec<crate::copy::RawAudit> = (0..rows)
        .map(|i| {
            let e = numbered_entry(i);
            crate::copy::RawAudit {
                id: i64::try_from(i + 1).expect("id"),
                time: i64::try_from(e.time).expect("time"),
                user: e.user,
                channel: e.channel,
                peer: e.peer,
                result: e.result.as_str().to_owned(),
                reason: e.reason,
            }
        })
        .collect();
    let mut writer = store.db.copy_writer().expect("writer");
    writer.write_audit(&written).expect("write");
    writer.commit().expect("commit");

    // Every entry, oldest first, each as written.
    let mut next = 0u64;
    store
        .audit_each(None, 0, |entry| {
            assert_eq!(entry, numbered_entry(next));
            next += 1;
            Ok::<(), StoreError>(())
        })
        .expect("stream");
    assert_eq!(next, rows);

    // One user's from a time, across pages of the whole trail.
    let mut bobs = Vec::new();
    store
        .audit_each(Some("bob"), NOW + page / 2, |entry| {
            bobs.push(entry);
            Ok::<(), StoreError>(())
        })
        .expect("stream");
    let expected: Vec<AuditEntry> = (page / 2..rows)
        .filter(|i| i % 3 == 1)
        .map(numbered_entry)
        .collect();
    assert_eq!(bobs, expected);

    // The caller's error stops the reading at once and comes back.
    let mut seen = 0u64;
    let stopped = store.audit_each(None, 0, |_| {
        seen += 1;
        if seen == page + 1 {
            Err(Stopped::Enough)
        } else {
            Ok(())
        }
    });
    match stopped {
        Err(Stopped::Enough) => {}
        Err(Stopped::Store(e)) => panic!("the store failed: {e}"),
        Ok(()) => panic!("the stream went on past the caller's error"),
    }
    assert_eq!(seen, page + 1);

    // Nothing to read is no error.
    let mut none = 0;
    store
        .audit_each(Some("nobody"), 0, |_| {
            none += 1;
            Ok::<(), StoreError>(())
        })
        .expect("stream");
    assert_eq!(none, 0);
}

#[test]
fn pruning_the_audit_trail_deletes_old_entries_in_bounded_batches() {
    let (_dir, store) = fresh();
    for t in (0..25).map(|i| NOW - 100 + i * 10) {
        store
            .audit(&AuditEntry {
                time: t,
                user: "alice".to_owned(),
                channel: Channel::Pam.as_str().to_owned(),
                peer: "uid=0".to_owned(),
                result: AuditResult::Fail,
                reason: "wrong code".to_owned(),
            })
            .expect("audit");
    }
    // Ten entries are older than NOW: at most four go per call.
    assert_eq!(store.prune_audit(NOW, 4).expect("prune"), 4);
    assert_eq!(store.prune_audit(NOW, 4).expect("prune"), 4);
    assert_eq!(store.prune_audit(NOW, 4).expect("prune"), 2);
    assert_eq!(store.prune_audit(NOW, 4).expect("prune"), 0);
    let kept: Vec<u64> = store
        .audit_entries(None, 0)
        .expect("all")
        .iter()
        .map(|e| e.time)
        .collect();
    assert_eq!(
        kept,
        (10..25).map(|i| NOW - 100 + i * 10).collect::<Vec<_>>()
    );
}

#[test]
fn audit_results_read_in_one_spelling_old_ones_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    for result in [AuditResult::Ok, AuditResult::Fail, AuditResult::Error] {
        store
            .audit(&AuditEntry {
                time: 10,
                user: "alice".to_owned(),
                channel: Channel::Cli.as_str().to_owned(),
                peer: "uid=0".to_owned(),
                result,
                reason: "a note".to_owned(),
            })
            .expect("audit");
    }
    // otpctl once wrote a wrong first code as `reject`.
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("db");
    conn.execute(
        "INSERT INTO audit (time, user, channel, peer, result, reason) \
         VALUES (20, 'alice', 'cli', 'uid=0', 'reject', 'first code does not match')",
        [],
    )
    .expect("insert");
    let stored: Vec<String> = conn
        .prepare("SELECT result FROM audit ORDER BY id")
        .expect("select")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    assert_eq!(stored, ["ok", "fail", "error", "reject"]);
    let read: Vec<AuditResult> = store
        .audit_entries(None, 0)
        .expect("audit")
        .iter()
        .map(|a| a.result)
        .collect();
    assert_eq!(
        read,
        [
            AuditResult::Ok,
            AuditResult::Fail,
            AuditResult::Error,
            AuditResult::Fail
        ]
    );
    // A result no otpd writes is an error that names the column, not a
    // guess.
    conn.execute("UPDATE audit SET result = 'maybe' WHERE time = 20", [])
        .expect("update");
    let error = store.audit_entries(None, 0).expect_err("unknown result");
    assert!(error.to_string().contains("invalid result"), "{error}");
}

#[test]
fn audit_texts_are_stored_escaped() {
    let (_dir, store) = fresh();
    store
        .audit(&AuditEntry {
            time: 10,
            user: "ali\u{202e}ecb".to_owned(),
            channel: Channel::Cli.as_str().to_owned(),
            peer: "uid=0\nforged".to_owned(),
            result: AuditResult::Ok,
            reason: "unlocked".to_owned(),
        })
        .expect("audit");
    let request = VerifyRequest {
        user: "bob\u{2028}x",
        code: "123456",
        channel: Channel::Pam,
        peer: "uid=0 service=sshd\u{200b}",
        reauth: None,
        first_factor_wrong: false,
    };
    store
        .verify_batch(&[request], NOW, &POLICY)
        .expect("verify");
    let audit = store.audit_entries(None, 0).expect("audit");
    let shown: Vec<(&str, &str)> = audit
        .iter()
        .map(|a| (a.user.as_str(), a.peer.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("ali\\u{202e}ecb", "uid=0\\u{a}forged"),
            ("bob\\u{2028}x", "uid=0 service=sshd\\u{200b}"),
        ]
    );
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path()).expect("open"));
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("db");
    conn.execute("UPDATE schema_version SET version = 99", [])
        .expect("bump");
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::TooNew(99))
    ));
}

/// A second connection to the store's SQLite file, set up as the store's
/// own are (`synchronous = NORMAL`: its commit does not wait for an fsync,
/// which on a busy disk could outlast the writer's busy timeout).
fn lock_holder(dir: &Path) -> Connection {
    let conn = Connection::open(dir.join(DB_FILE)).expect("db");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
    conn
}

/// Runs `write` on a store of its own while another connection holds
/// the write lock for `hold` and then commits, as otpd does between
/// logins. The write must wait for the lock, not fail.
fn while_another_connection_writes<T: Send>(
    dir: &Path,
    hold: Duration,
    write: impl FnOnce(&Store) -> Result<T> + Send,
) -> T {
    let writer = Store::open(dir).expect("open");
    let mut conn = lock_holder(dir);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("begin");
    std::thread::scope(|scope| {
        let done = scope.spawn(move || write(&writer));
        std::thread::sleep(hold);
        tx.execute(
            "INSERT INTO audit (time, user, channel, peer, result, reason) \
             VALUES (1, 'x', 'cli', 'uid=0', 'ok', 'another writer')",
            [],
        )
        .expect("write");
        tx.commit().expect("commit");
        done.join()
            .expect("thread")
            .expect("the write waits for the lock instead of failing")
    })
}

/// Hashes a password as `issue` does, to time it.
fn hash_like_issue() {
    ActivationHash::new("4321").expect("hash");
}

#[test]
fn writers_wait_for_another_connections_write_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let activated = issue(&store, "carol");
    let secret = store
        .activate(activated.id, NOW)
        .expect("activate")
        .expect("secret");
    let activated = store.latest("carol").expect("q").expect("carol");
    drop(store);

    // Long enough for the writer to reach its transaction; `issue`
    // hashes the activation password first.
    let hold = Duration::from_millis(800);
    let started = std::time::Instant::now();
    hash_like_issue();
    // At most 4 s: the writer gives up after the store's 5 s busy
    // timeout, and on a loaded machine three hashes can outlast it.
    let issue_hold = (hold + started.elapsed() * 3).min(Duration::from_secs(4));

    let secret_bytes = b"12345678901234567890";
    while_another_connection_writes(dir.path(), hold, |s| {
        let token = ImportedToken {
            user: "alice",
            secret: secret_bytes,
            params: PARAMS,
            last_step: None,
        };
        s.import_tokens(&[token], "SVC", false, NOW)
    });
    let issued = while_another_connection_writes(dir.path(), issue_hold, |s| {
        s.issue(&new_enrolment("bob", false), NOW)
    });
    assert_eq!(issued.state, State::Issued);
    let code = PARAMS.code_at(&secret, NOW);
    let confirmed = while_another_connection_writes(dir.path(), hold, |s| {
        s.confirm_first_code(&activated, &code, NOW, 1, false)
    });
    assert_eq!(
        confirmed,
        FirstCode::Active {
            period: 60,
            adapted: false
        }
    );
    let fast = PARAMS.step_at(NOW) + 5;
    let first = PARAMS.code_for_step(secret_bytes, fast);
    let second = PARAMS.code_for_step(secret_bytes, fast + 1);
    let resynced = while_another_connection_writes(dir.path(), hold, |s| {
        s.resync("alice", &first, &second, NOW, 100, 1)
    });
    assert_eq!(
        resynced,
        Resync::Done {
            drift: 6,
            step: fast + 1
        }
    );
    let store = Store::open(dir.path()).expect("open");
    let writes = store
        .audit_entries(Some("x"), 0)
        .expect("audit")
        .iter()
        .filter(|e| e.reason == "another writer")
        .count();
    assert_eq!(writes, 4);
}

/// Imports `secret` for `user` with `period`, replacing what it has.
fn import(store: &Store, user: &str, secret: &[u8], period: u64, last_step: Option<u64>) {
    let token = ImportedToken {
        user,
        secret,
        params: TokenParams { period, ..PARAMS },
        last_step,
    };
    store
        .import_tokens(&[token], "SVC", true, NOW)
        .expect("import");
}

#[test]
fn reimporting_a_secret_keeps_its_replay_state() {
    let (_dir, store) = fresh();
    let secret = b"12345678901234567890";
    import(&store, "alice", secret, 30, None);
    let thirty = TokenParams {
        period: 30,
        ..PARAMS
    };
    let code = thirty.code_at(secret, NOW);
    assert_eq!(verify(&store, "alice", &code, NOW), VerifyOutcome::Accept);
    let used = thirty.step_at(NOW);

    // The same secret again: the accepted code stays spent.
    import(&store, "alice", secret, 30, None);
    let last = |store: &Store| store.active("alice").expect("q").expect("active").last_step;
    assert_eq!(last(&store), Some(used));
    assert_eq!(
        verify(&store, "alice", &code, NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );
    // An older replay state from the import file does not lower it.
    import(&store, "alice", secret, 30, Some(used - 10));
    assert_eq!(last(&store), Some(used));
    // A later one raises it.
    import(&store, "alice", secret, 30, Some(used + 2));
    assert_eq!(last(&store), Some(used + 2));

    // With 60-second steps, every step that overlaps a spent one is spent.
    import(&store, "alice", secret, 60, None);
    assert_eq!(last(&store), Some(((used + 3) * 30 - 1) / 60));
    assert_eq!(
        verify(&store, "alice", &PARAMS.code_at(secret, NOW + 60), NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );

    // A revoked token's use counts as well.
    assert_eq!(store.revoke("alice").expect("revoke"), 1);
    import(&store, "alice", secret, 60, None);
    assert_eq!(last(&store), Some(((used + 3) * 30 - 1) / 60));

    // Another secret starts afresh; so does the same secret of another user.
    import(&store, "alice", b"another secret 12345", 60, None);
    assert_eq!(last(&store), None);
    import(&store, "bob", secret, 30, None);
    assert_eq!(
        store.active("bob").expect("q").expect("bob").last_step,
        None
    );
}

#[test]
fn resync_moves_a_replay_state_ahead_of_the_clock_back() {
    let (_dir, store) = fresh();
    let secret = active_token(&store, "alice");
    let now_step = PARAMS.step_at(NOW);
    // A code accepted while the server clock ran ten hours ahead.
    let ahead = NOW + 36_000;
    let code = PARAMS.code_at(&secret, ahead);
    assert_eq!(verify(&store, "alice", &code, ahead), VerifyOutcome::Accept);
    let current = PARAMS.code_for_step(&secret, now_step + 1);
    assert_eq!(
        verify(&store, "alice", &current, NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );

    let first = PARAMS.code_for_step(&secret, now_step - 1);
    let second = PARAMS.code_for_step(&secret, now_step);
    assert_eq!(
        resync(&store, "alice", &first, &second),
        Resync::MovedBack {
            drift: 0,
            from: PARAMS.step_at(ahead),
            step: now_step
        }
    );
    assert_eq!(
        verify(&store, "alice", &current, NOW),
        VerifyOutcome::Accept
    );
    // The resync's codes are spent; given again they are refused, and
    // nothing moves.
    assert_eq!(
        verify(&store, "alice", &second, NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );
    assert_eq!(resync(&store, "alice", &first, &second), Resync::Spent);
    assert_eq!(
        store
            .counters("alice")
            .expect("q")
            .and_then(|c| c.last_step),
        Some(now_step + 1)
    );
    // Codes beyond the search are not found.
    let far = PARAMS.code_for_step(&secret, now_step + 2000);
    let after = PARAMS.code_for_step(&secret, now_step + 2001);
    assert_eq!(resync(&store, "alice", &far, &after), Resync::NotFound);
    assert_eq!(resync(&store, "bob", &first, &second), Resync::NoToken);
}

#[test]
fn a_write_blocked_beyond_the_wait_is_told_apart_as_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let mut conn = lock_holder(dir.path());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("begin");
    let err = store.unlock("alice").expect_err("busy beyond the wait");
    assert!(err.is_busy(), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    drop(tx);
    assert!(!store.unlock("alice").expect("free again"));
    assert!(!StoreError::Corrupt(1).is_busy());
}

/// Verifies `code` for `user` as RADIUS client `client` with a renegotiation
/// window of `seconds`, the first factor right or wrong.
fn verify_radius(
    store: &Store,
    user: &str,
    code: &str,
    client: &str,
    seconds: u64,
    first_factor_wrong: bool,
    now: u64,
) -> VerifyOutcome {
    let request = VerifyRequest {
        user,
        code,
        channel: Channel::Radius,
        peer: "nas=vpn",
        reauth: Some(Reauth { client, seconds }),
        first_factor_wrong,
    };
    store
        .verify_batch(&[request], now, &POLICY)
        .expect("verify")
        .remove(0)
}

#[test]
fn the_same_code_from_the_same_client_is_reaccepted_within_the_window_only() {
    let (_dir, store) = fresh();
    let secret = active_token(&store, "alice");
    let code = PARAMS.code_at(&secret, NOW);
    let radius = |code: &str, client, seconds, now| {
        verify_radius(&store, "alice", code, client, seconds, false, now)
    };
    let refused = |outcome| matches!(outcome, VerifyOutcome::Reject(_));
    assert_eq!(radius(&code, "gw1", 30, NOW), VerifyOutcome::Accept);
    assert!(refused(radius(&code, "gw2", 30, NOW + 1)));
    assert!(refused(radius(&code, "gw1", 0, NOW + 2)));
    assert_eq!(radius(&code, "gw1", 30, NOW + 3), VerifyOutcome::Reauth);
    assert_eq!(radius(&code, "gw1", 30, NOW + 29), VerifyOutcome::Reauth);
    assert!(refused(radius(&code, "gw1", 30, NOW + 30)));
    let entries = store.audit_entries(Some("alice"), 0).expect("audit");
    let reauths = entries
        .iter()
        .filter(|e| e.result == AuditResult::Reauth)
        .count();
    assert_eq!(reauths, 2, "{entries:?}");
    // A later code moves the window to itself: the earlier one is a replay.
    store.unlock("alice").expect("unlock");
    let next = PARAMS.code_at(&secret, NOW + 60);
    assert_eq!(radius(&next, "gw1", 600, NOW + 60), VerifyOutcome::Accept);
    assert!(refused(radius(&code, "gw1", 600, NOW + 61)));
    // The other channels never reaccept.
    assert!(refused(verify(&store, "alice", &next, NOW + 61)));
    assert_eq!(radius(&next, "gw1", 600, NOW + 62), VerifyOutcome::Reauth);
    // A PAM login of a later code leaves nothing to reaccept.
    let pam = PARAMS.code_at(&secret, NOW + 120);
    assert_eq!(
        verify(&store, "alice", &pam, NOW + 120),
        VerifyOutcome::Accept
    );
    assert!(refused(radius(&next, "gw1", 600, NOW + 121)));
    // Another user's accepted code is not this user's.
    let bob = active_token(&store, "bob");
    let bobs = PARAMS.code_at(&bob, NOW + 180);
    assert_eq!(
        verify_radius(&store, "bob", &bobs, "gw1", 600, false, NOW + 180),
        VerifyOutcome::Accept
    );
    assert!(refused(radius(&bobs, "gw1", 600, NOW + 181)));
    // A code accepted through a client without a window leaves nothing to
    // reaccept, whatever window a later request of it carries.
    let later = PARAMS.code_at(&secret, NOW + 240);
    assert_eq!(radius(&later, "gw1", 0, NOW + 240), VerifyOutcome::Accept);
    assert!(refused(radius(&later, "gw1", 600, NOW + 241)));
}

#[test]
fn a_locked_token_is_not_reaccepted() {
    let (_dir, store) = fresh();
    let secret = active_token(&store, "alice");
    let code = PARAMS.code_at(&secret, NOW);
    assert_eq!(
        verify_radius(&store, "alice", &code, "gw1", 600, false, NOW),
        VerifyOutcome::Accept
    );
    for n in 0..POLICY.max_failures {
        verify_radius(
            &store,
            "alice",
            &code,
            "gw1",
            600,
            true,
            NOW + 1 + u64::from(n),
        );
    }
    assert_eq!(
        verify_radius(&store, "alice", &code, "gw1", 600, false, NOW + 10),
        VerifyOutcome::Reject(Refusal::Locked)
    );
}

#[test]
fn a_wrong_first_factor_keeps_the_code_and_counts_toward_the_lock() {
    let (_dir, store) = fresh();
    let secret = active_token(&store, "alice");
    let code = PARAMS.code_at(&secret, NOW);
    assert_eq!(
        verify_radius(&store, "alice", &code, "gw1", 0, true, NOW),
        VerifyOutcome::Reject(Refusal::WrongFirstFactor)
    );
    assert_eq!(
        store
            .counters("alice")
            .expect("counters")
            .map(|c| c.failures),
        Some(1)
    );
    // The code's step was not consumed.
    assert_eq!(
        verify_radius(&store, "alice", &code, "gw1", 0, false, NOW + 1),
        VerifyOutcome::Accept
    );
    for n in 0..POLICY.max_failures {
        assert_eq!(
            verify_radius(
                &store,
                "alice",
                "000000",
                "gw1",
                0,
                true,
                NOW + 2 + u64::from(n)
            ),
            VerifyOutcome::Reject(Refusal::WrongFirstFactor)
        );
    }
    let counters = store.counters("alice").expect("counters").expect("token");
    assert!(counters.locked_until.is_some(), "{counters:?}");
    let entries = store.audit_entries(Some("alice"), 0).expect("audit");
    assert!(entries
        .iter()
        .any(|e| e.reason == "wrong first factor" && e.result == AuditResult::Fail));
    assert!(entries.iter().all(|e| !e.reason.contains(code.as_str())));
}

#[test]
fn a_challenge_is_taken_once_by_its_user_and_client_before_it_expires() {
    let (_dir, store) = fresh();
    let open = || {
        store
            .open_challenge("alice", "gw1", NOW, NOW + 120)
            .expect("open")
    };
    let state = open();
    assert_ne!(open(), state, "fresh random States");
    assert!(store
        .take_challenge(&state, "alice", "gw1", NOW + 1)
        .expect("take"));
    assert!(!store
        .take_challenge(&state, "alice", "gw1", NOW + 2)
        .expect("taken once"));
    for (user, client, at) in [
        ("bob", "gw1", NOW),
        ("alice", "gw2", NOW),
        ("alice", "gw1", NOW + 120),
    ] {
        let state = open();
        assert!(
            !store
                .take_challenge(&state, user, client, at)
                .expect("take"),
            "{user} {client} {at}"
        );
        // Refused once, the State is gone even for its own user.
        assert!(!store
            .take_challenge(&state, "alice", "gw1", NOW + 1)
            .expect("take"));
    }
    let mut forged = open();
    forged[0] ^= 1;
    assert!(!store
        .take_challenge(&forged, "alice", "gw1", NOW)
        .expect("forged"));
    assert!(!store
        .take_challenge(&forged[..16], "alice", "gw1", NOW)
        .expect("short"));
}

#[test]
fn concurrent_takes_of_one_challenge_succeed_once() {
    let (dir, store) = fresh();
    let state = store
        .open_challenge("alice", "gw1", NOW, NOW + 120)
        .expect("open");
    let taken = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            let own = open(dir.path()).expect("open");
            let taken = &taken;
            s.spawn(move || {
                if own
                    .take_challenge(&state, "alice", "gw1", NOW)
                    .expect("take")
                {
                    taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(taken.into_inner(), 1);
}

#[test]
fn expired_challenges_are_removed_when_a_new_one_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store
        .open_challenge("alice", "gw1", NOW, NOW + 120)
        .expect("open");
    let state = store
        .open_challenge("bob", "gw1", NOW + 120, NOW + 240)
        .expect("open");
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("db");
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM radius_challenges", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 1);
    let stored: Vec<u8> = conn
        .query_row("SELECT digest FROM radius_challenges", [], |r| r.get(0))
        .expect("digest");
    assert_ne!(stored, state.to_vec(), "the State itself is not stored");
}
