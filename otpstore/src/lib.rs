//! The store of otpd: enrolments, their encrypted secrets and the audit
//! trail. [`Store`] is the facade every program uses; its methods take
//! `&self` and may be called from many threads at once. Callers see domain
//! types and [`StoreError`]; the SQL of the database behind it (SQLite, in
//! the module `sqlite`) stays behind the facade.
//!
//! Every state change is one statement or one transaction; races between
//! processes (otpd and otpctl share the database) are settled by
//! conditional UPDATEs, never by read-then-write. A transaction that may
//! write takes the write lock when it begins, so a writer waits for another
//! process's commit instead of failing at once.
//!
//! Secrets are sealed with a key kept in a file beside the database
//! ([`KEY_FILE`]); activation passwords are kept as argon2id hashes.

mod activation;
mod backend;
mod config_file;
mod copy;
mod error;
mod first_code;
mod keyfile;
mod notices;
mod postgres;
mod recovery;
mod seal;
mod sqlite;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Duration;

use otpcore::config::{Config, StoreBackend};

use otpcore::enrol::State;
use otpcore::hotp::{self, HotpParams};
use otpcore::rules::UserId;
use otpcore::totp::TokenParams;
use otpcore::verify::{self, Counters, Policy, Refusal};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

pub use activation::ActivationHash;
pub use config_file::load_config;
pub use copy::{CopyReport, CopySide, Tally, TargetSpec};
pub use error::{StoreError, VerifyError};
pub use first_code::{FirstCode, FirstCodeChecked};
pub use notices::NoticeSink;
pub use postgres::url::UrlError;
pub use recovery::RecoveryCode;

use backend::Backend;
use error::Result;
use seal::{Keys, KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT};
use sqlite::Sqlite;

/// Database file name inside `state_dir`.
pub const DB_FILE: &str = "otpd.db";
/// Key file name inside `state_dir`.
pub const KEY_FILE: &str = "otpd.key";

/// One enrolment: a user's token on its way from issue to use.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub id: i64,
    pub user: String,
    pub email: String,
    pub service_id: String,
    pub user_id: UserId,
    pub state: State,
    pub params: TokenParams,
    pub language: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub activated_at: Option<u64>,
    pub confirmed_at: Option<u64>,
    pub activation_failures: u32,
    /// The last used time step, or for an event-based token the last
    /// used counter.
    pub last_step: Option<u64>,
    pub kind: TokenKind,
    /// A hardware token's serial number.
    pub serial: Option<String>,
}

/// How a token's codes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Time-based (TOTP).
    Totp,
    /// Event-based (HOTP): a counter moved on by each code used.
    Hotp,
}

impl TokenKind {
    /// `totp` or `hotp`: the stored and shown spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Totp => "totp",
            TokenKind::Hotp => "hotp",
        }
    }

    /// Reads the spellings of [`TokenKind::as_str`].
    pub fn parse(text: &str) -> Option<TokenKind> {
        [TokenKind::Totp, TokenKind::Hotp]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// A hardware token to load by serial number, given to nobody yet.
pub struct HardwareToken<'a> {
    pub serial: &'a str,
    pub secret: &'a [u8],
    pub kind: TokenKind,
    /// The period is 0 for an event-based token.
    pub params: TokenParams,
    /// Steps a time-based token's clock runs ahead (negative: behind).
    pub drift: i64,
    /// An event-based token's last used counter: codes of it and earlier
    /// counters are refused. `None` when its next code is counter 0.
    pub last_step: Option<u64>,
}

/// What `issue` needs to record a new enrolment.
pub struct NewEnrolment<'a> {
    pub user: &'a str,
    pub email: &'a str,
    pub service_id: &'a str,
    pub params: TokenParams,
    pub language: &'a str,
    pub activation_password: &'a str,
    pub expires_at: u64,
    /// Supersede the user's pending and active enrolments (the active one
    /// keeps working until the new one is confirmed).
    pub replace: bool,
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Pam,
    Radius,
    Http,
    Cli,
    /// otpd's self-service socket (`otpctl enrol`).
    SelfService,
}

impl Channel {
    /// `pam`, `radius`, `http`, `cli` or `self`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Pam => "pam",
            Channel::Radius => "radius",
            Channel::Http => "http",
            Channel::Cli => "cli",
            Channel::SelfService => "self",
        }
    }
}

/// One line of the audit trail. Never holds a code, secret or password.
/// Its texts are stored escaped ([`audit_text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub time: u64,
    pub user: String,
    pub channel: String,
    pub peer: String,
    pub result: AuditResult,
    pub reason: String,
}

/// What a decision in the audit trail came to. Every program writes these
/// spellings: `ok`, `fail` and `error`, `recovery` for a login with a
/// recovery code, and `reauth` for a code accepted again within a RADIUS
/// client's renegotiation window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditResult {
    /// Done as asked: a code accepted, a token activated or issued, ...
    Ok,
    /// Refused: a wrong code or password, a state or limit that forbids it.
    Fail,
    /// Not decided: a record could not be read, a mail could not be sent.
    Error,
    /// A recovery code accepted in place of a code (and spent).
    Recovery,
    /// A code accepted again: the same code through the same RADIUS client
    /// within its renegotiation window.
    Reauth,
}

impl AuditResult {
    /// `ok`, `fail`, `error`, `recovery` or `reauth`: the stored and shown spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Ok => "ok",
            AuditResult::Fail => "fail",
            AuditResult::Error => "error",
            AuditResult::Recovery => "recovery",
            AuditResult::Reauth => "reauth",
        }
    }

    /// Reads a stored result: the spellings of [`AuditResult::as_str`],
    /// and `reject`, which otpctl once wrote for a wrong first code.
    pub fn parse(text: &str) -> Option<AuditResult> {
        match text {
            "ok" => Some(AuditResult::Ok),
            "fail" | "reject" => Some(AuditResult::Fail),
            "error" => Some(AuditResult::Error),
            "recovery" => Some(AuditResult::Recovery),
            "reauth" => Some(AuditResult::Reauth),
            _ => None,
        }
    }
}

/// The stored spelling, padded as the format asks (`{:<5}`).
impl std::fmt::Display for AuditResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A result equals the text it is stored as.
impl PartialEq<&str> for AuditResult {
    fn eq(&self, text: &&str) -> bool {
        self.as_str() == *text
    }
}

/// The result of a wrong activation password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationFailure {
    /// Wrong tries so far, this one included.
    pub failures: u32,
    /// Whether the enrolment was invalidated by this try.
    pub invalidated: bool,
}

/// One code to verify, with what the audit trail records about its origin.
#[derive(Clone, Copy)]
pub struct VerifyRequest<'a> {
    pub user: &'a str,
    pub code: &'a str,
    pub channel: Channel,
    /// Who asked: `uid=0 pid=123 service=sshd rhost=203.0.113.5`, a NAS
    /// address, … (never the code).
    pub peer: &'a str,
    /// The RADIUS client that asked and its renegotiation window; `None`
    /// for every other channel, which never gets a code accepted twice.
    pub reauth: Option<Reauth<'a>>,
    /// The first factor before the code (the directory password) was
    /// wrong: the code is not looked at, and the failure is counted.
    pub first_factor_wrong: bool,
}

/// Where a RADIUS code came from, for the renegotiation window.
#[derive(Debug, Clone, Copy)]
pub struct Reauth<'a> {
    /// The client's name (`[[radius.client]] name`).
    pub client: &'a str,
    /// How long after its Accept the same code from the same client is
    /// accepted again; 0: never.
    pub seconds: u64,
}

/// The answer to one [`VerifyRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    Accept,
    /// Accepted again: the code accepted last, from the same RADIUS client,
    /// within its renegotiation window. Nothing about the token changes.
    Reauth,
    Reject(Refusal),
    /// Neither: the code could not be verified, and nobody gets in.
    Error(VerifyError),
}

/// A token to import: its user, secret and parameters.
pub struct ImportedToken<'a> {
    pub user: &'a str,
    pub secret: &'a [u8],
    pub params: TokenParams,
    /// The last time step (of `params.period` seconds) that the system the
    /// token comes from saw used: codes of it and of earlier steps are
    /// refused. `None` when unknown.
    pub last_step: Option<u64>,
}

/// The outcome of [`Store::resync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// The drift is learnt; the second code's step is the last used one.
    Done { drift: i64, step: u64 },
    /// As `Done`, but the last used step lay ahead of the clock (a code
    /// accepted while the server clock ran ahead, or a resync to a phone
    /// that ran fast) and was moved back from `from` to `step`.
    MovedBack { drift: i64, from: u64, step: u64 },
    /// No two consecutive codes of the token match within the search.
    NotFound,
    /// The two codes were already used: their steps are not later than the
    /// last used step, and that one is not ahead of the clock.
    Spent,
    /// The user has no active token (or it was replaced meanwhile).
    NoToken,
}

/// The length of a challenge's State: 256 random bits.
pub const CHALLENGE_STATE_LEN: usize = 32;

/// What the store keeps of a challenge's State: its SHA-256 digest. The
/// State is a random bearer token; the digest answers it without being it.
fn challenge_digest(state: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(state).into()
}

/// A text as the audit trail keeps it: control, format and separator
/// characters escaped, bounded, so that no reader of the trail is shown a
/// forged or disguised entry.
pub fn audit_text(text: &str) -> String {
    otpproto::logtext::escape(text, otpproto::logtext::MAX_CHARS)
}

/// The enrolment store. Its methods take `&self`: calls from several
/// threads are serialised inside the store, and each call blocks until the
/// database answers (call them off any async executor).
pub struct Store {
    db: Box<dyn Backend>,
    keys: Keys,
    key_path: std::path::PathBuf,
    notices: notices::Notices,
}

/// A fresh random user ID (the one a setup link names).
pub(crate) fn fresh_user_id() -> UserId {
    loop {
        if let Some(id) = UserId::from_random(OsRng.next_u64()) {
            return id;
        }
    }
}

impl Store {
    /// Opens (creating on first run) the SQLite database and key file in
    /// `state_dir`: the store of a configuration without `[store]`.
    pub fn open(state_dir: &Path) -> Result<Store> {
        Store::from_config(&Config::embedded_defaults(state_dir))
    }

    /// Opens the store that `config` names: SQLite in `state_dir` without
    /// `[store]`, or the PostgreSQL database of `[store] url`. An error
    /// names the key at fault and never shows the database password. A key
    /// file that does not decrypt the stored key check value is refused, so
    /// a replaced key fails loudly at start-up.
    pub fn from_config(config: &Config) -> Result<Store> {
        let store = &config.store;
        let key_path = store
            .key_file
            .clone()
            .unwrap_or_else(|| config.state_dir.join(KEY_FILE));
        keyfile::ensure_private_dir(&config.state_dir)?;
        let db: Box<dyn Backend> = match (store.backend, &store.url) {
            (StoreBackend::Postgresql, Some(url)) => {
                let bad_url = |reason: String| StoreError::Config {
                    key: "store.url",
                    reason: format!("line {}: {reason}", store.url_line),
                };
                let url = postgres::DatabaseUrl::parse(url).map_err(|e| bad_url(e.to_string()))?;
                let password = match &store.password_file {
                    Some(path) => {
                        Some(
                            keyfile::read_password(path).map_err(|e| StoreError::Config {
                                key: "store.password_file",
                                reason: e.to_string(),
                            })?,
                        )
                    }
                    None => None,
                };
                let shown = url.redacted();
                let options = postgres::Options {
                    url,
                    password,
                    pool_size: usize::try_from(store.pool_size).unwrap_or(1),
                    timeout: Duration::from_millis(store.timeout_ms),
                };
                Box::new(postgres::Postgres::open(options).map_err(
                    |e| match &store.password_file {
                        Some(path) if e.is_wrong_password() => StoreError::Config {
                            key: "store.password_file",
                            reason: format!(
                                "{}: the database at {shown} refused the password: {e}",
                                path.display()
                            ),
                        },
                        _ => bad_url(format!("cannot use the database at {shown}: {e}")),
                    },
                )?)
            }
            _ => Box::new(Sqlite::open(&config.state_dir.join(DB_FILE))?),
        };
        Store::with_key(db, &key_path)
    }

    /// The store over `db`, its secrets sealed with the key in `key_path`
    /// (created with the database's key check value when neither exists
    /// yet). When several processes create a store at the same moment, one
    /// key wins; the others find it does not match and fail.
    fn with_key(db: Box<dyn Backend>, key_path: &Path) -> Result<Store> {
        let key_path = key_path.to_owned();
        let check = db.key_check()?;
        let key = match (&check, key_path.exists()) {
            (_, true) => keyfile::read_key(&key_path)?,
            (None, false) => keyfile::write_new_key(&key_path)?,
            (Some(_), false) => return Err(StoreError::MissingKey(key_path)),
        };
        let Some(keys) = Keys::new(&key)? else {
            return Err(StoreError::WrongKey(key_path));
        };
        let check = match check {
            Some(sealed) => sealed,
            None => {
                db.set_key_check(&keys.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD)?)?;
                db.key_check()?
                    .ok_or(StoreError::Internal("key check value vanished"))?
            }
        };
        let matches = keys
            .unseal(&check, KEY_CHECK_AAD)
            .is_some_and(|plain| plain.as_slice() == KEY_CHECK_PLAINTEXT);
        if !matches {
            return Err(StoreError::WrongKey(key_path));
        }
        Ok(Store {
            db,
            keys,
            key_path,
            notices: notices::Notices::default(),
        })
    }

    /// The key file that seals this store's secrets.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Records a new enrolment in state `issued` with a fresh secret and
    /// user ID. Without `replace`, a user with a pending or active
    /// enrolment is refused; with it, a pending one is marked replaced and
    /// an active one keeps working until the new one is confirmed.
    pub fn issue(&self, new: &NewEnrolment<'_>, now: u64) -> Result<Enrolment> {
        let hash = ActivationHash::new(new.activation_password)?;
        let mut secret = Zeroizing::new(vec![0u8; new.params.algorithm.secret_len()]);
        OsRng.fill_bytes(&mut secret);
        let id = self
            .db
            .issue(&self.keys, new, hash.as_str(), &secret, now)?;
        self.db
            .by_id(id)?
            .ok_or(StoreError::Internal("new enrolment vanished"))
    }

    /// Records tokens brought from elsewhere (migration), all or none in
    /// one transaction: active at once, with no activation password and no
    /// setup mail. `replace` supersedes the users' tokens; without it a
    /// user who has one is refused, and nothing is imported.
    ///
    /// An import never lowers the replay state of a secret: when one of the
    /// user's enrolments (in any state) holds the same secret, the steps it
    /// used stay used, converted to the new period; so do the steps the
    /// token's previous system used (`last_step`).
    pub fn import_tokens(
        &self,
        tokens: &[ImportedToken<'_>],
        service_id: &str,
        replace: bool,
        now: u64,
    ) -> Result<()> {
        let replaced = self
            .db
            .import_tokens(&self.keys, tokens, service_id, replace, now)?;
        self.notify(replaced);
        Ok(())
    }

    /// Loads hardware tokens by serial number, all or none in one
    /// transaction, in state `unassigned`: nobody can log in with them
    /// until [`Store::assign`]. A serial number already in the store (in
    /// any state) refuses the whole load.
    pub fn import_hardware(
        &self,
        tokens: &[HardwareToken<'_>],
        service_id: &str,
        now: u64,
    ) -> Result<()> {
        self.db.import_hardware(&self.keys, tokens, service_id, now)
    }

    /// Gives the unassigned token `serial` to `user`, active at once. A
    /// user with a pending or active token is refused unless `replace`,
    /// which replaces them in the same transaction.
    pub fn assign(&self, serial: &str, user: &str, replace: bool, now: u64) -> Result<Enrolment> {
        let (id, replaced) = self.db.assign(serial, user, replace, now)?;
        self.notify(replaced);
        let token = self
            .db
            .by_id(id)?
            .ok_or(StoreError::Internal("an assigned token vanished"))?;
        self.notify([Store::activated(&token, now)]);
        Ok(token)
    }

    /// The loaded hardware tokens that nobody has yet, by serial number.
    pub fn unassigned(&self) -> Result<Vec<Enrolment>> {
        self.db.unassigned()
    }

    /// Chooses how far commits are flushed: `false` (SQLite
    /// `synchronous=NORMAL`) survives a crash of otpd, `true` (`FULL`) a
    /// power loss too, at the price of an fsync per commit.
    pub fn set_power_safe(&self, power_safe: bool) -> Result<()> {
        self.db.set_power_safe(power_safe)
    }

    /// Removes an enrolment that never reached its user (the setup mail
    /// failed). Only an `issued` one is removed.
    pub fn withdraw(&self, id: i64) -> Result<bool> {
        self.db.withdraw(id)
    }

    /// The enrolment that a setup link names.
    pub fn by_ids(&self, service_id: &str, user_id: &UserId) -> Result<Option<Enrolment>> {
        self.db.by_ids(service_id, user_id)
    }

    /// The user's enrolment on its way to active, if any.
    pub fn pending(&self, user: &str) -> Result<Option<Enrolment>> {
        self.db.pending(user)
    }

    /// The user's active enrolment, if any.
    pub fn active(&self, user: &str) -> Result<Option<Enrolment>> {
        self.db.active(user)
    }

    /// The user's most recent enrolment in any state (a hardware token loaded
    /// but not assigned belongs to nobody).
    pub fn latest(&self, user: &str) -> Result<Option<Enrolment>> {
        self.db.latest(user)
    }

    /// Every user's current enrolments (pending and active), by user.
    pub fn list(&self) -> Result<Vec<Enrolment>> {
        self.db.list()
    }

    /// Takes one of the `limit` tries of an `issued`, unexpired enrolment
    /// before its activation password is checked, and returns the hash to
    /// check against (a slow check: run it without holding anything the
    /// store's other callers wait for). The try counts as a wrong password
    /// from now on: [`Store::activation_failed`] leaves it counted,
    /// [`Store::activate`] hands it back. One conditional UPDATE, so
    /// requests at the same time never take more than `limit` tries between
    /// them and no password is checked without one. `None` when the
    /// enrolment is not `issued`, its link has expired or every try is
    /// taken.
    pub fn reserve_activation_attempt(
        &self,
        id: i64,
        limit: u32,
        now: u64,
    ) -> Result<Option<ActivationHash>> {
        Ok(self
            .db
            .reserve_activation_attempt(id, limit, now)?
            .map(ActivationHash::from_stored))
    }

    /// The password of a try taken with
    /// [`Store::reserve_activation_attempt`] was wrong: the try stays
    /// counted, and once the counted tries reach `limit` the enrolment is
    /// invalidated, even while other tries are still being checked (a
    /// right password among them then finds it invalidated: fail closed).
    /// `None` when the enrolment is no longer `issued`.
    pub fn activation_failed(&self, id: i64, limit: u32) -> Result<Option<ActivationFailure>> {
        self.db.activation_failed(id, limit)
    }

    /// Moves an `issued`, unexpired enrolment to `activated` and returns
    /// its secret: the one time it is handed out. Called when the password
    /// of a try taken with [`Store::reserve_activation_attempt`] was
    /// right; that try is handed back, so the count keeps the wrong
    /// passwords only. `None` when another request won the race, wrong
    /// tries invalidated the enrolment meanwhile or the link expired.
    pub fn activate(&self, id: i64, now: u64) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match self.db.activate(id, now)? {
            None => Ok(None),
            Some((sealed, user_id)) => self
                .keys
                .unseal(&sealed, user_id.as_bytes())
                .map(Some)
                .ok_or(StoreError::Corrupt(id)),
        }
    }

    /// The decrypted secret of an enrolment.
    pub fn secret(&self, enrolment: &Enrolment) -> Result<Zeroizing<Vec<u8>>> {
        let sealed = self.db.sealed_secret(enrolment.id)?;
        self.keys
            .unseal(&sealed, enrolment.user_id.as_str().as_bytes())
            .ok_or(StoreError::Corrupt(enrolment.id))
    }

    /// Verifies a batch of codes in one immediate transaction:
    /// one commit for many logins, each answer written before it is given.
    /// Replay protection is a conditional UPDATE of the last step, so a step
    /// is accepted once whatever the concurrency, across processes too.
    /// Every decision is written to the audit table in the same transaction.
    pub fn verify_batch(
        &self,
        requests: &[VerifyRequest<'_>],
        now: u64,
        policy: &Policy,
    ) -> Result<Vec<VerifyOutcome>> {
        let (outcomes, locked) = self.db.verify_batch(&self.keys, requests, now, policy)?;
        self.notify(locked);
        Ok(outcomes)
    }

    /// Opens a RADIUS challenge for `user` through `client` until
    /// `expires_at`, and returns its State: [`CHALLENGE_STATE_LEN`] random
    /// bytes, a bearer token the store keeps only a digest of. Expired
    /// challenges are removed on the way.
    pub fn open_challenge(
        &self,
        user: &str,
        client: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<[u8; CHALLENGE_STATE_LEN]> {
        let mut state = [0u8; CHALLENGE_STATE_LEN];
        OsRng.fill_bytes(&mut state);
        self.db
            .open_challenge(&challenge_digest(&state), user, client, now, expires_at)?;
        Ok(state)
    }

    /// Takes the challenge that `state` answers: true when one was open for
    /// `user` through `client` and had not expired at `now`. A State is
    /// taken once, whoever presents it: a second use, concurrent or not,
    /// finds nothing.
    pub fn take_challenge(&self, state: &[u8], user: &str, client: &str, now: u64) -> Result<bool> {
        self.db
            .take_challenge(&challenge_digest(state), user, client, now)
    }

    /// Lifts the lock and clears the failures of the user's active token.
    pub fn unlock(&self, user: &str) -> Result<bool> {
        self.db.unlock(user)
    }

    /// Learns the clock drift of the user's active token from two
    /// consecutive codes, searching `search` steps either side of now. For
    /// an event-based token, finds its counter instead: the two codes at
    /// or after the next counter, up to [`hotp::RESYNC_SEARCH`] on; the
    /// second code's counter becomes the last used one (`step`). Both
    /// codes are spent: the second code's step becomes the last used one,
    /// and failures, lock and the last wrong code are cleared.
    ///
    /// Codes at or before the last used step are refused as spent, unless
    /// the second code is earlier and the last used step lies ahead of the
    /// clock (later than `window` steps after now): then every real code is
    /// a replay, and this administrator's action moves the replay state
    /// back to the second code's step ([`Resync::MovedBack`]).
    pub fn resync(
        &self,
        user: &str,
        first: &str,
        second: &str,
        now: u64,
        search: u64,
        window: u64,
    ) -> Result<Resync> {
        let Some(token) = self.active(user)? else {
            return Ok(Resync::NoToken);
        };
        let secret = self.secret(&token)?;
        if token.kind == TokenKind::Hotp {
            let params = HotpParams {
                algorithm: token.params.algorithm,
                digits: token.params.digits,
            };
            let Some(counter) = hotp::resync(
                &secret,
                &params,
                first,
                second,
                token.last_step,
                hotp::RESYNC_SEARCH,
            ) else {
                return Ok(Resync::NotFound);
            };
            // An event counter only moves forward: no step lies ahead of a
            // clock, so a counter used meanwhile makes the codes spent.
            return self.db.resync(token.id, 0, counter, u64::MAX, 0);
        }
        let Some((drift, step)) =
            verify::resync(&secret, &token.params, first, second, now, search)
        else {
            return Ok(Resync::NotFound);
        };
        self.db
            .resync(token.id, drift, step, token.params.step_at(now), window)
    }

    /// Failures and lock of the user's active token.
    pub fn counters(&self, user: &str) -> Result<Option<Counters>> {
        self.db.counters(user)
    }

    /// Withdraws every pending and active token of `user`; how many.
    pub fn revoke(&self, user: &str) -> Result<usize> {
        self.db.revoke(user)
    }

    /// Writes a consistent copy of the database to `path` (an online
    /// backup, safe while otpd serves), created 0600. The key file is not
    /// part of it: back that up too.
    pub fn backup(&self, path: &Path) -> Result<()> {
        self.db.backup(path)
    }

    /// Copies the whole store into `target`: an empty PostgreSQL database
    /// or a new SQLite file (created 0600). Every enrolment in every state
    /// with its ID and all its columns, the secrets as sealed bytes (the
    /// same key file opens them there), the audit trail with its IDs, and
    /// the key check value. The store is read in one snapshot, safe while
    /// otpd serves; the target is written in one transaction, refused
    /// before anything is written when it holds data, and read back before
    /// it commits: counts, sums and a digest of every row must match the
    /// source's, or nothing is kept.
    pub fn copy_to(&self, target: &TargetSpec) -> Result<CopyReport> {
        copy::copy_to(&*self.db, target)
    }

    /// Gives an `issued` enrolment a new expiry (for `otpctl resend`).
    pub fn extend(&self, id: i64, expires_at: u64) -> Result<bool> {
        self.db.extend(id, expires_at)
    }

    /// Appends to the audit trail, its texts escaped.
    pub fn audit(&self, entry: &AuditEntry) -> Result<()> {
        self.db.audit(&AuditEntry {
            time: entry.time,
            user: audit_text(&entry.user),
            channel: audit_text(&entry.channel),
            peer: audit_text(&entry.peer),
            result: entry.result,
            reason: audit_text(&entry.reason),
        })
    }

    /// Hands `each` the audit entries, oldest first, optionally of one
    /// user and from a time, one at a time as they are read, so a trail of
    /// any length takes little memory; the first error of `each` stops the
    /// reading and is returned. SQLite reads in one snapshot; PostgreSQL in
    /// pages by entry, so entries written meanwhile may be included.
    pub fn audit_each<E: From<StoreError>>(
        &self,
        user: Option<&str>,
        since: u64,
        mut each: impl FnMut(AuditEntry) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut failed = None;
        self.db
            .audit_each(user, since, &mut |entry| match each(entry) {
                Ok(()) => std::ops::ControlFlow::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    std::ops::ControlFlow::Break(())
                }
            })?;
        failed.map_or(Ok(()), Err)
    }

    /// The audit entries of [`Store::audit_each`] in memory: for short
    /// trails (one user's, a test's).
    pub fn audit_entries(&self, user: Option<&str>, since: u64) -> Result<Vec<AuditEntry>> {
        let mut entries = Vec::new();
        self.audit_each(user, since, |entry| {
            entries.push(entry);
            Ok::<(), StoreError>(())
        })?;
        Ok(entries)
    }

    /// Whether the database answers: one read of a single row.
    pub fn ping(&self) -> Result<()> {
        self.db.key_check().map(|_| ())
    }

    /// How many enrolments are in each state (`active`, `issued`, ...),
    /// by state name; states without enrolments are absent.
    pub fn token_states(&self) -> Result<Vec<(String, u64)>> {
        self.db.token_states()
    }

    /// Deletes at most `limit` audit entries written before `before`, in
    /// one short statement; how many it deleted. Pruning a long trail is
    /// many such calls, so that logins are never held up for long.
    pub fn prune_audit(&self, before: u64, limit: u64) -> Result<u64> {
        self.db.prune_audit(before, limit)
    }
}
