//! Recovery codes: a set of one-use codes per active token, handed out in
//! clear once (at confirmation, or when an administrator replaces the set)
//! and stored only as keyed hashes bound to the enrolment. A code of
//! recovery shape (`otpcore::recovery`) is checked here, in a transaction
//! of its own: the token's lock and failures apply as to any code, and the
//! code is spent by one conditional DELETE, so two uses at the same time,
//! on one node or several, let in exactly one. The codes go with their
//! token: the database removes them when the enrolment leaves `active`
//! (revoked, replaced) or is deleted.

use std::sync::Arc;

use otpcore::notice::{Notice, What};
use otpcore::verify::{Attempt, Counters, Policy, RecoveryVerdict, Refusal};
use rand::rngs::OsRng;
use rand::Rng;
use zeroize::Zeroizing;

use crate::backend::{lock_notice, to_u64, Contact};
use crate::error::{Result, VerifyError};
use crate::seal::Keys;
use crate::{AuditResult, Store, VerifyOutcome, VerifyRequest};

/// One recovery code in its shown form (`12345-67890`), for the one time
/// it is shown. Its `Debug` form does not show it.
pub struct RecoveryCode(Zeroizing<String>);

impl RecoveryCode {
    /// A fresh code of ten digits from the operating system's random source.
    fn fresh() -> (RecoveryCode, Zeroizing<String>) {
        let digits: Zeroizing<String> = Zeroizing::new(
            (0..otpcore::recovery::DIGITS)
                .map(|_| char::from(b'0' + OsRng.gen_range(0..10u8)))
                .collect(),
        );
        (RecoveryCode(otpcore::recovery::shown(&digits)), digits)
    }

    /// `12345-67890`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode(..)")
    }
}

/// A user's active token as read, locked, for a recovery code.
pub(crate) struct RecoveryRow {
    pub id: i64,
    pub period: i64,
    pub failures: u32,
    pub locked_until: Option<i64>,
    pub last_wrong: Option<Vec<u8>>,
    pub last_wrong_at: Option<i64>,
    pub contact: Contact,
}

/// A recovery code given for a token: the hash to spend and what its
/// verdict depends on.
pub(crate) struct RecoveryAttempt {
    pub id: i64,
    pub hash: Vec<u8>,
    counters: Counters,
    fingerprint: [u8; 16],
    period: u64,
    contact: Contact,
}

impl RecoveryAttempt {
    /// The code's ten `digits` against the token `row`.
    pub(crate) fn new(keys: &Keys, row: RecoveryRow, digits: &str) -> Result<RecoveryAttempt> {
        Ok(RecoveryAttempt {
            id: row.id,
            hash: keys.recovery_hash(row.id, digits)?,
            fingerprint: keys.fingerprint(row.id, digits)?,
            counters: Counters {
                last_step: None,
                failures: row.failures,
                locked_until: row.locked_until.map(to_u64),
                last_wrong: row
                    .last_wrong
                    .and_then(|fp| <[u8; 16]>::try_from(fp.as_slice()).ok())
                    .zip(row.last_wrong_at.map(to_u64)),
                drift: 0,
            },
            period: to_u64(row.period),
            contact: row.contact,
        })
    }

    fn judge(&self, now: u64, policy: &Policy, unused: bool) -> RecoveryVerdict {
        Attempt::new(now, policy, &self.counters, self.fingerprint)
            .judge_recovery(self.period, unused)
    }

    /// Why the code is refused before it is looked up (the token is
    /// locked, or the same wrong code came again), if it is: then nothing
    /// is written but the audit line.
    pub(crate) fn refused_unseen(&self, now: u64, policy: &Policy) -> Option<Refusal> {
        match self.judge(now, policy, true) {
            RecoveryVerdict::Accept => None,
            RecoveryVerdict::Reject { refusal, .. } => Some(refusal),
        }
    }

    /// The outcome once the conditional DELETE did (`spent`) or did not
    /// find the code, and the token's failures, lock and last wrong code
    /// to store: cleared on success, counted on failure.
    pub(crate) fn settle(
        &self,
        now: u64,
        policy: &Policy,
        spent: bool,
    ) -> (VerifyOutcome, Counters) {
        match self.judge(now, policy, spent) {
            RecoveryVerdict::Accept => (VerifyOutcome::Accept, Counters::default()),
            RecoveryVerdict::Reject { refusal, update } => (
                VerifyOutcome::Reject(refusal),
                update.unwrap_or(self.counters),
            ),
        }
    }
}

impl RecoveryAttempt {
    /// The notice of a settled attempt: the code's use, with `left` codes
    /// remaining, when it was accepted; the lock, when its failure locked
    /// the token (`counters` as stored after it).
    pub(crate) fn notice(
        &self,
        request: &VerifyRequest<'_>,
        outcome: &VerifyOutcome,
        counters: &Counters,
        left: u64,
        now: u64,
    ) -> Option<Notice> {
        match outcome {
            VerifyOutcome::Accept | VerifyOutcome::Reauth => Some(self.contact.notice(
                What::RecoveryUsed {
                    channel: request.channel.as_str().to_owned(),
                    left,
                },
                request.user,
                now,
            )),
            VerifyOutcome::Reject(_) => {
                lock_notice(&self.contact, request, &self.counters, counters, now)
            }
            VerifyOutcome::Error(_) => None,
        }
    }
}

/// The audit trail's result and reason for a recovery code's outcome;
/// `left` is how many codes the token has after it.
pub(crate) fn audit_line(outcome: &VerifyOutcome, left: u64) -> (AuditResult, String) {
    match outcome {
        // A recovery code is spent when accepted, so it never comes back as
        // a renegotiation; both mean it let the user in.
        VerifyOutcome::Accept | VerifyOutcome::Reauth => (
            AuditResult::Recovery,
            format!("recovery code accepted; {left} left"),
        ),
        VerifyOutcome::Reject(refusal) => (AuditResult::Fail, refusal.as_str().to_owned()),
        VerifyOutcome::Error(_) => (AuditResult::Error, "token record unreadable".to_owned()),
    }
}

/// `count` fresh codes, no two alike, and their hashes for the enrolment `id`.
fn fresh_set(keys: &Keys, id: i64, count: u32) -> Result<(Vec<RecoveryCode>, Vec<Vec<u8>>)> {
    let mut codes = Vec::new();
    let mut hashes: Vec<Vec<u8>> = Vec::new();
    while codes.len() < count as usize {
        let (code, digits) = RecoveryCode::fresh();
        let hash = keys.recovery_hash(id, &digits)?;
        if !hashes.contains(&hash) {
            hashes.push(hash);
            codes.push(code);
        }
    }
    Ok((codes, hashes))
}

impl Store {
    /// Gives the active enrolment `id` a new set of `count` recovery
    /// codes, the old set gone: the codes in clear, the one time they
    /// exist so. `None` when the enrolment is not active.
    pub fn new_recovery_codes(&self, id: i64, count: u32) -> Result<Option<Vec<RecoveryCode>>> {
        let (codes, hashes) = fresh_set(&self.keys, id, count)?;
        Ok(self
            .db
            .replace_recovery_codes(id, &hashes)?
            .then_some(codes))
    }

    /// Replaces the recovery codes of `user`'s active token with `count`
    /// new ones ([`Store::new_recovery_codes`]); `None` when the user has
    /// no active token.
    pub fn replace_recovery_codes(
        &self,
        user: &str,
        count: u32,
    ) -> Result<Option<Vec<RecoveryCode>>> {
        match self.active(user)? {
            Some(token) => self.new_recovery_codes(token.id, count),
            None => Ok(None),
        }
    }

    /// How many unused recovery codes `user`'s active token has; `None`
    /// without an active token.
    pub fn recovery_codes_left(&self, user: &str) -> Result<Option<u64>> {
        self.db.recovery_codes_left(user)
    }

    /// Verifies login codes: those of recovery shape as recovery codes,
    /// each in a transaction of its own (a store failure refuses that one
    /// only), the others in one batch ([`Store::verify_batch`]). The
    /// outcomes in the order of `requests`.
    pub fn verify_codes(
        &self,
        requests: &[VerifyRequest<'_>],
        now: u64,
        policy: &Policy,
    ) -> Result<Vec<VerifyOutcome>> {
        let shapes: Vec<Option<Zeroizing<String>>> = requests
            .iter()
            .map(|r| otpcore::recovery::digits(r.code))
            .collect();
        if shapes.iter().all(Option::is_none) {
            return self.verify_batch(requests, now, policy);
        }
        let plain: Vec<VerifyRequest<'_>> = requests
            .iter()
            .zip(&shapes)
            .filter(|(_, shape)| shape.is_none())
            .map(|(r, _)| *r)
            .collect();
        let mut plain_outcomes = if plain.is_empty() {
            Vec::new()
        } else {
            self.verify_batch(&plain, now, policy)?
        }
        .into_iter();
        requests
            .iter()
            .zip(&shapes)
            .map(|(request, shape)| match shape {
                Some(digits) => {
                    match self
                        .db
                        .verify_recovery(&self.keys, request, digits, now, policy)
                    {
                        Ok((outcome, notice)) => {
                            self.notify(notice);
                            Ok(outcome)
                        }
                        Err(e) => Ok(VerifyOutcome::Error(VerifyError::Store(Arc::new(e)))),
                    }
                }
                None => plain_outcomes
                    .next()
                    .ok_or(crate::error::StoreError::Internal(
                        "a verified code vanished",
                    )),
            })
            .collect()
    }
}
