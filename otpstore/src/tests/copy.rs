//! `Store::copy_to`: every row and column carried, decisions unchanged on
//! the copy, a target with data refused untouched, chunks crossed, and
//! targets checked without echoing a password. With
//! `OTPSTORE_TEST_POSTGRES` the source of the first tests and every target
//! but the last SQLite file are PostgreSQL databases.

use otpcore::config::{Config, StoreBackend};

use super::*;
use crate::copy::{RawAudit, RawEnrolment, CHUNK};

/// Every row of a store: `meta`, enrolments and audit, in ID order.
#[derive(Debug, PartialEq, Eq)]
struct Rows {
    meta: Vec<(String, Vec<u8>)>,
    enrolments: Vec<RawEnrolment>,
    audit: Vec<RawAudit>,
}

fn rows(store: &Store) -> Rows {
    let mut reader = store.db.copy_reader().expect("reader");
    Rows {
        meta: reader.meta().expect("meta"),
        enrolments: reader.enrolments(i64::MIN, usize::MAX).expect("enrolments"),
        audit: reader.audit(i64::MIN, usize::MAX).expect("audit"),
    }
}

/// Where a copy of the store in `dir` goes (`name` tells several apart): a
/// new database on the test server with `OTPSTORE_TEST_POSTGRES`, else a
/// new SQLite file; with the config that opens it under `dir`'s key file.
pub(super) fn target(dir: &Path, name: &str) -> (TargetSpec, Config) {
    let state = dir.join(name);
    let mut config = Config::embedded_defaults(&state);
    config.store.key_file = Some(dir.join(KEY_FILE));
    let url = match postgres_database(dir, &format!("_{name}")) {
        Some(url) => {
            config.store.backend = StoreBackend::Postgresql;
            config.store.url = Some(url.clone());
            url
        }
        None => sqlite_target(&state),
    };
    (TargetSpec::parse(&url, None).expect("target"), config)
}

/// `sqlite://` and `state/otpd.db`, `state` created 0700.
fn sqlite_target(state: &Path) -> String {
    keyfile::ensure_private_dir(state).expect("state dir");
    format!("sqlite://{}", state.join(DB_FILE).display())
}

/// A code of none of the steps within the window around `now`.
fn wrong_code(secret: &[u8], now: u64) -> String {
    let right: Vec<String> = [now - 60, now, now + 60]
        .iter()
        .map(|t| PARAMS.code_at(secret, *t).to_string())
        .collect();
    ["000001", "000002", "000003", "000004"]
        .into_iter()
        .find(|c| !right.iter().any(|r| r == c))
        .expect("a wrong code")
        .to_owned()
}

/// An active token for `user` with a secret of its own (`n`), imported:
/// no activation password to hash.
fn imported(store: &Store, user: &str, n: u8) -> Zeroizing<Vec<u8>> {
    let secret = Zeroizing::new(vec![n; 20]);
    import(store, user, &secret, 60, None);
    secret
}

/// What [`populate`] left that the copy must keep deciding the same way.
struct Fixture {
    alice: Zeroizing<Vec<u8>>,
    /// Alice's code accepted at `NOW`.
    alice_used: String,
    bob: Zeroizing<Vec<u8>>,
    carol_wrong: String,
    erin_id: i64,
    /// Kate's code accepted at `NOW` over RADIUS from `gw1`, with a
    /// renegotiation window of an hour.
    kate_used: String,
}

/// Enrolments in every state, with used steps, failures, a lock, a last
/// wrong code, a learnt drift, activation failures, an imported token and
/// an audit trail of decisions and escaped texts.
fn populate(store: &Store) -> Fixture {
    let alice = imported(store, "alice", 1);
    let alice_used = PARAMS.code_at(&alice, NOW).to_string();
    assert_eq!(
        verify(store, "alice", &alice_used, NOW),
        VerifyOutcome::Accept
    );

    let bob = imported(store, "bob", 2);
    for i in 0..3 {
        let wrong = ["000011", "000012", "000013", "000014", "000015"]
            .into_iter()
            .filter(|c| *c != PARAMS.code_at(&bob, NOW).to_string())
            .nth(i)
            .expect("a wrong code");
        assert!(matches!(
            verify(store, "bob", wrong, NOW),
            VerifyOutcome::Reject(Refusal::WrongCode)
        ));
    }

    let carol = imported(store, "carol", 3);
    let carol_wrong = wrong_code(&carol, NOW);
    assert_eq!(
        verify(store, "carol", &carol_wrong, NOW),
        VerifyOutcome::Reject(Refusal::WrongCode)
    );

    let dave = imported(store, "dave", 4);
    let fast = PARAMS.step_at(NOW) + 10;
    assert!(matches!(
        store
            .resync(
                "dave",
                &PARAMS.code_for_step(&dave, fast),
                &PARAMS.code_for_step(&dave, fast + 1),
                NOW,
                1440,
                1
            )
            .expect("resync"),
        Resync::Done { drift: 11, .. }
    ));

    let erin = store
        .issue(&new_enrolment("erin", false), NOW)
        .expect("issue");
    wrong_try(store, erin.id, 5);

    let frank = store
        .issue(&new_enrolment("frank", false), NOW)
        .expect("issue");
    store
        .activate(frank.id, NOW)
        .expect("activate")
        .expect("secret");

    let gina = store
        .issue(&new_enrolment("gina", false), NOW)
        .expect("issue");
    assert!(wrong_try(store, gina.id, 1).invalidated);

    imported(store, "hank", 5);
    assert_eq!(store.revoke("hank").expect("revoke"), 1);

    let kate = imported(store, "kate", 6);
    let kate_used = PARAMS.code_at(&kate, NOW).to_string();
    assert_eq!(
        verify_radius(store, "kate", &kate_used, "gw1", 3600, false, NOW),
        VerifyOutcome::Accept
    );

    // Jack's token came twice: the first one is replaced.
    import(store, "jack", b"12345678901234567890", 30, Some(1_000));
    import(store, "jack", b"09876543210987654321", 30, Some(2_000));

    store
        .audit(&AuditEntry {
            time: NOW,
            user: "mallory\u{202e}\n".to_owned(),
            channel: "cli".to_owned(),
            peer: "uid=0".to_owned(),
            result: AuditResult::Ok,
            reason: "a note".to_owned(),
        })
        .expect("audit");
    Fixture {
        alice,
        alice_used,
        bob,
        carol_wrong,
        erin_id: erin.id,
        kate_used,
    }
}

#[test]
fn copy_carries_every_row_and_keeps_deciding_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("open");
    let fixture = populate(&store);
    let before = rows(&store);
    let (spec, config) = target(dir.path(), "copy");

    let report = store.copy_to(&spec).expect("copy");
    assert_eq!(report.source.tally, report.copy.tally);
    assert_eq!(report.source.digest, report.copy.digest);
    let states: Vec<&str> = report
        .copy
        .tally
        .by_state
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        states,
        [
            "activated",
            "active",
            "invalidated",
            "issued",
            "replaced",
            "revoked"
        ]
    );
    assert_eq!(report.copy.tally.enrolments(), 11);
    assert_eq!(report.copy.tally.audit_rows, 7);
    assert_eq!(report.copy.tally.meta_rows, 1);
    assert_eq!(report.copy.tally.locked, 1);
    assert_eq!(rows(&store), before, "the source is unchanged");

    // Every row and column, IDs and sealed bytes included.
    let copy = Store::from_config(&config).expect("the copy opens with the same key file");
    assert_eq!(rows(&copy), before);
    assert_eq!(
        copy.audit_entries(None, 0).expect("audit"),
        store.audit_entries(None, 0).expect("audit")
    );
    for user in ["alice", "bob", "carol", "dave", "jack"] {
        assert_eq!(
            copy.counters(user).expect("q").map(|c| (
                c.last_step,
                c.failures,
                c.locked_until,
                c.drift
            )),
            store.counters(user).expect("q").map(|c| (
                c.last_step,
                c.failures,
                c.locked_until,
                c.drift
            )),
            "{user}"
        );
    }

    // The code used before the copy stays used; the next one works.
    assert_eq!(
        verify(&copy, "alice", &fixture.alice_used, NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );
    assert_eq!(
        verify(
            &copy,
            "alice",
            &PARAMS.code_at(&fixture.alice, NOW + 60),
            NOW + 60
        ),
        VerifyOutcome::Accept
    );
    // The renegotiation window came along: the same code from the same
    // client is accepted again, from another client it is a replay.
    assert_eq!(
        verify_radius(
            &copy,
            "kate",
            &fixture.kate_used,
            "gw1",
            3600,
            false,
            NOW + 5
        ),
        VerifyOutcome::Reauth
    );
    assert!(matches!(
        verify_radius(
            &copy,
            "kate",
            &fixture.kate_used,
            "gw2",
            3600,
            false,
            NOW + 6
        ),
        VerifyOutcome::Reject(_)
    ));
    // The lock holds; the last wrong code's fingerprint (keyed with the ID)
    // still recognises it.
    assert_eq!(
        verify(&copy, "bob", &PARAMS.code_at(&fixture.bob, NOW), NOW),
        VerifyOutcome::Reject(Refusal::Locked)
    );
    assert_eq!(
        verify(&copy, "carol", &fixture.carol_wrong, NOW + 1),
        VerifyOutcome::Reject(Refusal::RepeatedWrongCode)
    );
    assert_eq!(
        copy.counters("carol").expect("q").map(|c| c.failures),
        Some(1)
    );
    // The activation password hash and its count came along.
    let hash = copy
        .reserve_activation_attempt(fixture.erin_id, 5, NOW)
        .expect("reserve")
        .expect("a try");
    assert!(hash.verify("4321").expect("check"));
    assert_eq!(
        copy.latest("erin")
            .expect("q")
            .map(|e| e.activation_failures),
        Some(2)
    );

    // New rows take IDs after the copied ones.
    let last = before.enrolments.iter().map(|e| e.id).max().expect("rows");
    let zoe = copy
        .issue(&new_enrolment("zoe", false), NOW)
        .expect("issue");
    assert!(zoe.id > last, "{} after {last}", zoe.id);
    let audit_rows = before.audit.len();
    verify(&copy, "nobody", "123456", NOW);
    let after = rows(&copy);
    assert_eq!(after.audit.len(), audit_rows + 7);
    assert!(after.audit.windows(2).all(|w| w[0].id < w[1].id));
}

#[test]
fn copy_refuses_a_target_that_holds_data_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("open");
    populate(&store);
    let (spec, config) = target(dir.path(), "full");
    store.copy_to(&spec).expect("first copy");
    let copy = Store::from_config(&config).expect("open copy");
    imported(&copy, "only_on_the_copy", 9);
    let held = rows(&copy);

    let err = store.copy_to(&spec).expect_err("a second copy is refused");
    match (&err, config.store.backend) {
        (
            StoreError::TargetNotEmpty {
                target,
                enrolments,
                audit_rows,
                meta_rows,
            },
            StoreBackend::Postgresql,
        ) => {
            assert_eq!(
                (*enrolments, *audit_rows, *meta_rows),
                (held.enrolments.len() as u64, held.audit.len() as u64, 1)
            );
            assert_eq!(*target, spec.shown());
        }
        (StoreError::Unsafe { reason, .. }, StoreBackend::Sqlite) => {
            assert!(reason.contains("new file"), "{reason}");
        }
        (other, _) => panic!("unexpected: {other}"),
    }
    assert!(err.to_string().contains("nothing was written") || err.to_string().contains("exists"));
    assert_eq!(rows(&copy), held, "the target is unchanged");

    // A target that an otpd opened (its key check only) holds data too; an
    // existing SQLite file, even empty, is not a new file.
    let (spec, config) = target(dir.path(), "opened");
    match config.store.backend {
        StoreBackend::Postgresql => {
            drop(Store::from_config(&config).expect("an otpd opens it"));
            let err = store.copy_to(&spec).expect_err("refused");
            assert!(
                matches!(
                    err,
                    StoreError::TargetNotEmpty {
                        enrolments: 0,
                        audit_rows: 0,
                        meta_rows: 1,
                        ..
                    }
                ),
                "{err}"
            );
            let opened = Store::from_config(&config).expect("open");
            assert!(rows(&opened).enrolments.is_empty());
        }
        StoreBackend::Sqlite => {
            let path = config.state_dir.join(DB_FILE);
            fs::write(&path, b"").expect("an empty file");
            assert!(matches!(
                store.copy_to(&spec),
                Err(StoreError::Unsafe { .. })
            ));
            assert_eq!(fs::metadata(&path).expect("kept").len(), 0);
        }
    }
}

#[test]
fn copy_streams_chunks_between_backends_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source_dir = dir.path().join("source");
    let store = Store::open(&source_dir).expect("open");
    // More than two chunks of enrolments, more than one of audit rows.
    let secrets: Vec<[u8; 20]> = (0..2 * CHUNK + 3)
        .map(|i| {
            let mut s = [7u8; 20];
            s[..8].copy_from_slice(&(i as u64).to_be_bytes());
            s
        })
        .collect();
    let names: Vec<String> = (0..secrets.len()).map(|i| format!("user{i:05}")).collect();
    let tokens: Vec<ImportedToken<'_>> = names
        .iter()
        .zip(&secrets)
        .enumerate()
        .map(|(i, (user, secret))| ImportedToken {
            user,
            secret,
            params: PARAMS,
            last_step: Some(i as u64),
        })
        .collect();
    store
        .import_tokens(&tokens, "SVC", false, NOW)
        .expect("import");
    for i in 0..CHUNK + 2 {
        store
            .audit(&AuditEntry {
                time: NOW + i as u64,
                user: names[i % names.len()].clone(),
                channel: "cli".to_owned(),
                peer: "uid=0".to_owned(),
                result: AuditResult::Ok,
                reason: "imported".to_owned(),
            })
            .expect("audit");
    }
    let source = rows(&store);

    let (spec, config) = target(&source_dir, "middle");
    let there = store.copy_to(&spec).expect("copy there");
    assert_eq!(there.copy.tally.enrolments(), (2 * CHUNK + 3) as u64);
    assert_eq!(there.copy.tally.audit_rows, (CHUNK + 2) as u64);
    let expected_sum: i64 = (0..(2 * CHUNK + 3) as i64).sum();
    assert_eq!(there.copy.tally.last_step_sum, expected_sum);
    let middle = Store::from_config(&config).expect("open the copy");
    assert_eq!(rows(&middle), source);

    let back_dir = dir.path().join("back");
    let back_spec = TargetSpec::parse(&sqlite_target(&back_dir), None).expect("target");
    let back = middle.copy_to(&back_spec).expect("copy back");
    assert_eq!(back.copy.digest, there.source.digest);
    assert_eq!(back.copy.backend, "sqlite");
    let db = back_dir.join(DB_FILE);
    assert_eq!(mode(&db), 0o600);
    fs::copy(source_dir.join(KEY_FILE), back_dir.join(KEY_FILE)).expect("key file");
    fs::set_permissions(back_dir.join(KEY_FILE), fs::Permissions::from_mode(0o600)).expect("chmod");
    let back_store = Store::open(&back_dir).expect("open the copy back");
    assert_eq!(rows(&back_store), source);
    let user = &names[names.len() - 1];
    let secret = &secrets[secrets.len() - 1];
    assert_eq!(
        verify(&back_store, user, &PARAMS.code_at(secret, NOW), NOW),
        VerifyOutcome::Accept
    );
}

#[test]
fn targets_are_checked_and_never_shown_with_a_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = |to: &str, password_file: Option<&Path>| -> String {
        TargetSpec::parse(to, password_file)
            .err()
            .expect("refused")
            .to_string()
    };
    assert!(refused("sqlite://relative/otpd.db", None).starts_with("--to: "));
    assert!(refused("/var/lib/otpd/otpd.db", None).contains("sqlite:///"));
    assert!(refused("mysql://otpd@db/otpd", None).contains("postgresql://"));
    let password_file = dir.path().join("db.password");
    fs::write(&password_file, "s3cr3t-pw\n").expect("write");
    fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(refused("sqlite:///tmp/x.db", Some(&password_file)).starts_with("--password-file: "));
    let over_network = refused(
        "postgresql://otpd:s3cr3t-pw@db.example.com/otpd?sslmode=disable",
        None,
    );
    assert!(over_network.contains("verify-full"), "{over_network}");
    assert!(!over_network.contains("s3cr3t"));
    fs::set_permissions(&password_file, fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = refused(
        "postgresql://otpd@db.example.com/otpd",
        Some(&password_file),
    );
    assert!(
        loose.starts_with("--password-file: ") && loose.contains("0644"),
        "{loose}"
    );

    let spec =
        TargetSpec::parse("postgresql://otpd:s3cr3t-pw@db.example.com/otpd", None).expect("parses");
    assert_eq!(
        spec.shown(),
        "postgresql://otpd@db.example.com:5432/otpd?sslmode=verify-full"
    );
    let file = TargetSpec::parse("sqlite:///var/lib/otpd-new/otpd.db", None).expect("parses");
    assert_eq!(file.shown(), "sqlite:///var/lib/otpd-new/otpd.db");

    // Nothing answers on this port: the error names the target without
    // its password, and nothing is left behind.
    let store = Store::open(dir.path()).expect("open");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let unreachable = TargetSpec::parse(
        &format!("postgresql://otpd:s3cr3t-pw@127.0.0.1:{port}/otpd?sslmode=disable"),
        None,
    )
    .expect("parses");
    let err = store.copy_to(&unreachable).expect_err("unreachable");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Target { .. }), "{text}");
    assert!(
        text.starts_with(&format!("postgresql://otpd@127.0.0.1:{port}/otpd")),
        "{text}"
    );
    assert!(!text.contains("s3cr3t"), "{text}");
}

#[test]
fn copy_carries_hardware_tokens_and_their_counters() {
    use super::hotp::{assigned, code, hardware};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("open");
    assigned(&store, "alice", "OATH0001");
    assert_eq!(
        verify(&store, "alice", &code(3), NOW),
        VerifyOutcome::Accept
    );
    store
        .import_hardware(&[hardware("OATH0002", Some(7))], "SVC", NOW)
        .expect("load");
    let before = rows(&store);
    let (spec, config) = target(dir.path(), "copy");

    let report = store.copy_to(&spec).expect("copy");
    assert_eq!(report.source.digest, report.copy.digest);
    assert_eq!(report.copy.tally.by_state.get("unassigned"), Some(&1));
    let copy = Store::from_config(&config).expect("the copy opens with the same key file");
    assert_eq!(rows(&copy), before);

    // The counter carried: used codes stay used, the next one works.
    assert_eq!(
        verify(&copy, "alice", &code(3), NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );
    assert_eq!(verify(&copy, "alice", &code(4), NOW), VerifyOutcome::Accept);
    // Serial numbers stay taken; the unassigned token is there to assign.
    assert!(matches!(
        copy.import_hardware(&[hardware("OATH0001", None)], "SVC", NOW),
        Err(StoreError::SerialTaken(_))
    ));
    copy.assign("OATH0002", "bob", false, NOW).expect("assign");
    assert_eq!(
        verify(&copy, "bob", &code(7), NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );
    assert_eq!(verify(&copy, "bob", &code(8), NOW), VerifyOutcome::Accept);
}
