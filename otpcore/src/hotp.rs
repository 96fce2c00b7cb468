//! Event-based tokens (HOTP, RFC 4226): which counter a code belongs to,
//! within a look-ahead window after the next expected counter; replay
//! protection; and resync from two consecutive codes.
//!
//! The decision uses the counters, lock and refusals of time-based tokens
//! ([`crate::verify`]), with `Counters::last_step` holding the last used
//! event counter: codes of it and of earlier counters are spent, and the
//! store's conditional advance (only to a later counter) keeps a code from
//! being accepted twice. A token whose next code has counter `N` and that
//! has not been used here starts with `last_step` [`last_used_before`]`(N)`.

use zeroize::Zeroizing;

use crate::totp::{first_match, hotp, is_code, Algorithm};
use crate::verify::{Attempt, Verdict};

/// The look-ahead when none is configured: up to 10 codes the token made
/// but nobody used (button presses) are skipped over.
pub const DEFAULT_WINDOW: u64 = 10;

/// How far past the next counter a resync looks for two consecutive codes:
/// 1000 button presses. Two 6-digit codes match by chance at one of 1000
/// counters with a probability of about 1000 in 10^12, and 1000 pairs of
/// HMACs take well under a millisecond.
pub const RESYNC_SEARCH: u64 = 1000;

/// What, besides the secret, defines an event-based token's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotpParams {
    pub algorithm: Algorithm,
    /// 6 to 8.
    pub digits: u32,
}

impl HotpParams {
    fn code(&self, secret: &[u8], counter: u64) -> Zeroizing<String> {
        hotp(secret, counter, self.digits, self.algorithm)
    }
}

/// The last used counter of a token whose next code has counter `next`.
pub fn last_used_before(next: u64) -> Option<u64> {
    next.checked_sub(1)
}

/// Decides about `code` for an event-based token. `attempt.policy.window`
/// is the look-ahead: the codes of the next counter and of up to `window`
/// counters after it are accepted; the `window` counters before the next
/// one are searched too, so that a used code is refused as a replay rather
/// than as a wrong code. `Verdict::Accept { step }` gives the counter that
/// matched: the new last used one.
///
/// The same wrong code again is not counted as another failure until a
/// code is accepted: the acceptable codes change only then, so repeating
/// one guess learns nothing.
pub fn decide(secret: &[u8], params: &HotpParams, code: &str, attempt: Attempt<'_>) -> Verdict {
    let next = attempt
        .counters
        .last_step
        .map_or(0, |last| last.saturating_add(1));
    let window = attempt.policy.window;
    let candidates = next.saturating_sub(window)..=next.saturating_add(window);
    attempt.judge(code, params.digits, u64::MAX, || {
        first_match(candidates, code, params.digits, |counter| {
            params.code(secret, counter)
        })
    })
}

/// Finds where a token's counter stands from two consecutive codes typed
/// now: the counter `c` at or after the next one (never a used one), up to
/// `search` counters on, whose code is `first` and whose successor's is
/// `second`. Returns `c + 1`, the new last used counter.
pub fn resync(
    secret: &[u8],
    params: &HotpParams,
    first: &str,
    second: &str,
    last_used: Option<u64>,
    search: u64,
) -> Option<u64> {
    if !is_code(first, params.digits) || !is_code(second, params.digits) {
        return None;
    }
    let next = match last_used {
        None => 0,
        Some(last) => last.checked_add(1)?,
    };
    // The last counter searched needs a successor.
    let high = next.saturating_add(search).min(u64::MAX - 1);
    if next > high {
        return None;
    }
    // The pair is compared as one code of twice the digits.
    let typed = Zeroizing::new(format!("{first}{second}"));
    first_match(next..=high, &typed, params.digits * 2, |counter| {
        Zeroizing::new(format!(
            "{}{}",
            params.code(secret, counter).as_str(),
            params.code(secret, counter + 1).as_str()
        ))
    })
    .map(|counter| counter + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Counters, Policy, Refusal};

    /// RFC 4226 Appendix D: the secret and the codes of counters 0 to 9.
    const SECRET: &[u8] = b"12345678901234567890";
    const CODES: [&str; 10] = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
        "520489",
    ];
    const PARAMS: HotpParams = HotpParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
    };
    /// Look-ahead 3; three failures lock for 15 minutes.
    const POLICY: Policy = policy(3);
    const NOW: u64 = 1_800_000_000;
    const FP_A: [u8; 16] = [0xa; 16];
    const FP_B: [u8; 16] = [0xb; 16];

    const fn policy(window: u64) -> Policy {
        Policy {
            window,
            hotp_window: DEFAULT_WINDOW,
            max_failures: 3,
            lockout_seconds: 900,
        }
    }

    fn used(last: u64) -> Counters {
        Counters {
            last_step: Some(last),
            ..Counters::default()
        }
    }

    fn decide_at(code: &str, counters: &Counters, policy: &Policy) -> Verdict {
        decide(
            SECRET,
            &PARAMS,
            code,
            Attempt::new(NOW, policy, counters, FP_A),
        )
    }

    fn refusal(verdict: Verdict) -> Option<Refusal> {
        match verdict {
            Verdict::Reject { refusal, .. } => Some(refusal),
            Verdict::Accept { .. } => None,
        }
    }

    #[test]
    fn rfc4226_appendix_d_codes_are_accepted_in_turn() {
        let mut counters = Counters::default();
        for (counter, code) in CODES.iter().enumerate() {
            let verdict = decide_at(code, &counters, &POLICY);
            assert_eq!(
                verdict,
                Verdict::Accept {
                    step: counter as u64
                }
            );
            counters = used(counter as u64);
        }
        // Used codes within the window before the next counter (10) are
        // refused as replays.
        for code in CODES.iter().skip(7) {
            assert_eq!(
                refusal(decide_at(code, &counters, &POLICY)),
                Some(Refusal::Replay)
            );
        }
    }

    #[test]
    fn the_look_ahead_skips_unused_codes_and_stops_at_the_window() {
        // (counter of the code typed, last used, look-ahead, accepted)
        let cases: [(usize, Option<u64>, u64, bool); 6] = [
            // Next counter 0, look-ahead 3: counters 0 to 3.
            (3, None, 3, true),
            (4, None, 3, false),
            // Counter 3 used: the next is 4, and 4 + 3 = 7 the last.
            (7, Some(3), 3, true),
            (8, Some(3), 3, false),
            // Look-ahead 0: only the next counter.
            (1, Some(0), 0, true),
            (2, Some(0), 0, false),
        ];
        for (counter, last_step, window, accepted) in cases {
            let counters = Counters {
                last_step,
                ..Counters::default()
            };
            let expected = if accepted {
                Verdict::Accept {
                    step: counter as u64,
                }
            } else {
                Verdict::Reject {
                    refusal: Refusal::WrongCode,
                    update: Some(Counters {
                        failures: 1,
                        last_wrong: Some((FP_A, NOW)),
                        ..counters
                    }),
                }
            };
            assert_eq!(
                decide_at(CODES[counter], &counters, &policy(window)),
                expected,
                "counter {counter}, last used {last_step:?}, look-ahead {window}"
            );
        }
    }

    #[test]
    fn a_token_imported_at_a_counter_refuses_earlier_codes() {
        // The seed file says the token's next code is counter 5.
        let counters = Counters {
            last_step: last_used_before(5),
            ..Counters::default()
        };
        assert_eq!(last_used_before(0), None);
        assert_eq!(
            refusal(decide_at(CODES[4], &counters, &POLICY)),
            Some(Refusal::Replay)
        );
        assert_eq!(
            decide_at(CODES[5], &counters, &POLICY),
            Verdict::Accept { step: 5 }
        );
    }

    #[test]
    fn a_replay_counts_as_a_failure_and_malformed_codes_are_told_apart() {
        match decide_at(CODES[0], &used(0), &POLICY) {
            Verdict::Reject {
                refusal: Refusal::Replay,
                update: Some(u),
            } => assert_eq!(u.failures, 1),
            other => panic!("{other:?}"),
        }
        for bad in ["75522", "7552244", "75522a", ""] {
            assert_eq!(
                refusal(decide_at(bad, &used(0), &POLICY)),
                Some(Refusal::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn failures_lock_and_a_repeated_wrong_code_counts_once_until_a_success() {
        // `code` typed at `now` with fingerprint `fp`.
        let typed = |code: &str, now: u64, counters: &Counters, fp: [u8; 16]| {
            decide(
                SECRET,
                &PARAMS,
                code,
                Attempt::new(now, &POLICY, counters, fp),
            )
        };
        let failed = |verdict: Verdict| match verdict {
            Verdict::Reject {
                update: Some(u), ..
            } => u,
            other => panic!("{other:?}"),
        };
        let mut counters = failed(typed("000000", NOW, &Counters::default(), FP_A));
        // The same wrong code, even a day later: not counted again.
        assert_eq!(
            typed("000000", NOW + 86_400, &counters, FP_A),
            Verdict::Reject {
                refusal: Refusal::RepeatedWrongCode,
                update: None
            }
        );
        // Two other wrong codes lock the token.
        for fp in [FP_B, [3; 16]] {
            counters = failed(typed("111111", NOW, &counters, fp));
        }
        assert_eq!(counters.locked_until, Some(NOW + 900));
        assert_eq!(
            typed(CODES[0], NOW + 1, &counters, FP_A),
            Verdict::Reject {
                refusal: Refusal::Locked,
                update: None
            }
        );
        assert_eq!(
            typed(CODES[0], NOW + 900, &counters, [4; 16]),
            Verdict::Accept { step: 0 }
        );
    }

    #[test]
    fn the_end_of_the_counter_space_refuses_without_overflow() {
        let last = used(u64::MAX);
        let code = PARAMS.code(SECRET, u64::MAX);
        assert_eq!(
            refusal(decide_at(&code, &last, &POLICY)),
            Some(Refusal::Replay)
        );
        assert_eq!(
            decide_at(&code, &used(u64::MAX - 1), &POLICY),
            Verdict::Accept { step: u64::MAX }
        );
    }

    #[test]
    fn resync_finds_two_consecutive_codes_ahead_and_never_behind() {
        // (first, second: counters of the codes typed; last used; search;
        // the new last used counter)
        let cases = [
            // Next counter 1; the token was pressed on to counters 7 and 8.
            (7, 8, Some(0), 100, Some(8)),
            // Searched from 1 to 1 + 5 = 6, whose successor is 7.
            (7, 8, Some(0), 5, None),
            (6, 7, Some(0), 5, Some(7)),
            // Not consecutive, or in the wrong order.
            (7, 9, Some(0), 100, None),
            (8, 7, Some(0), 100, None),
            // Used codes never resync: counter 3 was the last used.
            (2, 3, Some(3), 100, None),
            (3, 4, Some(3), 100, None),
            (0, 1, None, 100, Some(1)),
        ];
        for (first, second, last, search, expected) in cases {
            assert_eq!(
                resync(SECRET, &PARAMS, CODES[first], CODES[second], last, search),
                expected,
                "{first} {second} {last:?} {search}"
            );
        }
        assert_eq!(resync(SECRET, &PARAMS, "75522", CODES[1], None, 100), None);
        // After the resync, the next code is accepted as usual.
        assert_eq!(
            decide_at(CODES[9], &used(8), &policy(0)),
            Verdict::Accept { step: 9 }
        );
    }

    #[test]
    fn resync_far_ahead_uses_the_default_search() {
        let far = 900;
        let first = PARAMS.code(SECRET, far);
        let second = PARAMS.code(SECRET, far + 1);
        assert_eq!(
            resync(SECRET, &PARAMS, &first, &second, Some(3), RESYNC_SEARCH),
            Some(far + 1)
        );
        assert_eq!(resync(SECRET, &PARAMS, &first, &second, Some(3), 100), None);
    }

    #[test]
    fn resync_at_the_end_of_the_counter_space_does_not_overflow() {
        // The codes of `first` and the counter after it (wrapping), typed
        // with `last_used` as the last used counter.
        let typed = |first: u64, last_used: u64, search: u64| {
            let code = |c: u64| PARAMS.code(SECRET, c);
            let second = code(first.wrapping_add(1));
            resync(
                SECRET,
                &PARAMS,
                &code(first),
                &second,
                Some(last_used),
                search,
            )
        };
        assert_eq!(
            typed(u64::MAX - 1, u64::MAX - 3, RESYNC_SEARCH),
            Some(u64::MAX)
        );
        assert_eq!(typed(0, u64::MAX, 5), None, "nothing follows the last");
        assert_eq!(
            typed(u64::MAX, u64::MAX - 1, 5),
            None,
            "the last counter has no successor"
        );
    }

    #[test]
    fn other_hashes_and_lengths_follow_the_token() {
        // RFC 6238 Appendix B at T = 59 is HOTP at counter 1 with 8 digits.
        let sha256 = HotpParams {
            algorithm: Algorithm::Sha256,
            digits: 8,
        };
        let secret = b"12345678901234567890123456789012";
        assert_eq!(
            decide(
                secret,
                &sha256,
                "46119246",
                Attempt::new(NOW, &POLICY, &used(0), FP_A)
            ),
            Verdict::Accept { step: 1 }
        );
    }
}
