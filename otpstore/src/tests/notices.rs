//! Security notices from the store: handed over after the change, once
//! per event, to the address recorded at issue, only for the events asked
//! for and never for a token without an address; on SQLite and, with
//! `OTPSTORE_TEST_POSTGRES`, on PostgreSQL.

use std::sync::{Arc, Mutex};

use otpcore::config::TokenConfig;
use otpcore::notice::{Event, Notice, What};

use super::hotp::{assigned, hardware};
use super::*;

/// A store whose notices of `events` land in the returned list.
fn collecting(events: &[Event]) -> (tempfile::TempDir, Store, Arc<Mutex<Vec<Notice>>>) {
    let (dir, mut store) = fresh();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    store.set_notices(
        events,
        Box::new(move |n| sink.lock().expect("lock").push(n)),
    );
    (dir, store, seen)
}

/// The notices handed over since the last call.
fn taken(seen: &Mutex<Vec<Notice>>) -> Vec<Notice> {
    std::mem::take(&mut *seen.lock().expect("lock"))
}

/// Issues to `email` in `language`, activates and returns the enrolment
/// and its secret.
fn issued_to(
    store: &Store,
    email: &str,
    language: &str,
    replace: bool,
) -> (Enrolment, Zeroizing<Vec<u8>>) {
    let new = NewEnrolment {
        email,
        language,
        ..new_enrolment("alice", replace)
    };
    let e = store.issue(&new, NOW).expect("issue");
    let secret = store.activate(e.id, NOW).expect("q").expect("secret");
    (store.latest("alice").expect("q").expect("e"), secret)
}

fn confirm(store: &Store, e: &Enrolment, secret: &[u8], now: u64) {
    let code = PARAMS.code_at(secret, now);
    let checked = store
        .confirm_token(e, &code, now, &TokenConfig::default())
        .expect("confirm");
    assert!(
        matches!(checked.outcome, FirstCode::Active { .. }),
        "{checked:?}"
    );
}

fn notice(what: What, email: &str, language: &str, at: u64) -> Notice {
    Notice {
        what,
        user: "alice".to_owned(),
        email: email.to_owned(),
        language: language.to_owned(),
        service_id: "SVC".to_owned(),
        at,
    }
}

#[test]
fn confirming_tells_the_new_address_and_a_replaced_token_the_old_one() {
    let (_dir, store, seen) = collecting(&Event::ALL);
    let (old, secret) = issued_to(&store, "old@example.jp", "ja", false);
    assert!(taken(&seen).is_empty(), "issue and activation send nothing");
    let wrong = store
        .confirm_token(&old, "000000", NOW, &TokenConfig::default())
        .expect("confirm");
    assert_eq!(wrong.outcome, FirstCode::Wrong);
    assert!(taken(&seen).is_empty(), "a wrong first code sends nothing");
    confirm(&store, &old, &secret, NOW);
    assert_eq!(
        taken(&seen),
        [notice(What::Activated, "old@example.jp", "ja", NOW)]
    );

    // A new token: the old one works, and nobody is told, until the new
    // one is confirmed.
    let (new, secret) = issued_to(&store, "new@example.jp", "en", true);
    assert!(taken(&seen).is_empty());
    confirm(&store, &new, &secret, NOW + 120);
    assert_eq!(
        taken(&seen),
        [
            notice(What::Replaced, "old@example.jp", "ja", NOW + 120),
            notice(What::Activated, "new@example.jp", "en", NOW + 120),
        ]
    );
    // Confirming again changes nothing and tells nobody.
    let again = store
        .confirm_token(
            &new,
            &PARAMS.code_at(&secret, NOW + 180),
            NOW + 180,
            &TokenConfig::default(),
        )
        .expect("confirm");
    assert_eq!(again.outcome, FirstCode::NotActivated);
    assert!(taken(&seen).is_empty());
}

#[test]
fn a_lock_is_told_once_whatever_comes_after_it() {
    let (_dir, store, seen) = collecting(&Event::ALL);
    let (e, secret) = issued_to(&store, "alice@example.jp", "ja", false);
    confirm(&store, &e, &secret, NOW);
    taken(&seen);
    for (n, wrong) in ["000001", "000002"].iter().enumerate() {
        verify(&store, "alice", wrong, NOW + n as u64);
        assert!(taken(&seen).is_empty(), "below the limit: no notice");
    }
    assert_eq!(
        verify(&store, "alice", "000003", NOW + 2),
        VerifyOutcome::Reject(Refusal::WrongCode)
    );
    let lock = notice(
        What::Locked {
            channel: "pam".to_owned(),
            until: NOW + 2 + 900,
        },
        "alice@example.jp",
        "ja",
        NOW + 2,
    );
    assert_eq!(taken(&seen), [lock]);
    for wrong in ["000004", "000005", "000006"] {
        assert_eq!(
            verify(&store, "alice", wrong, NOW + 3),
            VerifyOutcome::Reject(Refusal::Locked)
        );
    }
    let code = PARAMS.code_at(&secret, NOW + 4);
    assert_eq!(
        verify(&store, "alice", &code, NOW + 4),
        VerifyOutcome::Reject(Refusal::Locked)
    );
    assert!(taken(&seen).is_empty(), "refusals while locked tell nobody");

    // Once the lock has run out, a new lock is a new notice.
    let later = NOW + 2 + 900;
    for wrong in ["000007", "000008", "000009"] {
        verify(&store, "alice", wrong, later);
    }
    assert_eq!(taken(&seen).len(), 1);
}

#[test]
fn several_locks_in_one_batch_are_each_told_once() {
    let (_dir, store, seen) = collecting(&[Event::Locked]);
    let (e, secret) = issued_to(&store, "alice@example.jp", "en", false);
    confirm(&store, &e, &secret, NOW);
    let wrong = ["000001", "000002", "000003", "000004", "000005"];
    let requests: Vec<VerifyRequest<'_>> = wrong
        .iter()
        .map(|code| VerifyRequest {
            user: "alice",
            code,
            channel: Channel::Radius,
            peer: "nas=192.0.2.1",
            reauth: None,
            first_factor_wrong: false,
        })
        .collect();
    store.verify_batch(&requests, NOW, &POLICY).expect("verify");
    let notices = taken(&seen);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(matches!(
        &notices[0].what,
        What::Locked { channel, .. } if channel == "radius"
    ));
}

#[test]
fn a_recovery_code_is_told_with_the_codes_left_and_wrong_ones_lock() {
    let (_dir, store, seen) = collecting(&Event::ALL);
    let (e, secret) = issued_to(&store, "alice@example.jp", "ja", false);
    confirm(&store, &e, &secret, NOW);
    taken(&seen);
    let set = store
        .replace_recovery_codes("alice", 5)
        .expect("q")
        .expect("active");
    let request = |code| VerifyRequest {
        user: "alice",
        code,
        channel: Channel::Cli,
        peer: "uid=0",
        reauth: None,
        first_factor_wrong: false,
    };
    let outcome = store
        .verify_codes(&[request(set[0].as_str())], NOW, &POLICY)
        .expect("verify");
    assert_eq!(outcome, [VerifyOutcome::Accept]);
    let used = notice(
        What::RecoveryUsed {
            channel: "cli".to_owned(),
            left: 4,
        },
        "alice@example.jp",
        "ja",
        NOW,
    );
    assert_eq!(taken(&seen), [used]);
    // Spent: refused, and no notice of a use.
    store
        .verify_codes(&[request(set[0].as_str())], NOW + 60, &POLICY)
        .expect("verify");
    assert!(taken(&seen).is_empty());
    for (n, wrong) in ["11111-11111", "22222-22222"].iter().enumerate() {
        store
            .verify_codes(&[request(wrong)], NOW + 120 + n as u64, &POLICY)
            .expect("verify");
    }
    let notices = taken(&seen);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].event(), Event::Locked);
    // Locked: a right recovery code is refused and tells nobody.
    store
        .verify_codes(&[request(set[1].as_str())], NOW + 130, &POLICY)
        .expect("verify");
    assert!(taken(&seen).is_empty());
}

#[test]
fn only_the_events_asked_for_and_only_to_an_address() {
    let (_dir, store, seen) = collecting(&[Event::Replaced]);
    let (e, secret) = issued_to(&store, "alice@example.jp", "ja", false);
    confirm(&store, &e, &secret, NOW);
    for wrong in ["000001", "000002", "000003"] {
        verify(&store, "alice", wrong, NOW);
    }
    assert!(
        taken(&seen).is_empty(),
        "neither activated nor locked asked for"
    );

    // A hardware token has no address: assigned over the active token,
    // only the replaced token's owner is told.
    store
        .import_hardware(&[hardware("OATH0001", None)], "SVC", NOW)
        .expect("load");
    store
        .assign("OATH0001", "alice", true, NOW + 60)
        .expect("assign");
    assert_eq!(
        taken(&seen),
        [notice(What::Replaced, "alice@example.jp", "ja", NOW + 60)]
    );
    // Imported over the hardware token: it had no address, nobody is told.
    let token = ImportedToken {
        user: "alice",
        secret: b"12345678901234567890",
        params: PARAMS,
        last_step: None,
    };
    store
        .import_tokens(&[token], "SVC", true, NOW + 120)
        .expect("import");
    assert!(taken(&seen).is_empty());
    let (_dir, store, seen) = collecting(&Event::ALL);
    assigned(&store, "bob", "OATH0002");
    for wrong in ["000001", "000002", "000003"] {
        verify(&store, "bob", wrong, NOW);
    }
    assert!(taken(&seen).is_empty(), "no address, no notice");
}

#[test]
fn an_empty_list_tells_nobody() {
    let (_dir, store, seen) = collecting(&[]);
    let (e, secret) = issued_to(&store, "alice@example.jp", "ja", false);
    confirm(&store, &e, &secret, NOW);
    for wrong in ["000001", "000002", "000003"] {
        verify(&store, "alice", wrong, NOW);
    }
    assert!(taken(&seen).is_empty());
}
