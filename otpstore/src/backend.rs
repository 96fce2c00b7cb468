//! What a database behind the store does ([`Backend`]), and the decisions
//! every backend shares: which code is accepted, which step an imported
//! secret has already spent, whether a user may be issued a token. A
//! backend reads rows, hands them to these functions and writes what they
//! decide; the decisions themselves live here once.

use std::path::Path;

use otpcore::totp::{Algorithm, TokenParams};
use otpcore::verify::{self, Counters, Policy, Refusal, Verdict};
use subtle::ConstantTimeEq;

use crate::copy::{CopyRead, CopyWrite};
use crate::error::{Result, StoreError, VerifyError};
use crate::seal::Keys;
use crate::{
    ActivationFailure, AuditEntry, AuditResult, Enrolment, ImportedToken, NewEnrolment, Resync,
    VerifyOutcome, VerifyRequest,
};
use otpcore::rules::UserId;

/// The SQL side of a store: one implementation per database. Every method
/// is one statement or one transaction; a transaction that reads before it
/// writes takes its write lock (or the row locks it needs) up front.
pub(crate) trait Backend: Send + Sync {
    /// The sealed key check value, once a key is known.
    fn key_check(&self) -> Result<Option<Vec<u8>>>;
    /// Records the sealed key check value, unless another process did first.
    fn set_key_check(&self, sealed: &[u8]) -> Result<()>;
    /// Records a new `issued` enrolment; its ID.
    fn issue(
        &self,
        keys: &Keys,
        new: &NewEnrolment<'_>,
        password_hash: &str,
        secret: &[u8],
        now: u64,
    ) -> Result<i64>;
    fn import_tokens(
        &self,
        keys: &Keys,
        tokens: &[ImportedToken<'_>],
        service_id: &str,
        replace: bool,
        now: u64,
    ) -> Result<()>;
    fn set_power_safe(&self, power_safe: bool) -> Result<()>;
    fn withdraw(&self, id: i64) -> Result<bool>;
    fn by_id(&self, id: i64) -> Result<Option<Enrolment>>;
    fn by_ids(&self, service_id: &str, user_id: &UserId) -> Result<Option<Enrolment>>;
    fn pending(&self, user: &str) -> Result<Option<Enrolment>>;
    fn active(&self, user: &str) -> Result<Option<Enrolment>>;
    fn latest(&self, user: &str) -> Result<Option<Enrolment>>;
    fn list(&self) -> Result<Vec<Enrolment>>;
    /// Takes a try; the stored password hash to check against.
    fn reserve_activation_attempt(&self, id: i64, limit: u32, now: u64) -> Result<Option<String>>;
    fn activation_failed(&self, id: i64, limit: u32) -> Result<Option<ActivationFailure>>;
    /// Activates; the sealed secret and the user ID it is bound to.
    fn activate(&self, id: i64, now: u64) -> Result<Option<(Vec<u8>, String)>>;
    /// The sealed secret of the enrolment `id`.
    fn sealed_secret(&self, id: i64) -> Result<Vec<u8>>;
    /// Makes an `activated` enrolment active with the confirmed `period`
    /// and first used `step`; the user's previous active token, if any, is
    /// replaced in the same transaction. `false` if it was not `activated`.
    fn mark_confirmed(&self, id: i64, period: u64, step: u64, now: u64) -> Result<bool>;
    /// Verifies the requests in one transaction, each decision audited in
    /// it; the outcomes in the order of `requests`.
    fn verify_batch(
        &self,
        keys: &Keys,
        requests: &[VerifyRequest<'_>],
        now: u64,
        policy: &Policy,
    ) -> Result<Vec<VerifyOutcome>>;
    fn unlock(&self, user: &str) -> Result<bool>;
    /// Records a learnt `drift` and the second code's `step` on the active
    /// enrolment `id`, if the replay state allows it (`now_step` is the
    /// current step, `window` how far ahead of it a used step may lie).
    fn resync(&self, id: i64, drift: i64, step: u64, now_step: u64, window: u64) -> Result<Resync>;
    fn counters(&self, user: &str) -> Result<Option<Counters>>;
    fn revoke(&self, user: &str) -> Result<usize>;
    /// A consistent copy of the database in a new file at `path`.
    fn backup(&self, path: &Path) -> Result<()>;
    fn extend(&self, id: i64, expires_at: u64) -> Result<bool>;
    /// Appends an entry whose texts are already escaped.
    fn audit(&self, entry: &AuditEntry) -> Result<()>;
    fn audit_entries(&self, user: Option<&str>, since: u64) -> Result<Vec<AuditEntry>>;
    /// A reader of the whole store inside one read transaction: a
    /// consistent snapshot while others write.
    fn copy_reader(&self) -> Result<Box<dyn CopyRead + '_>>;
    /// A writer of a copy into this database, inside one transaction that
    /// holds its tables against other writers.
    fn copy_writer(&self) -> Result<Box<dyn CopyWrite + '_>>;
    /// How many enrolments are in each state, by state name.
    fn token_states(&self) -> Result<Vec<(String, u64)>>;
    /// Deletes at most `limit` audit entries older than `before`; how many.
    fn prune_audit(&self, before: u64, limit: u64) -> Result<u64>;
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The columns of a new enrolment row.
pub(crate) struct Insert<'a> {
    pub user: &'a str,
    pub email: &'a str,
    pub service_id: &'a str,
    pub password_hash: &'a str,
    pub secret: &'a [u8],
    pub params: TokenParams,
    pub language: &'a str,
    pub state: otpcore::enrol::State,
    pub now: u64,
    pub expires_at: u64,
    pub last_step: Option<u64>,
}

impl<'a> Insert<'a> {
    /// The row of a new `issued` enrolment.
    pub(crate) fn issued(
        new: &NewEnrolment<'a>,
        password_hash: &'a str,
        secret: &'a [u8],
        now: u64,
    ) -> Insert<'a> {
        Insert {
            user: new.user,
            email: new.email,
            service_id: new.service_id,
            password_hash,
            secret,
            params: new.params,
            language: new.language,
            state: otpcore::enrol::State::Issued,
            now,
            expires_at: new.expires_at,
            last_step: None,
        }
    }

    /// The row of an imported token, active at once; `spent` is the last
    /// step its secret already used here.
    pub(crate) fn imported(
        token: &ImportedToken<'a>,
        service_id: &'a str,
        spent: Option<u64>,
        now: u64,
    ) -> Insert<'a> {
        Insert {
            user: token.user,
            email: "",
            service_id,
            // No PHC string: no password ever matches it.
            password_hash: "!",
            secret: token.secret,
            params: token.params,
            language: "",
            state: otpcore::enrol::State::Active,
            now,
            expires_at: now,
            last_step: spent.max(token.last_step),
        }
    }

    /// When the row counts as confirmed: at once for an imported token.
    pub(crate) fn confirmed_at(&self) -> Option<i64> {
        (self.state == otpcore::enrol::State::Active).then_some(to_i64(self.now))
    }
}

/// Refuses a user who has a pending or active enrolment (their `states`),
/// unless `replace`.
pub(crate) fn refuse_existing(states: &[String], user: &str, replace: bool) -> Result<()> {
    if replace {
        return Ok(());
    }
    if states.iter().any(|s| s == "active") {
        return Err(StoreError::HasActive {
            user: user.to_owned(),
        });
    }
    if !states.is_empty() {
        return Err(StoreError::HasPending {
            user: user.to_owned(),
        });
    }
    Ok(())
}

/// One of a user's enrolments that has used steps: its user ID, sealed
/// secret, period and last used step.
pub(crate) struct SpentRow {
    pub user_id: String,
    pub sealed: Vec<u8>,
    pub period: i64,
    pub last_step: i64,
}

/// The last step (of `token`'s period) that the enrolments in `rows`
/// holding the same secret already used, if any. Secrets are compared in
/// constant time; a record that does not decrypt may hold the same secret,
/// so its use counts too.
pub(crate) fn spent_by_same_secret(
    keys: &Keys,
    rows: &[SpentRow],
    token: &ImportedToken<'_>,
) -> Option<u64> {
    rows.iter()
        .filter(|row| {
            keys.unseal(&row.sealed, row.user_id.as_bytes())
                .is_none_or(|old| bool::from(old.as_slice().ct_eq(token.secret)))
        })
        .map(|row| {
            verify::spent_through(
                to_u64(row.last_step),
                to_u64(row.period),
                token.params.period,
            )
        })
        .max()
}

/// A user's active token as read, locked, for verification.
#[derive(Clone)]
pub(crate) struct TokenRow {
    pub id: i64,
    pub user_id: String,
    pub sealed: Vec<u8>,
    pub algorithm: String,
    pub digits: u32,
    pub period: i64,
    pub last_step: Option<i64>,
    pub failures: u32,
    pub locked_until: Option<i64>,
    pub last_wrong: Option<Vec<u8>>,
    pub last_wrong_at: Option<i64>,
    pub drift: i64,
}

/// What a verification writes.
pub(crate) enum Plan {
    /// Nothing to write: the answer is known.
    Answer(VerifyOutcome),
    /// Accept if `step` is still later than the stored last step (one
    /// conditional UPDATE that also clears the failures); a replay if not.
    Advance { id: i64, step: u64 },
    /// Refuse, storing the new failure counters.
    Fail {
        id: i64,
        refusal: Refusal,
        counters: Counters,
    },
}

/// Decides one code against the user's active token (`None`: no token).
pub(crate) fn plan_verification(
    keys: &Keys,
    row: Option<TokenRow>,
    request: &VerifyRequest<'_>,
    now: u64,
    policy: &Policy,
) -> Result<Plan> {
    let Some(row) = row else {
        return Ok(Plan::Answer(VerifyOutcome::Reject(Refusal::NoToken)));
    };
    let (Some(secret), Some(algorithm)) = (
        keys.unseal(&row.sealed, row.user_id.as_bytes()),
        Algorithm::parse(&row.algorithm),
    ) else {
        return Ok(Plan::Answer(VerifyOutcome::Error(VerifyError::Unreadable(
            row.id,
        ))));
    };
    let params = TokenParams {
        algorithm,
        digits: row.digits,
        period: to_u64(row.period),
    };
    let counters = Counters {
        last_step: row.last_step.map(to_u64),
        failures: row.failures,
        locked_until: row.locked_until.map(to_u64),
        last_wrong: row
            .last_wrong
            .and_then(|fp| <[u8; 16]>::try_from(fp.as_slice()).ok())
            .zip(row.last_wrong_at.map(to_u64)),
        drift: row.drift,
    };
    let fingerprint = keys.fingerprint(row.id, request.code)?;
    Ok(
        match verify::decide(
            &secret,
            &params,
            request.code,
            now,
            policy,
            &counters,
            fingerprint,
        ) {
            Verdict::Accept { step } => Plan::Advance { id: row.id, step },
            Verdict::Reject {
                refusal,
                update: Some(counters),
            } => Plan::Fail {
                id: row.id,
                refusal,
                counters,
            },
            Verdict::Reject {
                refusal,
                update: None,
            } => Plan::Answer(VerifyOutcome::Reject(refusal)),
        },
    )
}

/// The outcome of an [`Plan::Advance`]: whether its conditional UPDATE won.
pub(crate) fn advanced(won: bool) -> VerifyOutcome {
    if won {
        VerifyOutcome::Accept
    } else {
        VerifyOutcome::Reject(Refusal::Replay)
    }
}

/// The audit trail's result and reason for a verification outcome.
pub(crate) fn audit_result(outcome: &VerifyOutcome) -> (AuditResult, &'static str) {
    match outcome {
        VerifyOutcome::Accept => (AuditResult::Ok, "code accepted"),
        VerifyOutcome::Reject(refusal) => (AuditResult::Fail, refusal.as_str()),
        VerifyOutcome::Error(_) => (AuditResult::Error, "token record unreadable"),
    }
}

/// The stored form of a fingerprint and its time, for the failure columns.
pub(crate) fn last_wrong_columns(counters: &Counters) -> (Option<Vec<u8>>, Option<i64>) {
    (
        counters.last_wrong.map(|(fp, _)| fp.to_vec()),
        counters.last_wrong.map(|(_, at)| to_i64(at)),
    )
}
