//! The enrolment workflow behind the activation page and its JSON API:
//! activation (the enrolment the IDs name admitted, one of its tries
//! taken, the activation password checked, the secret handed out once) and
//! confirmation with the first code. Every decision is recorded; what the
//! answer looks like is the caller's business.
//!
//! Store work runs on blocking threads; an [`Attempt`] carries the time
//! the request came in.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use otpcore::enrol::{self, ActivationRefusal, State as EnrolState, WrongPassword};
use otpcore::rules::UserId;
use otpcore::totp::{self, TokenParams};
use otpstore::{ActivationHash, AuditResult, Channel, Enrolment, FirstCode, RecoveryCode, Store};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use crate::daemon::{unix_now, Daemon, Decision};

/// The audit trail's user for requests whose IDs match no enrolment.
pub const UNKNOWN_USER: &str = "-";
/// Activation password checks (argon2id, 19 MiB of memory each) that run
/// at once; further requests wait for one.
const CHECKS_AT_ONCE: usize = 2;
/// How long an activation request waits for a check before it is refused
/// as busy.
const CHECK_WAIT: Duration = Duration::from_secs(10);

/// The activation password checks that may run at once, and how long a
/// request waits for one. Bounding them bounds the memory and CPU that
/// activation requests can take, however many arrive.
pub struct PasswordChecks {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl PasswordChecks {
    /// `at_once` checks at a time; a request that got none within `wait`
    /// is refused as busy, and no try of the enrolment is taken.
    pub fn new(at_once: usize, wait: Duration) -> PasswordChecks {
        PasswordChecks {
            slots: Arc::new(Semaphore::new(at_once)),
            wait,
        }
    }

    /// A slot for one check; `None` when none came free in time.
    pub(crate) async fn take(&self) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// Two checks at once, and ten seconds' wait for one.
impl Default for PasswordChecks {
    fn default() -> PasswordChecks {
        PasswordChecks::new(CHECKS_AT_ONCE, CHECK_WAIT)
    }
}

/// One activation or confirmation request, as typed.
pub struct Attempt {
    /// Where it came from: the setup page, or the self-service socket.
    channel: Channel,
    service_id: String,
    user_id: String,
    /// The activation password or the first code.
    proof: Zeroizing<String>,
    peer: String,
    now: u64,
}

impl Attempt {
    /// A request through `channel` from `peer` for the enrolment of
    /// `service_id` and `user_id`, with its activation password or first
    /// code, as of now.
    pub fn new(
        channel: Channel,
        service_id: String,
        user_id: String,
        proof: Zeroizing<String>,
        peer: String,
    ) -> Attempt {
        Attempt {
            channel,
            service_id,
            user_id,
            proof,
            peer,
            now: unix_now(),
        }
    }

    fn record(&self, daemon: &Daemon, user: &str, ok: bool, reason: &str) {
        daemon.record(&Decision {
            channel: self.channel,
            peer: &self.peer,
            user,
            ok,
            reason,
            time: self.now,
        });
    }

    /// The enrolment the IDs name. IDs that name none are recorded as a
    /// refusal of `step`.
    fn lookup(&self, daemon: &Daemon, store: &Store, step: Step) -> Result<Enrolment, Missing> {
        let found = match UserId::parse(&self.user_id) {
            Some(user_id) => store.by_ids(&self.service_id, &user_id).map_err(|e| {
                log::error!("http: store lookup failed: {e}");
                Missing::StoreFailed
            })?,
            None => None,
        };
        found.ok_or_else(|| {
            let reason = format!("{} refused: unknown service ID or user ID", step.as_str());
            self.record(daemon, UNKNOWN_USER, false, &reason);
            Missing::Unknown
        })
    }
}

/// Why an attempt names no enrolment.
enum Missing {
    /// The IDs name none.
    Unknown,
    /// The store could not be asked.
    StoreFailed,
}

/// The token, delivered once.
pub struct Delivered {
    pub otpauth_uri: Zeroizing<String>,
    pub secret: Zeroizing<String>,
    pub params: TokenParams,
    pub account: String,
    pub service_id: String,
    pub user_id: UserId,
}

/// What came of an activation.
pub enum Activation {
    Delivered(Box<Delivered>),
    /// No enrolment under these IDs.
    Unknown,
    /// Wrong password; 0 tries left means it was just invalidated.
    WrongPassword {
        attempts_left: u32,
    },
    Expired,
    /// Not `issued` any more.
    Gone(EnrolState),
    /// No password check came free in time, or the tries left are all
    /// being checked: try again later.
    Busy,
    Internal,
}

impl Activation {
    /// Why an enrolment in this state cannot be activated, for the audit
    /// trail; `None` for answers that are not about its state.
    fn state_reason(&self) -> Option<String> {
        match self {
            Activation::Expired => Some("setup link expired".to_owned()),
            Activation::Gone(state) => Some(format!("enrolment is {}", state.as_str())),
            Activation::Unknown => Some("enrolment withdrawn".to_owned()),
            _ => None,
        }
    }
}

/// The two steps a phone takes: activation with the activation password,
/// then confirmation with the first code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Activation,
    Confirmation,
}

impl Step {
    /// `activation` or `confirmation`, as the audit trail names what was
    /// refused.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Activation => "activation",
            Step::Confirmation => "confirmation",
        }
    }
}

/// What came of a confirmation.
pub enum Confirmed {
    Active {
        period: u64,
        adapted: bool,
        /// The token's recovery codes, shown this once; empty when none
        /// are handed out.
        recovery_codes: Vec<RecoveryCode>,
    },
    /// Wrong code, or IDs that name no enrolment.
    Wrong,
    /// Not `activated`.
    Gone(EnrolState),
    Internal,
}

/// The workflow over a daemon's store, with its bound on password checks.
pub struct Workflow {
    daemon: Arc<Daemon>,
    checks: PasswordChecks,
}

impl Workflow {
    pub fn new(daemon: Arc<Daemon>, checks: PasswordChecks) -> Workflow {
        Workflow { daemon, checks }
    }

    /// A request from `peer` for the enrolment of `service_id` and
    /// `user_id`, with its activation password or first code, as of now.
    pub fn attempt(
        &self,
        service_id: &str,
        user_id: String,
        proof: String,
        peer: IpAddr,
    ) -> Attempt {
        // Phones like to capitalise; the service ID is the deployment's own.
        let typed = service_id.trim();
        let own = &self.daemon.config.service_id;
        let service_id = if typed.eq_ignore_ascii_case(own) {
            own.clone()
        } else {
            typed.to_owned()
        };
        Attempt::new(
            Channel::Http,
            service_id,
            user_id,
            Zeroizing::new(proof),
            peer.to_string(),
        )
    }

    /// Activation in three steps: admission; then, with one of the few
    /// password check slots, a try taken, the slow argon2id check and the
    /// outcome on a blocking thread, so that the check holds neither the
    /// store nor an async worker.
    pub async fn activate(&self, attempt: Attempt) -> Activation {
        let attempt = Arc::new(attempt);
        let admitted = {
            let a = Arc::clone(&attempt);
            with_store(&self.daemon, move |d, s| admit_activation(d, s, &a)).await
        };
        let e = match admitted {
            Some(Ok(e)) => e,
            Some(Err(answer)) => return answer,
            None => return Activation::Internal,
        };
        let Some(slot) = self.checks.take().await else {
            let a = Arc::clone(&attempt);
            let reason = "activation refused: too many password checks at once";
            with_store(&self.daemon, move |d, _| {
                a.record(d, &e.user, false, reason)
            })
            .await;
            return Activation::Busy;
        };
        let daemon = Arc::clone(&self.daemon);
        let task = tokio::task::spawn_blocking(move || {
            // The slot stays taken until the check ends, even when the client
            // gives up meanwhile.
            let _slot = slot;
            let hash = match reserve_attempt(&daemon, daemon.store(), &attempt, &e) {
                Ok(hash) => hash,
                Err(answer) => return answer,
            };
            match hash.verify(&attempt.proof) {
                Ok(right) => finish_activation(&daemon, daemon.store(), &attempt, e, right),
                Err(err) => {
                    log::error!("http: activation password check failed: {err}");
                    Activation::Internal
                }
            }
        });
        task.await.unwrap_or_else(|e| {
            log::error!("http: activation task failed: {e}");
            Activation::Internal
        })
    }

    /// Confirmation with the first code.
    pub async fn confirm(&self, attempt: Attempt) -> Confirmed {
        confirm_first_code(&self.daemon, attempt).await
    }
}

/// Confirmation with the first code, for the setup page and the
/// self-service socket alike: the code checked (adapting to 30-second
/// apps), the token made active, its first recovery codes handed out, each
/// step recorded.
pub async fn confirm_first_code(daemon: &Arc<Daemon>, attempt: Attempt) -> Confirmed {
    with_store(daemon, move |d, s| confirm(d, s, &attempt))
        .await
        .unwrap_or(Confirmed::Internal)
}

/// Runs `f` with the store on a blocking thread: store calls block.
pub(crate) async fn with_store<T, F>(daemon: &Arc<Daemon>, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&Daemon, &Store) -> T + Send + 'static,
{
    let daemon = Arc::clone(daemon);
    match tokio::task::spawn_blocking(move || f(&daemon, daemon.store())).await {
        Ok(value) => Some(value),
        Err(e) => {
            log::error!("store task failed: {e}");
            None
        }
    }
}

/// The state an enrolment is in now, for answers after a lost race.
fn current_state(store: &Store, e: &Enrolment, now: u64) -> Activation {
    match store.by_ids(&e.service_id, &e.user_id) {
        Ok(Some(e)) if e.state == EnrolState::Issued && now >= e.expires_at => Activation::Expired,
        Ok(Some(e)) => Activation::Gone(e.state),
        Ok(None) => Activation::Unknown,
        Err(err) => {
            log::error!("http: store lookup failed: {err}");
            Activation::Internal
        }
    }
}

/// Records that `e` cannot be activated, as `answer` says, and returns
/// `answer`; `prefix` says what was tried.
fn refuse(
    daemon: &Daemon,
    a: &Attempt,
    e: &Enrolment,
    prefix: &str,
    answer: Activation,
) -> Activation {
    if let Some(why) = answer.state_reason() {
        a.record(daemon, &e.user, false, &format!("{prefix}{why}"));
    }
    answer
}

/// Activation, first step: the enrolment the IDs
/// name, if it may be activated. `Err` is the answer when it may not.
fn admit_activation(daemon: &Daemon, store: &Store, a: &Attempt) -> Result<Enrolment, Activation> {
    let e = match a.lookup(daemon, store, Step::Activation) {
        Ok(e) => e,
        Err(Missing::Unknown) => return Err(Activation::Unknown),
        Err(Missing::StoreFailed) => return Err(Activation::Internal),
    };
    let refused = match enrol::activation_allowed(e.state, e.expires_at, a.now) {
        Ok(()) => return Ok(e),
        Err(ActivationRefusal::Expired) => Activation::Expired,
        Err(ActivationRefusal::Gone) => Activation::Gone(e.state),
    };
    Err(refuse(daemon, a, &e, "activation refused: ", refused))
}

/// Second step: takes one of the
/// `activation_attempts` tries before the password is checked, so that
/// requests at the same time cannot check more passwords than there are
/// tries. The hash to check against, or the answer when no try is left.
fn reserve_attempt(
    daemon: &Daemon,
    store: &Store,
    a: &Attempt,
    e: &Enrolment,
) -> Result<ActivationHash, Activation> {
    let limit = daemon.config.policy.activation_attempts;
    match store.reserve_activation_attempt(e.id, limit, a.now) {
        Ok(Some(hash)) => Ok(hash),
        Ok(None) => Err(match current_state(store, e, a.now) {
            // Still waiting, but every try left is being checked: those
            // checks decide.
            Activation::Gone(EnrolState::Issued) => {
                a.record(
                    daemon,
                    &e.user,
                    false,
                    "activation refused: the tries left are all being checked",
                );
                Activation::Busy
            }
            other => refuse(daemon, a, e, "activation refused: ", other),
        }),
        Err(err) => {
            log::error!("http: cannot take an activation try: {err}");
            Err(Activation::Internal)
        }
    }
}

/// Activation, last step, after the slow
/// password check: a wrong password leaves its try counted (and
/// invalidates the enrolment at the limit); a right one hands the secret
/// out, once, and gives its try back.
fn finish_activation(
    daemon: &Daemon,
    store: &Store,
    a: &Attempt,
    e: Enrolment,
    right: bool,
) -> Activation {
    if !right {
        let limit = daemon.config.policy.activation_attempts;
        return match store.activation_failed(e.id, limit) {
            Ok(Some(f)) => {
                let left = match enrol::after_wrong_password(f.failures, limit) {
                    _ if f.invalidated => 0,
                    WrongPassword::AttemptsLeft(n) => n,
                    WrongPassword::Invalidated => 0,
                };
                let reason = if left == 0 {
                    format!("activation refused: wrong activation password ({} wrong); enrolment invalidated", f.failures)
                } else {
                    format!("activation refused: wrong activation password ({left} tries left)")
                };
                a.record(daemon, &e.user, false, &reason);
                Activation::WrongPassword {
                    attempts_left: left,
                }
            }
            // Invalidated by a try checked at the same time, activated or
            // withdrawn while this password was checked.
            Ok(None) => {
                let now = current_state(store, &e, a.now);
                let prefix = "activation refused: wrong activation password; ";
                match refuse(daemon, a, &e, prefix, now) {
                    Activation::Gone(EnrolState::Invalidated) => {
                        Activation::WrongPassword { attempts_left: 0 }
                    }
                    other => other,
                }
            }
            Err(err) => {
                log::error!("http: cannot count a wrong activation password: {err}");
                Activation::Internal
            }
        };
    }
    let secret = match store.activate(e.id, a.now) {
        Ok(Some(secret)) => secret,
        // Invalidated by another try, expired or withdrawn meanwhile.
        Ok(None) => {
            let now = current_state(store, &e, a.now);
            let prefix = "activation refused: right activation password, but ";
            return refuse(daemon, a, &e, prefix, now);
        }
        Err(err) => {
            log::error!("http: activation failed: {err}");
            return Activation::Internal;
        }
    };
    a.record(
        daemon,
        &e.user,
        true,
        "activated: token delivered to the phone",
    );
    Activation::Delivered(Box::new(Delivered {
        otpauth_uri: totp::otpauth_uri(&daemon.config.issuer, &e.user, &secret, &e.params),
        secret: totp::base32(&secret),
        params: e.params,
        account: e.user,
        service_id: e.service_id,
        user_id: e.user_id,
    }))
}

/// Checks the first code, adapting to 30-second apps.
fn confirm(daemon: &Daemon, store: &Store, a: &Attempt) -> Confirmed {
    let e = match a.lookup(daemon, store, Step::Confirmation) {
        Ok(e) => e,
        Err(Missing::Unknown) => return Confirmed::Wrong,
        Err(Missing::StoreFailed) => return Confirmed::Internal,
    };
    if e.state != EnrolState::Activated {
        let reason = format!("confirmation refused: enrolment is {}", e.state.as_str());
        a.record(daemon, &e.user, false, &reason);
        return Confirmed::Gone(e.state);
    }
    let checked = match store.confirm_token(&e, &a.proof, a.now, &daemon.config.token) {
        Ok(checked) => checked,
        Err(err) => {
            log::error!("http: confirmation failed: {err}");
            return Confirmed::Internal;
        }
    };
    if let Some((result, reason)) = &checked.audit {
        a.record(daemon, &e.user, *result == AuditResult::Ok, reason);
    }
    match checked.outcome {
        FirstCode::Active { period, adapted } => Confirmed::Active {
            period,
            adapted,
            recovery_codes: recovery_codes(daemon, store, a, &e),
        },
        FirstCode::Wrong => Confirmed::Wrong,
        FirstCode::NotActivated => match current_state(store, &e, a.now) {
            Activation::Internal => Confirmed::Internal,
            Activation::Gone(state) => Confirmed::Gone(state),
            _ => Confirmed::Wrong,
        },
    }
}

/// The first set of recovery codes of the token `e`, just confirmed. A
/// store failure leaves the token without codes (an administrator can
/// hand out a set) rather than refusing a confirmation already made.
fn recovery_codes(daemon: &Daemon, store: &Store, a: &Attempt, e: &Enrolment) -> Vec<RecoveryCode> {
    let count = daemon.config.policy.recovery_codes;
    if count == 0 {
        return Vec::new();
    }
    match store.new_recovery_codes(e.id, count) {
        Ok(Some(codes)) => {
            let reason = format!("{} recovery codes issued", codes.len());
            a.record(daemon, &e.user, true, &reason);
            codes
        }
        Ok(None) => Vec::new(),
        Err(err) => {
            log::error!("http: cannot issue recovery codes: {err}");
            a.record(
                daemon,
                &e.user,
                false,
                "recovery codes not issued: store error",
            );
            Vec::new()
        }
    }
}
