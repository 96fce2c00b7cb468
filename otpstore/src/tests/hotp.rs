//! Hardware tokens: loaded unassigned by serial number, given to a user,
//! event-based (HOTP) codes verified with a look-ahead, counters resynced.

use otpcore::hotp::RESYNC_SEARCH;

use super::*;

/// RFC 4226 Appendix D's secret.
const SECRET: &[u8] = b"12345678901234567890";
const HOTP: TokenParams = TokenParams {
    algorithm: Algorithm::Sha1,
    digits: 6,
    period: 0,
};

/// The event-based token `serial` with [`SECRET`], whose last used
/// counter is `last_used`.
pub(super) fn hardware(serial: &str, last_used: Option<u64>) -> HardwareToken<'_> {
    HardwareToken {
        serial,
        secret: SECRET,
        kind: TokenKind::Hotp,
        params: HOTP,
        drift: 0,
        last_step: last_used,
    }
}

/// The code of `counter`.
pub(super) fn code(counter: u64) -> String {
    otpcore::totp::hotp(SECRET, counter, 6, Algorithm::Sha1).to_string()
}

/// Loads the token `serial` (next counter 0) and gives it to `user`.
pub(super) fn assigned(store: &Store, user: &str, serial: &str) -> Enrolment {
    store
        .import_hardware(&[hardware(serial, None)], "SVC", NOW)
        .expect("load");
    store.assign(serial, user, false, NOW).expect("assign")
}

fn serials(store: &Store) -> Vec<String> {
    store
        .unassigned()
        .expect("unassigned")
        .into_iter()
        .filter_map(|e| e.serial)
        .collect()
}

#[test]
fn hardware_tokens_load_unassigned_and_are_assigned_once() {
    let (_dir, store) = fresh();
    store
        .import_hardware(
            &[hardware("OATH0002", None), hardware("OATH0001", Some(4))],
            "SVC",
            NOW,
        )
        .expect("load");
    assert_eq!(serials(&store), ["OATH0001", "OATH0002"]);
    let loaded = store.unassigned().expect("unassigned");
    assert!(loaded
        .iter()
        .all(|e| e.state == State::Unassigned && e.kind == TokenKind::Hotp && e.user.is_empty()));
    assert!(store.list().expect("list").is_empty(), "nobody has a token");
    assert!(
        store.latest("").expect("latest").is_none(),
        "an unassigned token is nobody's, not the empty name's"
    );

    // A serial already stored refuses the whole load.
    let again = store.import_hardware(
        &[hardware("OATH0003", None), hardware("OATH0001", None)],
        "SVC",
        NOW,
    );
    assert!(matches!(again, Err(StoreError::SerialTaken(s)) if s == "OATH0001"));
    assert_eq!(serials(&store), ["OATH0001", "OATH0002"]);

    let token = store
        .assign("OATH0001", "alice", false, NOW)
        .expect("assign");
    assert_eq!(
        (token.user.as_str(), token.state, token.serial.as_deref()),
        ("alice", State::Active, Some("OATH0001"))
    );
    assert_eq!(token.last_step, Some(4));
    assert_eq!(token.confirmed_at, Some(NOW));
    assert_eq!(serials(&store), ["OATH0002"]);
    assert!(matches!(
        store.assign("OATH0001", "bob", false, NOW),
        Err(StoreError::SerialAssigned { user, .. }) if user == "alice"
    ));
    assert!(matches!(
        store.assign("NOSUCH", "bob", false, NOW),
        Err(StoreError::UnknownSerial(s)) if s == "NOSUCH"
    ));
    assert!(matches!(
        store.assign("OATH0002", "alice", false, NOW),
        Err(StoreError::HasActive { .. })
    ));
    assert_eq!(serials(&store), ["OATH0002"], "nothing changed");
    // A loaded serial stays taken once assigned.
    assert!(matches!(
        store.import_hardware(&[hardware("OATH0001", None)], "SVC", NOW),
        Err(StoreError::SerialTaken(_))
    ));

    // With replace, the new token replaces the user's active one at once.
    store
        .assign("OATH0002", "alice", true, NOW)
        .expect("replace");
    assert_eq!(
        store
            .active("alice")
            .expect("q")
            .and_then(|e| e.serial)
            .as_deref(),
        Some("OATH0002")
    );
    assert_eq!(
        verify(&store, "alice", &code(5), NOW),
        VerifyOutcome::Accept
    );
}

#[test]
fn hotp_codes_are_accepted_in_turn_within_the_look_ahead() {
    let (_dir, store) = fresh();
    assigned(&store, "alice", "OATH0001");
    let window = POLICY.hotp_window;
    assert_eq!(
        verify(&store, "alice", &code(0), NOW),
        VerifyOutcome::Accept
    );
    assert_eq!(
        verify(&store, "alice", &code(0), NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );
    // The next counter is 1: up to `window` unused codes are skipped.
    let ahead = 1 + window;
    assert_eq!(
        verify(&store, "alice", &code(ahead), NOW + 1),
        VerifyOutcome::Accept
    );
    assert_eq!(
        store
            .counters("alice")
            .expect("q")
            .and_then(|c| c.last_step),
        Some(ahead)
    );
    // Skipped codes are spent too.
    assert_eq!(
        verify(&store, "alice", &code(ahead - 1), NOW + 2),
        VerifyOutcome::Reject(Refusal::Replay)
    );
    // One beyond the window is a wrong code; like the replay, it counts
    // as a failure.
    let beyond = ahead + 1 + window + 1;
    assert_eq!(
        verify(&store, "alice", &code(beyond), NOW + 3),
        VerifyOutcome::Reject(Refusal::WrongCode)
    );
    assert_eq!(
        store.counters("alice").expect("q").map(|c| c.failures),
        Some(2)
    );
    assert_eq!(
        verify(&store, "alice", &code(ahead + 1), NOW + 4),
        VerifyOutcome::Accept
    );
    // Time plays no part: the next code works a year later.
    assert_eq!(
        verify(&store, "alice", &code(ahead + 2), NOW + 31_536_000),
        VerifyOutcome::Accept
    );
}

#[test]
fn hotp_failures_lock_like_time_based_ones() {
    let (_dir, store) = fresh();
    assigned(&store, "alice", "OATH0001");
    let wrong: Vec<&str> = ["000001", "000002", "000003", "000004"]
        .into_iter()
        .filter(|c| (0..=POLICY.hotp_window).all(|n| code(n) != *c))
        .take(3)
        .collect();
    for c in wrong {
        assert_eq!(
            verify(&store, "alice", c, NOW),
            VerifyOutcome::Reject(Refusal::WrongCode)
        );
    }
    assert_eq!(
        verify(&store, "alice", &code(0), NOW),
        VerifyOutcome::Reject(Refusal::Locked)
    );
    assert!(store.unlock("alice").expect("unlock"));
    assert_eq!(
        verify(&store, "alice", &code(0), NOW),
        VerifyOutcome::Accept
    );
}

#[test]
fn concurrent_connections_accept_a_hotp_code_once() {
    let (dir, store) = fresh();
    assigned(&store, "alice", "OATH0001");
    let accepted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = dir.path().to_owned();
                scope.spawn(move || {
                    let own = open(&path).expect("open");
                    (0..5)
                        .filter(|_| verify(&own, "alice", &code(3), NOW) == VerifyOutcome::Accept)
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(accepted, 1);
    assert_eq!(
        store
            .counters("alice")
            .expect("q")
            .and_then(|c| c.last_step),
        Some(3)
    );
}

#[test]
fn hotp_resync_finds_the_counter_from_two_codes_and_never_goes_back() {
    let (_dir, store) = fresh();
    assigned(&store, "alice", "OATH0001");
    assert_eq!(
        verify(&store, "alice", &code(0), NOW),
        VerifyOutcome::Accept
    );
    // The button was pressed 500 times away from any login.
    let far = 500;
    assert_eq!(
        verify(&store, "alice", &code(far), NOW),
        VerifyOutcome::Reject(Refusal::WrongCode)
    );
    assert_eq!(
        resync(&store, "alice", &code(far + 1), &code(far)),
        Resync::NotFound,
        "in the wrong order"
    );
    assert_eq!(
        resync(&store, "alice", &code(far), &code(far + 1)),
        Resync::Done {
            drift: 0,
            step: far + 1
        }
    );
    assert_eq!(
        store.counters("alice").expect("q").map(|c| c.failures),
        Some(0)
    );
    assert_eq!(
        verify(&store, "alice", &code(far + 1), NOW),
        VerifyOutcome::Reject(Refusal::Replay)
    );
    assert_eq!(
        verify(&store, "alice", &code(far + 2), NOW),
        VerifyOutcome::Accept
    );
    // Used codes never resync, and the search ends.
    assert_eq!(
        resync(&store, "alice", &code(1), &code(2)),
        Resync::NotFound
    );
    // The next counter is far + 3; the search ends RESYNC_SEARCH on.
    let beyond = far + 3 + RESYNC_SEARCH + 1;
    assert_eq!(
        resync(&store, "alice", &code(beyond), &code(beyond + 1)),
        Resync::NotFound
    );
}

#[test]
fn a_time_based_hardware_token_keeps_its_period_and_drift() {
    let (_dir, store) = fresh();
    let period = 30;
    let token = HardwareToken {
        serial: "TOTP0001",
        secret: SECRET,
        kind: TokenKind::Totp,
        params: TokenParams { period, ..HOTP },
        drift: 2,
        last_step: None,
    };
    store.import_hardware(&[token], "SVC", NOW).expect("load");
    let e = store
        .assign("TOTP0001", "alice", false, NOW)
        .expect("assign");
    assert_eq!((e.kind, e.params.period), (TokenKind::Totp, period));
    let params = TokenParams { period, ..HOTP };
    // The token's clock runs two steps ahead.
    let shown = params.code_for_step(SECRET, params.step_at(NOW) + 2);
    assert_eq!(verify(&store, "alice", &shown, NOW), VerifyOutcome::Accept);
}
