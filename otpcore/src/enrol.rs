//! The enrolment state machine: issued → activated → active, with
//! the side exits invalidated, replaced and revoked. The functions here
//! decide; the store carries the decisions out atomically.

use crate::totp::TokenParams;

/// Where an enrolment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Setup mail sent; waiting for the activation password.
    Issued,
    /// Secret delivered to the phone; waiting for the first code.
    Activated,
    /// First code confirmed; usable for login.
    Active,
    /// Too many wrong activation passwords; must be issued again.
    Invalidated,
    /// Superseded by a newer enrolment of the same user.
    Replaced,
    /// Withdrawn by an administrator.
    Revoked,
    /// A hardware token loaded from its seed file, given to nobody yet.
    Unassigned,
}

impl State {
    /// The name used in the database, `otpctl` output and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Issued => "issued",
            State::Activated => "activated",
            State::Active => "active",
            State::Invalidated => "invalidated",
            State::Replaced => "replaced",
            State::Revoked => "revoked",
            State::Unassigned => "unassigned",
        }
    }

    /// Parses the names `as_str` produces.
    pub fn parse(name: &str) -> Option<State> {
        [
            State::Issued,
            State::Activated,
            State::Active,
            State::Invalidated,
            State::Replaced,
            State::Revoked,
            State::Unassigned,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// Whether the enrolment is still on its way to `Active`.
    pub fn is_pending(self) -> bool {
        matches!(self, State::Issued | State::Activated)
    }
}

/// Why an activation cannot go ahead, whatever the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationRefusal {
    /// The setup link's time ran out.
    Expired,
    /// Invalidated, already activated, replaced or revoked.
    Gone,
}

/// Whether an enrolment in `state`, valid until `expires_at`, may be
/// activated at `now`.
pub fn activation_allowed(
    state: State,
    expires_at: u64,
    now: u64,
) -> Result<(), ActivationRefusal> {
    match state {
        State::Issued if now < expires_at => Ok(()),
        State::Issued => Err(ActivationRefusal::Expired),
        _ => Err(ActivationRefusal::Gone),
    }
}

/// What a wrong activation password leads to, given the count of wrong
/// tries including this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongPassword {
    /// Try again; this many tries remain.
    AttemptsLeft(u32),
    /// That was the last try: the enrolment is invalidated.
    Invalidated,
}

/// Applies the `activation_attempts` limit.
pub fn after_wrong_password(failures: u32, limit: u32) -> WrongPassword {
    if failures >= limit {
        WrongPassword::Invalidated
    } else {
        WrongPassword::AttemptsLeft(limit - failures)
    }
}

/// The outcome of typing the first code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// The code matched the token's own period; `step` was used.
    Confirmed { step: u64 },
    /// The code matched 30-second steps: the app ignores the period. The
    /// token switches to `period` and `step` was used.
    Adapted { period: u64, step: u64 },
    /// No match.
    Wrong,
}

/// The period that apps ignoring `period=` show.
pub const FALLBACK_PERIOD: u64 = 30;

/// Checks the first code. With `adapt`, a code that misses the token's
/// period but matches the 30-second one switches the token to 30 seconds.
pub fn confirm_first_code(
    secret: &[u8],
    params: &TokenParams,
    code: &str,
    now: u64,
    window: u64,
    adapt: bool,
) -> Confirmation {
    if let Some(step) = params.matching_step(secret, code, now, window) {
        return Confirmation::Confirmed { step };
    }
    if adapt && params.period != FALLBACK_PERIOD {
        let fallback = TokenParams {
            period: FALLBACK_PERIOD,
            ..*params
        };
        if let Some(step) = fallback.matching_step(secret, code, now, window) {
            return Confirmation::Adapted {
                period: FALLBACK_PERIOD,
                step,
            };
        }
    }
    Confirmation::Wrong
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

    #[test]
    fn state_names_round_trip() {
        for name in [
            "issued",
            "activated",
            "active",
            "invalidated",
            "replaced",
            "revoked",
        ] {
            assert_eq!(State::parse(name).map(State::as_str), Some(name));
        }
        assert_eq!(State::parse("ACTIVE"), None);
    }

    #[test]
    fn activation_gates() {
        assert_eq!(activation_allowed(State::Issued, 100, 99), Ok(()));
        assert_eq!(
            activation_allowed(State::Issued, 100, 100),
            Err(ActivationRefusal::Expired)
        );
        for state in [
            State::Activated,
            State::Active,
            State::Invalidated,
            State::Replaced,
            State::Revoked,
            State::Unassigned,
        ] {
            assert_eq!(
                activation_allowed(state, 100, 1),
                Err(ActivationRefusal::Gone)
            );
        }
    }

    #[test]
    fn attempts_count_down_to_invalidation() {
        assert_eq!(after_wrong_password(1, 5), WrongPassword::AttemptsLeft(4));
        assert_eq!(after_wrong_password(4, 5), WrongPassword::AttemptsLeft(1));
        assert_eq!(after_wrong_password(5, 5), WrongPassword::Invalidated);
        assert_eq!(after_wrong_password(6, 5), WrongPassword::Invalidated);
    }

    #[test]
    fn first_code_at_own_period() {
        let now = 1_700_000_010;
        let code = PARAMS.code_at(SECRET, now);
        assert_eq!(
            confirm_first_code(SECRET, &PARAMS, &code, now, 1, true),
            Confirmation::Confirmed {
                step: PARAMS.step_at(now)
            }
        );
    }

    #[test]
    fn thirty_second_app_is_adapted_or_refused() {
        // 1_700_000_040 lies in the second half of a 60-second step, so its
        // 30-second code differs from every nearby 60-second code.
        let now = 1_700_000_040;
        let thirty = TokenParams {
            period: 30,
            ..PARAMS
        };
        let code = thirty.code_at(SECRET, now);
        assert_eq!(PARAMS.matching_step(SECRET, &code, now, 1), None);
        assert_eq!(
            confirm_first_code(SECRET, &PARAMS, &code, now, 1, true),
            Confirmation::Adapted {
                period: 30,
                step: thirty.step_at(now)
            }
        );
        assert_eq!(
            confirm_first_code(SECRET, &PARAMS, &code, now, 1, false),
            Confirmation::Wrong
        );
    }

    #[test]
    fn wrong_code_is_wrong() {
        assert_eq!(
            confirm_first_code(SECRET, &PARAMS, "000000", 1_700_000_040, 1, true),
            Confirmation::Wrong
        );
    }
}
