//! A token's first code, as the activation page and otpctl both confirm
//! it: the code checked against the secret the phone received, the token
//! made active when it matches, and one audit line for what was decided.

use otpcore::config::TokenConfig;
use otpcore::enrol::{confirm_first_code, Confirmation, State};
use zeroize::Zeroizing;

use crate::error::Result;
use crate::{AuditResult, Enrolment, Store};

/// The outcome of [`Store::confirm_first_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstCode {
    /// The token is active now, with this period; `adapted` when it was
    /// switched to 30 seconds.
    Active { period: u64, adapted: bool },
    /// The code matches no step.
    Wrong,
    /// The enrolment is not (or no longer) waiting for its first code.
    NotActivated,
}

/// A first code checked with the deployment's token settings: what came
/// of it, and what the audit trail records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstCodeChecked {
    pub outcome: FirstCode,
    /// The audit line's result and reason; `None` when the enrolment was
    /// not waiting for its first code, so nothing was decided about the
    /// code: the caller finds out what the enrolment is now and says so.
    pub audit: Option<(AuditResult, String)>,
}

impl Store {
    /// Checks the first code of an `activated` enrolment and,
    /// when it matches, makes the enrolment active. Spaces and hyphens in
    /// the code are ignored. With `adapt`, a code of 30-second steps
    /// switches the token to 30 seconds.
    pub fn confirm_first_code(
        &self,
        enrolment: &Enrolment,
        code: &str,
        now: u64,
        window: u64,
        adapt: bool,
    ) -> Result<FirstCode> {
        if enrolment.state != State::Activated {
            return Ok(FirstCode::NotActivated);
        }
        let secret = self.secret(enrolment)?;
        let code: Zeroizing<String> = Zeroizing::new(
            code.chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .collect(),
        );
        let (period, step) =
            match confirm_first_code(&secret, &enrolment.params, &code, now, window, adapt) {
                Confirmation::Confirmed { step } => (enrolment.params.period, step),
                Confirmation::Adapted { period, step } => (period, step),
                Confirmation::Wrong => return Ok(FirstCode::Wrong),
            };
        let Some(replaced) = self.db.mark_confirmed(enrolment.id, period, step, now)? else {
            return Ok(FirstCode::NotActivated);
        };
        self.notify(replaced);
        self.notify([Store::activated(enrolment, now)]);
        Ok(FirstCode::Active {
            period,
            adapted: period != enrolment.params.period,
        })
    }

    /// Confirms `enrolment` with its first code under `token`'s window and
    /// period adaptation ([`Store::confirm_first_code`]), and words the
    /// audit line for the outcome: the one confirmation of the activation
    /// page, its JSON API and otpctl.
    pub fn confirm_token(
        &self,
        enrolment: &Enrolment,
        code: &str,
        now: u64,
        token: &TokenConfig,
    ) -> Result<FirstCodeChecked> {
        let outcome =
            self.confirm_first_code(enrolment, code, now, token.window, token.adapt_period)?;
        let audit = match outcome {
            FirstCode::Active {
                period,
                adapted: true,
            } => Some((
                AuditResult::Ok,
                format!(
                    "first code confirmed, token active; period adapted to {period} s (the app ignores period={})",
                    enrolment.params.period
                ),
            )),
            FirstCode::Active { period, .. } => Some((
                AuditResult::Ok,
                format!("first code confirmed, token active (period {period} s)"),
            )),
            FirstCode::Wrong => Some((
                AuditResult::Fail,
                "confirmation refused: wrong first code".to_owned(),
            )),
            FirstCode::NotActivated => None,
        };
        Ok(FirstCodeChecked { outcome, audit })
    }
}
