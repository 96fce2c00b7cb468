//! Login verification: window, replay protection, failure
//! count, lockout and the repeated-wrong-code rule. The functions decide
//! from the token's counters and the time passed in; the store applies the
//! decision atomically.

use crate::totp::{is_code, TokenParams};

/// The limits that verification applies, from `[token]` and `[policy]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Steps accepted on either side of now.
    pub window: u64,
    /// Event-based tokens: codes accepted after the next expected one.
    pub hotp_window: u64,
    /// Failures that lock the token.
    pub max_failures: u32,
    /// How long a lock lasts.
    pub lockout_seconds: u64,
}

/// What the store keeps about a token's use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// The last accepted time step: codes of it and earlier steps are spent.
    pub last_step: Option<u64>,
    /// Failures since the last success or lock.
    pub failures: u32,
    /// Locked until this time (exclusive), if locked.
    pub locked_until: Option<u64>,
    /// Keyed fingerprint of the last wrong code and when it came.
    pub last_wrong: Option<([u8; 16], u64)>,
    /// Clock drift of the token in steps, learnt by resync.
    pub drift: i64,
}

/// Why a code was refused. Callers see only "reject"; the audit trail
/// sees the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user has no active token.
    NoToken,
    /// The token is locked after too many failures.
    Locked,
    /// The code's step was already used (or an earlier one was).
    Replay,
    /// The code matches no step in the window.
    WrongCode,
    /// The same wrong code again within one period: not counted again.
    RepeatedWrongCode,
    /// Not a code at all (wrong length or not digits).
    Malformed,
    /// A recovery code that is not one of the token's unused ones.
    WrongRecoveryCode,
    /// The first factor (the directory password before the code) was
    /// wrong; the code was not looked at.
    WrongFirstFactor,
}

impl Refusal {
    /// Words for the audit trail and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoToken => "no active token",
            Refusal::Locked => "token locked",
            Refusal::Replay => "code already used",
            Refusal::WrongCode => "wrong code",
            Refusal::RepeatedWrongCode => "same wrong code again (not counted)",
            Refusal::Malformed => "not a code",
            Refusal::WrongRecoveryCode => "wrong or used recovery code",
            Refusal::WrongFirstFactor => "wrong first factor",
        }
    }
}

/// The decision about one code, with the counters to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted: store `step` as the last step (only if it is still later
    /// than the stored one) and reset the failures.
    Accept { step: u64 },
    /// Refused; `update` is what to store, if anything changes.
    Reject {
        refusal: Refusal,
        update: Option<Counters>,
    },
}

/// The decision about one recovery code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryVerdict {
    /// Accepted: the code is spent (only if still unused when the store
    /// removes it) and the failures are reset.
    Accept,
    /// Refused; `update` is what to store, if anything changes.
    Reject {
        refusal: Refusal,
        update: Option<Counters>,
    },
}

/// The current step, corrected by the token's drift.
fn drifted_time(params: &TokenParams, now: u64, drift: i64) -> u64 {
    let shift = drift.unsigned_abs().saturating_mul(params.period);
    if drift >= 0 {
        now.saturating_add(shift)
    } else {
        now.saturating_sub(shift)
    }
}

/// Counters after one more failure at `now`; the lock starts at the limit.
/// An expired lock starts the count afresh.
fn failed(counters: &Counters, policy: &Policy, now: u64, fingerprint: [u8; 16]) -> Counters {
    let lock_expired = counters.locked_until.is_some_and(|t| t <= now);
    let failures = if lock_expired {
        1
    } else {
        counters.failures.saturating_add(1)
    };
    let locked_until = if failures >= policy.max_failures {
        Some(now.saturating_add(policy.lockout_seconds))
    } else if lock_expired {
        None
    } else {
        counters.locked_until
    };
    Counters {
        failures,
        locked_until,
        last_wrong: Some((fingerprint, now)),
        ..*counters
    }
}

/// The verdict on a login whose first factor was wrong: refused, without a
/// look at the code, and counted like a wrong code (the last wrong code's
/// fingerprint stays); not counted again while the token is locked.
pub fn wrong_first_factor(now: u64, policy: &Policy, counters: &Counters) -> Verdict {
    let update = counters
        .locked_until
        .is_none_or(|t| t <= now)
        .then(|| Counters {
            last_wrong: counters.last_wrong,
            ..failed(counters, policy, now, [0; 16])
        });
    let refusal = if update.is_some() {
        Refusal::WrongFirstFactor
    } else {
        Refusal::Locked
    };
    Verdict::Reject { refusal, update }
}

/// A code's circumstances: when it came, the limits, what the store keeps
/// about the token, and the code's keyed fingerprint (the store makes it),
/// compared with the previous wrong code's.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub(crate) now: u64,
    pub(crate) policy: &'a Policy,
    pub(crate) counters: &'a Counters,
    pub(crate) fingerprint: [u8; 16],
}

impl<'a> Attempt<'a> {
    pub fn new(
        now: u64,
        policy: &'a Policy,
        counters: &'a Counters,
        fingerprint: [u8; 16],
    ) -> Self {
        Attempt {
            now,
            policy,
            counters,
            fingerprint,
        }
    }

    /// Why the code is refused without a look, if it is: the token is
    /// locked, or it is the last wrong code again less than
    /// `repeat_seconds` after it. Neither counts as a failure.
    fn refused_unseen(&self, repeat_seconds: u64) -> Option<Refusal> {
        let Attempt {
            now,
            counters,
            fingerprint,
            ..
        } = *self;
        if counters.locked_until.is_some_and(|t| now < t) {
            return Some(Refusal::Locked);
        }
        let repeated = counters
            .last_wrong
            .is_some_and(|(fp, at)| fp == fingerprint && now < at.saturating_add(repeat_seconds));
        repeated.then_some(Refusal::RepeatedWrongCode)
    }

    /// The verdict on a recovery code; `unused` tells whether it is one of
    /// the token's unused recovery codes (the store finds out). Refused
    /// without a look as [`Attempt::judge`] refuses: a recovery code lifts
    /// no lock, since the lock is there against guessing and recovery
    /// codes can be guessed too, only more slowly. Otherwise accepted when
    /// unused, and a failure like a wrong code when not.
    pub fn judge_recovery(self, repeat_seconds: u64, unused: bool) -> RecoveryVerdict {
        if let Some(refusal) = self.refused_unseen(repeat_seconds) {
            return RecoveryVerdict::Reject {
                refusal,
                update: None,
            };
        }
        if unused {
            return RecoveryVerdict::Accept;
        }
        RecoveryVerdict::Reject {
            refusal: Refusal::WrongRecoveryCode,
            update: Some(failed(
                self.counters,
                self.policy,
                self.now,
                self.fingerprint,
            )),
        }
    }

    /// The verdict on `code`, a code of `digits` digits. Refused without a
    /// look while the token is locked, or when it is the last wrong code
    /// again less than `repeat_seconds` after it. Otherwise `matching`
    /// finds the step (or event counter) whose code it is: accepted only if
    /// later than the last used one; any refusal counts as a failure.
    pub(crate) fn judge(
        self,
        code: &str,
        digits: u32,
        repeat_seconds: u64,
        matching: impl FnOnce() -> Option<u64>,
    ) -> Verdict {
        let Attempt {
            now,
            policy,
            counters,
            fingerprint,
        } = self;
        let reject = |refusal, update| Verdict::Reject { refusal, update };
        if let Some(refusal) = self.refused_unseen(repeat_seconds) {
            return reject(refusal, None);
        }
        let refusal = match matching() {
            Some(step) if counters.last_step.is_none_or(|last| step > last) => {
                return Verdict::Accept { step };
            }
            Some(_) => Refusal::Replay,
            None if is_code(code, digits) => Refusal::WrongCode,
            None => Refusal::Malformed,
        };
        reject(refusal, Some(failed(counters, policy, now, fingerprint)))
    }
}

/// Decides about `code`. `fingerprint` is a keyed digest of the code (the
/// store makes it), compared with the previous wrong code's.
pub fn decide(
    secret: &[u8],
    params: &TokenParams,
    code: &str,
    now: u64,
    policy: &Policy,
    counters: &Counters,
    fingerprint: [u8; 16],
) -> Verdict {
    let t = drifted_time(params, now, counters.drift);
    Attempt::new(now, policy, counters, fingerprint).judge(
        code,
        params.digits,
        params.period,
        || params.matching_step(secret, code, t, policy.window),
    )
}

/// Finds the drift from two consecutive codes typed now: the step `s`
/// within `search` steps of now whose code is `first` and whose successor's
/// is `second`. Returns (drift in steps, the later step) to store.
pub fn resync(
    secret: &[u8],
    params: &TokenParams,
    first: &str,
    second: &str,
    now: u64,
    search: u64,
) -> Option<(i64, u64)> {
    let here = params.step_at(now);
    let low = here.saturating_sub(search);
    // The last step searched needs a successor.
    let high = here.saturating_add(search).min(u64::MAX - 1);
    (low..=high)
        .map(|s| (s, s + 1))
        .find(|&(s, next)| {
            params.code_for_step(secret, s).as_str() == first
                && params.code_for_step(secret, next).as_str() == second
        })
        .map(|(_, later)| {
            let drift = i64::try_from(later)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(here).unwrap_or(i64::MAX));
            (drift, later)
        })
}

/// What a resync that found the second code at `step` does to the last
/// used step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayMove {
    /// `step` is later: the replay state moves forward as on a login.
    Forward,
    /// `step` is earlier, but the last used step `from` lies ahead of the
    /// clock, so every real code is a replay: it moves back to `step`.
    Back { from: u64 },
    /// Otherwise the second code was already used: refused.
    Spent,
}

/// Decides how a resync treats the last used step `last_step`. A step is
/// ahead of the clock when it is later than `window` steps after
/// `now_step`, the latest step whose code a correct clock accepts now.
pub fn replay_move(last_step: Option<u64>, step: u64, now_step: u64, window: u64) -> ReplayMove {
    match last_step {
        None => ReplayMove::Forward,
        Some(last) if step > last => ReplayMove::Forward,
        Some(last) if step < last && last > now_step.saturating_add(window) => {
            ReplayMove::Back { from: last }
        }
        Some(_) => ReplayMove::Spent,
    }
}

/// Converts a last used `step` of `from_period` seconds into steps of
/// `to_period` seconds: the last step that begins before the spent step
/// ends. Every code whose time span touches a spent one stays spent.
pub fn spent_through(step: u64, from_period: u64, to_period: u64) -> u64 {
    let end = step.saturating_add(1).saturating_mul(from_period.max(1));
    (end - 1) / to_period.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::totp::Algorithm;

    const SECRET: &[u8] = b"12345678901234567890";
    const PARAMS: TokenParams = TokenParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 60,
    };
    const POLICY: Policy = Policy {
        window: 1,
        hotp_window: 10,
        max_failures: 3,
        lockout_seconds: 900,
    };
    const NOW: u64 = 1_800_000_000;
    const FP_A: [u8; 16] = [1; 16];
    const FP_B: [u8; 16] = [2; 16];

    fn code(step: u64) -> String {
        PARAMS.code_for_step(SECRET, step).to_string()
    }

    fn now_step() -> u64 {
        PARAMS.step_at(NOW)
    }

    #[test]
    fn a_wrong_first_factor_counts_and_locks_but_keeps_the_last_wrong_code() {
        let mut c = Counters {
            last_wrong: Some((FP_A, NOW - 5)),
            ..Counters::default()
        };
        for n in 1..=POLICY.max_failures {
            let Verdict::Reject {
                refusal: Refusal::WrongFirstFactor,
                update: Some(next),
            } = wrong_first_factor(NOW, &POLICY, &c)
            else {
                panic!("counted");
            };
            assert_eq!(next.failures, n);
            assert_eq!(next.last_wrong, Some((FP_A, NOW - 5)));
            c = next;
        }
        assert_eq!(c.locked_until, Some(NOW + POLICY.lockout_seconds));
        assert_eq!(
            wrong_first_factor(NOW + 1, &POLICY, &c),
            Verdict::Reject {
                refusal: Refusal::Locked,
                update: None
            }
        );
        let after = NOW + POLICY.lockout_seconds;
        assert!(matches!(
            wrong_first_factor(after, &POLICY, &c),
            Verdict::Reject { refusal: Refusal::WrongFirstFactor, update: Some(n) } if n.failures == 1
        ));
    }

    #[test]
    fn accepts_within_the_window_and_never_twice() {
        let c = Counters::default();
        for offset in [-1i64, 0, 1] {
            let step = now_step().checked_add_signed(offset).expect("step");
            assert_eq!(
                decide(SECRET, &PARAMS, &code(step), NOW, &POLICY, &c, FP_A),
                Verdict::Accept { step }
            );
        }
        let used = Counters {
            last_step: Some(now_step()),
            ..c
        };
        let verdict = decide(
            SECRET,
            &PARAMS,
            &code(now_step()),
            NOW,
            &POLICY,
            &used,
            FP_A,
        );
        assert!(
            matches!(verdict, Verdict::Reject { refusal: Refusal::Replay, update: Some(u) } if u.failures == 1)
        );
        // An earlier step than the last accepted one is spent too.
        let verdict = decide(
            SECRET,
            &PARAMS,
            &code(now_step() - 1),
            NOW,
            &POLICY,
            &used,
            FP_A,
        );
        assert!(matches!(
            verdict,
            Verdict::Reject {
                refusal: Refusal::Replay,
                ..
            }
        ));
        assert_eq!(
            decide(
                SECRET,
                &PARAMS,
                &code(now_step() + 1),
                NOW,
                &POLICY,
                &used,
                FP_A
            ),
            Verdict::Accept {
                step: now_step() + 1
            }
        );
    }

    #[test]
    fn outside_the_window_is_wrong() {
        let verdict = decide(
            SECRET,
            &PARAMS,
            &code(now_step() + 2),
            NOW,
            &POLICY,
            &Counters::default(),
            FP_A,
        );
        assert!(matches!(
            verdict,
            Verdict::Reject {
                refusal: Refusal::WrongCode,
                update: Some(_)
            }
        ));
        let verdict = decide(
            SECRET,
            &PARAMS,
            "12345",
            NOW,
            &POLICY,
            &Counters::default(),
            FP_A,
        );
        assert!(matches!(
            verdict,
            Verdict::Reject {
                refusal: Refusal::Malformed,
                update: Some(_)
            }
        ));
    }

    #[test]
    fn failures_lock_and_the_lock_expires() {
        let mut c = Counters::default();
        for (n, fp) in [(1, FP_A), (2, FP_B), (3, FP_A)] {
            match decide(SECRET, &PARAMS, "000000", NOW, &POLICY, &c, fp) {
                Verdict::Reject {
                    update: Some(u), ..
                } => c = u,
                other => panic!("{other:?}"),
            }
            assert_eq!(c.failures, n);
        }
        assert_eq!(c.locked_until, Some(NOW + 900));
        // Locked: even the right code is refused, and nothing changes.
        assert_eq!(
            decide(
                SECRET,
                &PARAMS,
                &code(now_step()),
                NOW + 1,
                &POLICY,
                &c,
                FP_B
            ),
            Verdict::Reject {
                refusal: Refusal::Locked,
                update: None
            }
        );
        // After lockout_seconds the right code works again.
        let later = NOW + 900;
        let step = PARAMS.step_at(later);
        assert_eq!(
            decide(SECRET, &PARAMS, &code(step), later, &POLICY, &c, FP_B),
            Verdict::Accept { step }
        );
        // And a wrong code after the lock counts from one again.
        match decide(SECRET, &PARAMS, "000000", later, &POLICY, &c, [9; 16]) {
            Verdict::Reject {
                update: Some(u), ..
            } => {
                assert_eq!((u.failures, u.locked_until), (1, None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_same_wrong_code_counts_once_per_period() {
        let c = match decide(
            SECRET,
            &PARAMS,
            "000000",
            NOW,
            &POLICY,
            &Counters::default(),
            FP_A,
        ) {
            Verdict::Reject {
                update: Some(u), ..
            } => u,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            decide(SECRET, &PARAMS, "000000", NOW + 59, &POLICY, &c, FP_A),
            Verdict::Reject {
                refusal: Refusal::RepeatedWrongCode,
                update: None
            }
        );
        assert!(matches!(
            decide(SECRET, &PARAMS, "000000", NOW + 60, &POLICY, &c, FP_A),
            Verdict::Reject { refusal: Refusal::WrongCode, update: Some(u) } if u.failures == 2
        ));
        assert!(matches!(
            decide(SECRET, &PARAMS, "111111", NOW + 1, &POLICY, &c, FP_B),
            Verdict::Reject { refusal: Refusal::WrongCode, update: Some(u) } if u.failures == 2
        ));
    }

    #[test]
    fn resync_learns_the_drift() {
        // The phone runs 5 steps (5 minutes) fast.
        let phone = now_step() + 5;
        let (drift, later) =
            resync(SECRET, &PARAMS, &code(phone), &code(phone + 1), NOW, 100).expect("found");
        assert_eq!((drift, later), (6, phone + 1));
        let c = Counters {
            drift,
            last_step: Some(later),
            ..Counters::default()
        };
        // The phone's next code is accepted with the drift applied.
        assert_eq!(
            decide(
                SECRET,
                &PARAMS,
                &code(phone + 2),
                NOW + 60,
                &POLICY,
                &c,
                FP_A
            ),
            Verdict::Accept { step: phone + 2 }
        );
        assert!(resync(SECRET, &PARAMS, &code(phone), &code(phone + 3), NOW, 100).is_none());
    }

    #[test]
    fn resync_at_the_end_of_time_does_not_overflow() {
        let one_second = TokenParams {
            period: 1,
            ..PARAMS
        };
        let code = |step| one_second.code_for_step(SECRET, step);
        assert_eq!(
            resync(
                SECRET,
                &one_second,
                &code(u64::MAX - 1),
                &code(u64::MAX),
                u64::MAX,
                3
            ),
            Some((0, u64::MAX))
        );
        assert_eq!(
            resync(SECRET, &one_second, &code(u64::MAX), &code(0), u64::MAX, 3),
            None,
            "the last step has no successor"
        );
    }

    #[test]
    fn spent_steps_convert_between_periods() {
        // Same period: the same step.
        assert_eq!(spent_through(1000, 30, 30), 1000);
        // 30-second step 1001 spans 30030..30060, inside 60-second step 500
        // (30000..30060); step 1000 (30000..30030) too.
        assert_eq!(spent_through(1001, 30, 60), 500);
        assert_eq!(spent_through(1000, 30, 60), 500);
        // 60-second step 500 (30000..30060) spans 30-second steps 1000 and 1001.
        assert_eq!(spent_through(500, 60, 30), 1001);
        // 45-second step 10 (450..495) touches 60-second step 8 (480..540).
        assert_eq!(spent_through(10, 45, 60), 8);
        // Nothing overflows or divides by zero.
        assert_eq!(spent_through(u64::MAX, 60, 30), (u64::MAX - 1) / 30);
        assert_eq!(spent_through(7, 0, 0), 7);
    }

    #[test]
    fn resync_moves_the_replay_state_back_only_from_ahead_of_the_clock() {
        let now = now_step();
        assert_eq!(replay_move(None, now, now, 1), ReplayMove::Forward);
        assert_eq!(replay_move(Some(now - 5), now, now, 1), ReplayMove::Forward);
        // The two codes themselves were used: refused.
        assert_eq!(replay_move(Some(now), now, now, 1), ReplayMove::Spent);
        assert_eq!(replay_move(Some(now + 1), now, now, 1), ReplayMove::Spent);
        // A last step beyond the window ahead of now: moved back.
        assert_eq!(
            replay_move(Some(now + 2), now, now, 1),
            ReplayMove::Back { from: now + 2 }
        );
        assert_eq!(
            replay_move(Some(now + 600), now - 3, now, 1),
            ReplayMove::Back { from: now + 600 }
        );
        // Nothing to move back when the second code is the last used one.
        assert_eq!(
            replay_move(Some(now + 600), now + 600, now, 1),
            ReplayMove::Spent
        );
    }

    #[test]
    fn a_recovery_code_is_accepted_when_unused_and_counts_as_a_failure_when_not() {
        let c = Counters {
            failures: 1,
            ..Counters::default()
        };
        let attempt = Attempt::new(NOW, &POLICY, &c, FP_A);
        assert_eq!(attempt.judge_recovery(60, true), RecoveryVerdict::Accept);
        match attempt.judge_recovery(60, false) {
            RecoveryVerdict::Reject {
                refusal: Refusal::WrongRecoveryCode,
                update: Some(u),
            } => {
                assert_eq!(u.failures, 2);
                assert_eq!(u.last_wrong, Some((FP_A, NOW)));
            }
            other => panic!("{other:?}"),
        }
        let almost = Counters {
            failures: POLICY.max_failures - 1,
            ..c
        };
        let locked = Attempt::new(NOW, &POLICY, &almost, FP_A).judge_recovery(60, false);
        assert!(
            matches!(locked, RecoveryVerdict::Reject { update: Some(u), .. } if u.locked_until == Some(NOW + 900))
        );
    }

    #[test]
    fn a_recovery_code_lifts_no_lock_and_a_repeat_is_not_counted() {
        let locked = Counters {
            locked_until: Some(NOW + 1),
            ..Counters::default()
        };
        assert_eq!(
            Attempt::new(NOW, &POLICY, &locked, FP_A).judge_recovery(60, true),
            RecoveryVerdict::Reject {
                refusal: Refusal::Locked,
                update: None
            }
        );
        let wrong_before = Counters {
            last_wrong: Some((FP_A, NOW - 10)),
            ..Counters::default()
        };
        assert_eq!(
            Attempt::new(NOW, &POLICY, &wrong_before, FP_A).judge_recovery(60, false),
            RecoveryVerdict::Reject {
                refusal: Refusal::RepeatedWrongCode,
                update: None
            }
        );
        assert!(matches!(
            Attempt::new(NOW, &POLICY, &wrong_before, FP_B).judge_recovery(60, false),
            RecoveryVerdict::Reject {
                refusal: Refusal::WrongRecoveryCode,
                update: Some(_)
            }
        ));
    }
}
