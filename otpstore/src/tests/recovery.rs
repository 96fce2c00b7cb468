//! Recovery codes in the store: a set replaced as a whole, each code
//! spent once (also by concurrent uses), typed with or without its
//! hyphen, wrong ones counted toward the lock, a lock that holds, and the
//! codes gone with their token; on SQLite and, with
//! `OTPSTORE_TEST_POSTGRES`, on PostgreSQL.

use super::*;

fn request<'a>(user: &'a str, code: &'a str) -> VerifyRequest<'a> {
    VerifyRequest {
        user,
        code,
        channel: Channel::Radius,
        peer: "nas=192.0.2.1",
        reauth: None,
        first_factor_wrong: false,
    }
}

/// Verifies `code` through the routing every login takes.
fn login(store: &Store, user: &str, code: &str) -> VerifyOutcome {
    store
        .verify_codes(&[request(user, code)], NOW, &POLICY)
        .expect("verify")
        .remove(0)
}

fn codes(store: &Store, user: &str, count: u32) -> Vec<String> {
    store
        .replace_recovery_codes(user, count)
        .expect("replace")
        .expect("active token")
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect()
}

fn left(store: &Store, user: &str) -> Option<u64> {
    store.recovery_codes_left(user).expect("left")
}

fn stored_codes(store: &Store) -> u64 {
    store
        .db
        .copy_reader()
        .expect("reader")
        .tally()
        .expect("tally")
        .recovery_codes
}

#[test]
fn codes_have_the_shown_shape_and_differ() {
    let (_dir, store) = fresh();
    active_token(&store, "alice");
    let set = codes(&store, "alice", 50);
    assert_eq!(set.len(), 50);
    for code in &set {
        assert_eq!(code.len(), 11, "{code}");
        assert!(otpcore::recovery::digits(code).is_some(), "{code}");
    }
    let mut unique = set.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 50);
    assert_eq!(left(&store, "alice"), Some(50));
    assert_eq!(left(&store, "bob"), None);
    assert!(store
        .replace_recovery_codes("bob", 10)
        .expect("q")
        .is_none());
}

#[test]
fn a_code_works_once_with_or_without_its_hyphen_and_is_audited_as_recovery() {
    let (_dir, store) = fresh();
    active_token(&store, "alice");
    let set = codes(&store, "alice", 3);
    assert_eq!(login(&store, "alice", &set[0]), VerifyOutcome::Accept);
    assert_eq!(
        login(&store, "alice", &set[0]),
        VerifyOutcome::Reject(Refusal::WrongRecoveryCode)
    );
    let bare = format!("  {}\n", set[1].replace('-', ""));
    assert_eq!(login(&store, "alice", &bare), VerifyOutcome::Accept);
    assert_eq!(
        login(&store, "alice", &set[1]),
        VerifyOutcome::Reject(Refusal::WrongRecoveryCode)
    );
    assert_eq!(left(&store, "alice"), Some(1));
    // Another user's code is no code of alice's.
    active_token(&store, "bob");
    let bobs = codes(&store, "bob", 1);
    assert_eq!(
        login(&store, "alice", &bobs[0]),
        VerifyOutcome::Reject(Refusal::WrongRecoveryCode)
    );
    assert_eq!(left(&store, "bob"), Some(1));

    let trail = store.audit_entries(Some("alice"), 0).expect("audit");
    let results: Vec<(AuditResult, &str)> = trail
        .iter()
        .map(|e| (e.result, e.reason.as_str()))
        .collect();
    assert_eq!(
        results,
        [
            (AuditResult::Recovery, "recovery code accepted; 2 left"),
            (AuditResult::Fail, "wrong or used recovery code"),
            (AuditResult::Recovery, "recovery code accepted; 1 left"),
            (AuditResult::Fail, "wrong or used recovery code"),
            (AuditResult::Fail, "wrong or used recovery code"),
        ]
    );
    assert!(trail.iter().all(|e| e.channel == "radius"));
    for code in set.iter().chain(&bobs) {
        let digits = code.replace('-', "");
        assert!(
            trail
                .iter()
                .all(|e| !e.reason.contains(code.as_str()) && !e.reason.contains(&digits)),
            "a code in the audit trail"
        );
    }
}

#[test]
fn a_new_set_replaces_the_old_one_whole() {
    let (_dir, store) = fresh();
    active_token(&store, "alice");
    let old = codes(&store, "alice", 4);
    let new = codes(&store, "alice", 2);
    assert_eq!(left(&store, "alice"), Some(2));
    for code in &old {
        assert_eq!(
            login(&store, "alice", code),
            VerifyOutcome::Reject(Refusal::WrongRecoveryCode)
        );
        store.unlock("alice").expect("unlock");
    }
    assert_eq!(login(&store, "alice", &new[1]), VerifyOutcome::Accept);
    assert_eq!(left(&store, "alice"), Some(1));
}

#[test]
fn concurrent_uses_of_one_code_let_in_exactly_one() {
    let (dir, store) = fresh();
    active_token(&store, "alice");
    let set = codes(&store, "alice", 2);
    let accepted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let code = if i % 2 == 0 {
                    set[0].clone()
                } else {
                    set[0].replace('-', "")
                };
                let path = dir.path().to_owned();
                scope.spawn(move || {
                    let own = open(&path).expect("open");
                    (0..3)
                        .filter(|_| login(&own, "alice", &code) == VerifyOutcome::Accept)
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(accepted, 1);
    assert_eq!(left(&store, "alice"), Some(1));
}

#[test]
fn wrong_recovery_codes_lock_the_token_and_a_lock_holds_against_a_right_one() {
    let (_dir, store) = fresh();
    active_token(&store, "alice");
    let set = codes(&store, "alice", 2);
    let wrong = ["00000-00001", "0000000002", "00000-00003"];
    for code in wrong {
        assert!(!set.contains(&code.to_owned()));
        assert_eq!(
            login(&store, "alice", code),
            VerifyOutcome::Reject(Refusal::WrongRecoveryCode)
        );
    }
    assert_eq!(
        store.counters("alice").expect("q").map(|c| c.locked_until),
        Some(Some(NOW + 900))
    );
    assert_eq!(
        login(&store, "alice", &set[0]),
        VerifyOutcome::Reject(Refusal::Locked)
    );
    // The refused right code was not spent.
    assert_eq!(left(&store, "alice"), Some(2));
    assert!(store.unlock("alice").expect("unlock"));
    assert_eq!(login(&store, "alice", &set[0]), VerifyOutcome::Accept);
    // A success clears the failures, as a code does.
    assert_eq!(
        store.counters("alice").expect("q").map(|c| c.failures),
        Some(0)
    );
}

#[test]
fn a_wrong_recovery_code_and_wrong_codes_count_together() {
    let (_dir, store) = fresh();
    let secret = active_token(&store, "alice");
    codes(&store, "alice", 1);
    let right = PARAMS.code_at(&secret, NOW).to_string();
    let wrong = if right == "000001" {
        "000002"
    } else {
        "000001"
    };
    login(&store, "alice", wrong);
    login(&store, "alice", "12345-67890");
    assert_eq!(
        store.counters("alice").expect("q").map(|c| c.failures),
        Some(2)
    );
    // The same wrong recovery code again within a period counts once.
    assert_eq!(
        login(&store, "alice", "1234567890"),
        VerifyOutcome::Reject(Refusal::RepeatedWrongCode)
    );
    assert_eq!(
        store.counters("alice").expect("q").map(|c| c.failures),
        Some(2)
    );
}

#[test]
fn other_shapes_take_the_code_path_and_one_batch_keeps_its_order() {
    let (_dir, store) = fresh();
    let secret = active_token(&store, "alice");
    let set = codes(&store, "alice", 1);
    let code = PARAMS.code_at(&secret, NOW).to_string();
    let requests = [
        request("alice", "12345--6789"),
        request("alice", &set[0]),
        request("nobody", "12345-67890"),
        request("alice", &code),
        request("alice", "1234a-67890"),
    ];
    let outcomes = store.verify_codes(&requests, NOW, &POLICY).expect("verify");
    assert_eq!(
        outcomes,
        [
            VerifyOutcome::Reject(Refusal::Malformed),
            VerifyOutcome::Accept,
            VerifyOutcome::Reject(Refusal::NoToken),
            VerifyOutcome::Accept,
            VerifyOutcome::Reject(Refusal::Malformed),
        ]
    );
}

#[test]
fn codes_go_with_their_token() {
    let (_dir, store) = fresh();
    active_token(&store, "alice");
    codes(&store, "alice", 5);
    active_token(&store, "bob");
    let bobs = codes(&store, "bob", 5);
    assert_eq!(stored_codes(&store), 10);
    assert_eq!(store.revoke("alice").expect("revoke"), 1);
    assert_eq!(left(&store, "alice"), None);
    assert_eq!(stored_codes(&store), 5);

    // A replacement confirmed takes the old token's codes with it.
    let new = store
        .issue(&new_enrolment("bob", true), NOW)
        .expect("issue");
    store.activate(new.id, NOW).expect("activate");
    assert_eq!(left(&store, "bob"), Some(5));
    assert!(store
        .db
        .mark_confirmed(new.id, 60, 0, NOW)
        .expect("confirm")
        .is_some());
    assert_eq!(left(&store, "bob"), Some(0));
    assert_eq!(stored_codes(&store), 0);
    assert_eq!(
        login(&store, "bob", &bobs[0]),
        VerifyOutcome::Reject(Refusal::WrongRecoveryCode)
    );
    // A revoked token's enrolment takes no new set.
    let revoked = store.latest("alice").expect("q").expect("e");
    assert!(store
        .new_recovery_codes(revoked.id, 3)
        .expect("q")
        .is_none());
}

#[test]
fn a_copy_carries_the_codes_and_they_work_there_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("open");
    active_token(&store, "alice");
    let set = codes(&store, "alice", 3);
    let (spec, config) = super::copy::target(dir.path(), "recovery_copy");
    let report = store.copy_to(&spec).expect("copy");
    assert_eq!(report.source.tally.recovery_codes, 3);
    assert_eq!(report.copy.tally, report.source.tally);
    let copy = Store::from_config(&config).expect("open the copy");
    assert_eq!(left(&copy, "alice"), Some(3));
    assert_eq!(login(&copy, "alice", &set[2]), VerifyOutcome::Accept);
    assert_eq!(
        login(&copy, "alice", &set[2]),
        VerifyOutcome::Reject(Refusal::WrongRecoveryCode)
    );
}
