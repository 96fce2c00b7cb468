//! What a database behind the store does ([`Backend`]), and the decisions
//! every backend shares: which code is accepted, which step an imported
//! secret has already spent, whether a user may be issued a token. A
//! backend reads rows, hands them to these functions and writes what they
//! decide; the decisions themselves live here once.

use std::ops::ControlFlow;
use std::path::Path;

use otpcore::hotp::{self, HotpParams};
use otpcore::notice::{Notice, What};
use otpcore::totp::{Algorithm, TokenParams};
use otpcore::verify::{self, Attempt, Counters, Policy, Refusal, Verdict};
use subtle::ConstantTimeEq;

use crate::copy::{CopyRead, CopyWrite};
use crate::error::{Result, StoreError, VerifyError};
use crate::seal::Keys;
use crate::{
    audit_text, ActivationFailure, AuditEntry, AuditResult, Enrolment, HardwareToken,
    ImportedToken, NewEnrolment, Resync, TokenKind, VerifyOutcome, VerifyRequest,
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
    /// Records imported tokens, all or none; the notices for the active
    /// tokens they replaced.
    fn import_tokens(
        &self,
        keys: &Keys,
        tokens: &[ImportedToken<'_>],
        service_id: &str,
        replace: bool,
        now: u64,
    ) -> Result<Vec<Notice>>;
    /// Loads hardware tokens `unassigned`, all or none; a serial number
    /// already stored refuses them all.
    fn import_hardware(
        &self,
        keys: &Keys,
        tokens: &[HardwareToken<'_>],
        service_id: &str,
        now: u64,
    ) -> Result<()>;
    /// Gives the unassigned token `serial` to `user`, active; its ID and
    /// the notice for the active token it replaced, if any.
    fn assign(
        &self,
        serial: &str,
        user: &str,
        replace: bool,
        now: u64,
    ) -> Result<(i64, Vec<Notice>)>;
    fn unassigned(&self) -> Result<Vec<Enrolment>>;
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
    /// replaced in the same transaction. `None` if it was not `activated`;
    /// otherwise the notices for the active token it replaced.
    fn mark_confirmed(
        &self,
        id: i64,
        period: u64,
        step: u64,
        now: u64,
    ) -> Result<Option<Vec<Notice>>>;
    /// Verifies the requests in one transaction, each decision audited in
    /// it; the outcomes in the order of `requests`, and the notices of the
    /// tokens they locked.
    fn verify_batch(
        &self,
        keys: &Keys,
        requests: &[VerifyRequest<'_>],
        now: u64,
        policy: &Policy,
    ) -> Result<(Vec<VerifyOutcome>, Vec<Notice>)>;
    fn unlock(&self, user: &str) -> Result<bool>;
    /// Records an open challenge by the digest of its State, and removes
    /// the expired ones.
    fn open_challenge(
        &self,
        digest: &[u8; 32],
        user: &str,
        client: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<()>;
    /// Deletes the challenge of `digest`; true when it was open for `user`
    /// through `client` at `now`.
    fn take_challenge(&self, digest: &[u8; 32], user: &str, client: &str, now: u64)
        -> Result<bool>;
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
    /// Hands `each` the audit entries, oldest first, optionally of one
    /// user and from a time, as they are read: memory does not grow with
    /// the trail. Stops early when `each` breaks.
    fn audit_each(
        &self,
        user: Option<&str>,
        since: u64,
        each: &mut dyn FnMut(AuditEntry) -> ControlFlow<()>,
    ) -> Result<()>;
    /// A reader of the whole store inside one read transaction: a
    /// consistent snapshot while others write.
    fn copy_reader(&self) -> Result<Box<dyn CopyRead + '_>>;
    /// A writer of a copy into this database, inside one transaction that
    /// holds its tables against other writers.
    fn copy_writer(&self) -> Result<Box<dyn CopyWrite + '_>>;
    /// Replaces the recovery codes of the enrolment `id` with `hashes`, in
    /// one transaction; `false` (nothing changed) unless it is active.
    fn replace_recovery_codes(&self, id: i64, hashes: &[Vec<u8>]) -> Result<bool>;
    /// How many recovery codes the user's active token has left.
    fn recovery_codes_left(&self, user: &str) -> Result<Option<u64>>;
    /// Verifies the recovery code `digits` of `request.user` in one
    /// transaction (the token read and locked, the code spent by a
    /// conditional DELETE), the decision audited in it; the notice of the
    /// code's use or of the lock it caused, if any.
    fn verify_recovery(
        &self,
        keys: &Keys,
        request: &VerifyRequest<'_>,
        digits: &str,
        now: u64,
        policy: &Policy,
    ) -> Result<(VerifyOutcome, Option<Notice>)>;
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
    pub kind: TokenKind,
    pub serial: Option<&'a str>,
    pub drift: i64,
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
            kind: TokenKind::Totp,
            serial: None,
            drift: 0,
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
            kind: TokenKind::Totp,
            serial: None,
            drift: 0,
        }
    }

    /// The row of a hardware token loaded for nobody yet.
    pub(crate) fn unassigned(
        token: &HardwareToken<'a>,
        service_id: &'a str,
        now: u64,
    ) -> Insert<'a> {
        Insert {
            user: "",
            email: "",
            service_id,
            password_hash: "!",
            secret: token.secret,
            params: token.params,
            language: "",
            state: otpcore::enrol::State::Unassigned,
            now,
            expires_at: now,
            last_step: token.last_step,
            kind: token.kind,
            serial: Some(token.serial),
            drift: token.drift,
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

/// The ID of the token `serial` (its ID, state and user as read), if it
/// can be assigned: it exists and nobody has it.
pub(crate) fn assignable(serial: &str, token: Option<(i64, String, String)>) -> Result<i64> {
    match token {
        None => Err(StoreError::UnknownSerial(serial.to_owned())),
        Some((id, state, _)) if state == "unassigned" => Ok(id),
        Some((_, _, user)) => Err(StoreError::SerialAssigned {
            serial: serial.to_owned(),
            user,
        }),
    }
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

/// Where and how a token's owner is told about it: the address, language
/// and service ID recorded at issue.
#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub email: String,
    pub language: String,
    pub service_id: String,
}

impl Contact {
    /// The notice of `what`, for `user` at `at`.
    pub(crate) fn notice(&self, what: What, user: &str, at: u64) -> Notice {
        Notice {
            what,
            user: user.to_owned(),
            email: self.email.clone(),
            language: self.language.clone(),
            service_id: self.service_id.clone(),
            at,
        }
    }
}

/// The notice that `after` locked the token when `before` had it
/// unlocked at `now`, if it did: one per lock, never for a refusal while
/// locked.
pub(crate) fn lock_notice(
    contact: &Contact,
    request: &VerifyRequest<'_>,
    before: &Counters,
    after: &Counters,
    now: u64,
) -> Option<Notice> {
    let locked = |c: &Counters| c.locked_until.is_some_and(|t| now < t);
    let until = after.locked_until?;
    (!locked(before) && locked(after)).then(|| {
        contact.notice(
            What::Locked {
                channel: request.channel.as_str().to_owned(),
                until,
            },
            request.user,
            now,
        )
    })
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
    pub kind: String,
    /// The fingerprint of the last accepted code, the RADIUS client that
    /// sent it and when, for the renegotiation window.
    pub reauth: Option<(Vec<u8>, String, i64)>,
    pub contact: Contact,
}

/// What a verification writes.
pub(crate) enum Plan {
    /// Nothing to write: the answer is known.
    Answer(VerifyOutcome),
    /// Accept if `step` is still later than the stored last step (one
    /// conditional UPDATE that also clears the failures); a replay if not.
    /// `fingerprint` is the code's, for the renegotiation window.
    Advance {
        id: i64,
        step: u64,
        fingerprint: [u8; 16],
    },
    /// Refuse, storing the new failure counters; `notice` when they lock
    /// the token.
    Fail {
        id: i64,
        refusal: Refusal,
        counters: Counters,
        notice: Option<Box<Notice>>,
    },
}

/// Decides one code against the user's active token (`None`: no token).
pub(crate) fn plan_verification(
    keys: &Keys,
    row: Option<&TokenRow>,
    request: &VerifyRequest<'_>,
    now: u64,
    policy: &Policy,
) -> Result<Plan> {
    let Some(row) = row else {
        let refusal = if request.first_factor_wrong {
            Refusal::WrongFirstFactor
        } else {
            Refusal::NoToken
        };
        return Ok(Plan::Answer(VerifyOutcome::Reject(refusal)));
    };
    let (Some(secret), Some(algorithm), Some(kind)) = (
        keys.unseal(&row.sealed, row.user_id.as_bytes()),
        Algorithm::parse(&row.algorithm),
        TokenKind::parse(&row.kind),
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
            .as_ref()
            .and_then(|fp| <[u8; 16]>::try_from(fp.as_slice()).ok())
            .zip(row.last_wrong_at.map(to_u64)),
        drift: row.drift,
    };
    let fingerprint = keys.fingerprint(row.id, request.code)?;
    if !request.first_factor_wrong
        && reauthorised(row.reauth.as_ref(), request, &counters, fingerprint, now)
    {
        return Ok(Plan::Answer(VerifyOutcome::Reauth));
    }
    let verdict = match kind {
        _ if request.first_factor_wrong => verify::wrong_first_factor(now, policy, &counters),
        TokenKind::Totp => verify::decide(
            &secret,
            &params,
            request.code,
            now,
            policy,
            &counters,
            fingerprint,
        ),
        TokenKind::Hotp => {
            let look_ahead = Policy {
                window: policy.hotp_window,
                ..*policy
            };
            let hotp_params = HotpParams {
                algorithm,
                digits: row.digits,
            };
            hotp::decide(
                &secret,
                &hotp_params,
                request.code,
                Attempt::new(now, &look_ahead, &counters, fingerprint),
            )
        }
    };
    Ok(match verdict {
        Verdict::Accept { step } => Plan::Advance {
            id: row.id,
            step,
            fingerprint,
        },
        Verdict::Reject {
            refusal,
            update: Some(update),
        } => Plan::Fail {
            id: row.id,
            refusal,
            notice: lock_notice(&row.contact, request, &counters, &update, now).map(Box::new),
            counters: update,
        },
        Verdict::Reject {
            refusal,
            update: None,
        } => Plan::Answer(VerifyOutcome::Reject(refusal)),
    })
}

/// Whether `request` presents again the code accepted last, through the
/// same RADIUS client, within that client's renegotiation window (ending
/// `seconds` after the Accept), while the token is not locked.
fn reauthorised(
    accepted: Option<&(Vec<u8>, String, i64)>,
    request: &VerifyRequest<'_>,
    counters: &Counters,
    fingerprint: [u8; 16],
    now: u64,
) -> bool {
    let (Some(reauth), Some((accepted, client, at))) = (request.reauth, accepted) else {
        return false;
    };
    reauth.seconds > 0
        && counters.locked_until.is_none_or(|t| t <= now)
        && client == reauth.client
        && now < to_u64(*at).saturating_add(reauth.seconds)
        && bool::from(accepted.as_slice().ct_eq(&fingerprint))
}

/// What an accepted `request` leaves for the renegotiation window: the
/// code's fingerprint, the RADIUS client and the time; `None` (nothing to
/// reaccept) for the other channels and for a client without a window.
pub(crate) fn reauth_after_accept(
    fingerprint: [u8; 16],
    request: &VerifyRequest<'_>,
    now: u64,
) -> Option<(Vec<u8>, String, i64)> {
    let reauth = request.reauth.filter(|r| r.seconds > 0)?;
    Some((fingerprint.to_vec(), reauth.client.to_owned(), to_i64(now)))
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
        VerifyOutcome::Reauth => (
            AuditResult::Reauth,
            "code accepted again within the renegotiation window",
        ),
        VerifyOutcome::Reject(refusal) => (AuditResult::Fail, refusal.as_str()),
        VerifyOutcome::Error(_) => (AuditResult::Error, "token record unreadable"),
    }
}

/// One audit row of a verification, as both backends write it.
pub(crate) struct AuditRow {
    pub user: String,
    pub channel: &'static str,
    pub peer: String,
    pub result: &'static str,
    pub reason: &'static str,
}

/// The audit rows of a batch's decisions, one per request, in their order.
pub(crate) fn audit_rows(
    requests: &[VerifyRequest<'_>],
    outcomes: &[VerifyOutcome],
) -> Vec<AuditRow> {
    requests
        .iter()
        .zip(outcomes)
        .map(|(request, outcome)| {
            let (result, reason) = audit_result(outcome);
            AuditRow {
                user: audit_text(request.user),
                channel: request.channel.as_str(),
                peer: audit_text(request.peer),
                result: result.as_str(),
                reason,
            }
        })
        .collect()
}

/// The stored form of a fingerprint and its time, for the failure columns.
pub(crate) fn last_wrong_columns(counters: &Counters) -> (Option<Vec<u8>>, Option<i64>) {
    (
        counters.last_wrong.map(|(fp, _)| fp.to_vec()),
        counters.last_wrong.map(|(_, at)| to_i64(at)),
    )
}
