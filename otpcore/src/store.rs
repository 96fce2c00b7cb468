//! The store: enrolments, their encrypted secrets and the audit trail, in
//! SQLite. Nothing SQLite-specific leaves this module: callers see domain
//! types and `StoreError`, so another backend can stand behind the same
//! methods.
//!
//! Every state change is one statement or one transaction; races between
//! processes (otpd and otpctl share the file) are settled by conditional
//! UPDATEs, never by read-then-write. A transaction that may write takes
//! the write lock when it begins (see [`write_transaction`]), so a writer
//! waits for another process's commit instead of failing with "database is
//! locked".

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::enrol::{confirm_first_code, Confirmation, State};
use crate::rules::UserId;
use crate::totp::{Algorithm, TokenParams};
use crate::verify::{self, Counters, Policy, Refusal, ReplayMove, Verdict};

/// Database file name inside `state_dir`.
pub const DB_FILE: &str = "otpd.db";
/// Key file name inside `state_dir`.
pub const KEY_FILE: &str = "otpd.key";

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const KEY_CHECK_PLAINTEXT: &[u8] = b"otpd key check v1";

/// A store operation that failed. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("the key file {0} does not match this database (wrong or replaced key file); restore the key file that belongs to it")]
    WrongKey(PathBuf),
    #[error("the key file {0} is missing but the database holds encrypted secrets; restore it from backup")]
    MissingKey(PathBuf),
    #[error("cannot decrypt the secret of enrolment {0}: the record or key is damaged")]
    Corrupt(i64),
    #[error("{user} already has an active token; re-issue with --replace")]
    HasActive { user: String },
    #[error("{user} already has a setup in progress; use `otpctl resend {user}` or re-issue with --replace")]
    HasPending { user: String },
    #[error("the database was written by a newer otpd (schema {0}); upgrade otpd")]
    TooNew(i64),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

type Result<T> = std::result::Result<T, StoreError>;

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
}

impl Channel {
    /// `pam`, `radius`, `http` or `cli`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Pam => "pam",
            Channel::Radius => "radius",
            Channel::Http => "http",
            Channel::Cli => "cli",
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
    pub result: String,
    pub reason: String,
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
pub struct VerifyRequest<'a> {
    pub user: &'a str,
    pub code: &'a str,
    pub channel: Channel,
    /// Who asked: `uid=0 pid=123 service=sshd rhost=203.0.113.5`, a NAS
    /// address, … (never the code).
    pub peer: &'a str,
}

/// The answer to one [`VerifyRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    Accept,
    Reject(Refusal),
    /// The token's record could not be read (damaged or wrong key): refused.
    Error(String),
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

/// An argon2id hash of an activation password (PHC string format).
pub struct ActivationHash(String);

/// The least working memory a password check asks the allocator for. The
/// check needs 19 MiB; glibc's malloc takes requests below its mapping
/// threshold from per-thread arenas that keep the memory once freed, so
/// every thread that ever checked a password would hold 19 MiB for good.
/// That threshold adapts but never exceeds 32 MiB on 64-bit systems:
/// asking for at least that much gets the check its own mapping, returned
/// to the system when the check ends. The pages the check does not use
/// are never touched and cost address space only.
const CHECK_MEMORY_FLOOR: usize = 32 * 1024 * 1024;

impl ActivationHash {
    /// Whether `password` is the activation password. Takes tens of
    /// milliseconds and 19 MiB of memory by design; call it off any async
    /// executor, and bound how many run at once.
    pub fn verify(&self, password: &str) -> Result<bool> {
        let bad = |e: &dyn std::fmt::Display| StoreError::Hash(e.to_string());
        let hash = PasswordHash::new(&self.0).map_err(|e| bad(&e))?;
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return Err(bad(&"the stored hash lacks its salt or its output"));
        };
        let algorithm = argon2::Algorithm::try_from(hash.algorithm).map_err(|e| bad(&e))?;
        let version = hash
            .version
            .map(argon2::Version::try_from)
            .transpose()
            .map_err(|e| bad(&e))?
            .unwrap_or_default();
        let params = argon2::Params::try_from(&hash).map_err(|e| bad(&e))?;
        let mut salt_bytes = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_bytes).map_err(|e| bad(&e))?;
        let blocks = params.block_count();
        let floor = CHECK_MEMORY_FLOOR / argon2::Block::SIZE;
        let mut memory = Vec::with_capacity(blocks.max(floor));
        memory.resize(blocks, argon2::Block::new());
        let argon2 = Argon2::new(algorithm, version, params);
        let computed = Output::init_with(expected.len(), |out| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory)
                .map_err(Into::into)
        })
        .map_err(|e| bad(&e))?;
        // Output compares in constant time.
        Ok(computed == expected)
    }
}

/// The forward migrations; entry N takes schema N to N+1.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE enrolments (
    id                  INTEGER PRIMARY KEY,
    user                TEXT NOT NULL,
    email               TEXT NOT NULL,
    service_id          TEXT NOT NULL,
    user_id             TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    secret              BLOB NOT NULL,
    algorithm           TEXT NOT NULL,
    digits              INTEGER NOT NULL,
    period              INTEGER NOT NULL,
    language            TEXT NOT NULL,
    state               TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    activated_at        INTEGER,
    confirmed_at        INTEGER,
    activation_failures INTEGER NOT NULL DEFAULT 0,
    last_step           INTEGER
);
CREATE UNIQUE INDEX enrolments_one_pending ON enrolments(user) WHERE state IN ('issued', 'activated');
CREATE UNIQUE INDEX enrolments_one_active ON enrolments(user) WHERE state = 'active';
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    time    INTEGER NOT NULL,
    user    TEXT NOT NULL,
    channel TEXT NOT NULL,
    peer    TEXT NOT NULL,
    result  TEXT NOT NULL,
    reason  TEXT NOT NULL
);
CREATE INDEX audit_user_time ON audit(user, time);
"#,
    r#"
ALTER TABLE enrolments ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE enrolments ADD COLUMN locked_until INTEGER;
ALTER TABLE enrolments ADD COLUMN last_wrong BLOB;
ALTER TABLE enrolments ADD COLUMN last_wrong_at INTEGER;
ALTER TABLE enrolments ADD COLUMN drift INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE INDEX enrolments_user ON enrolments(user, state);
"#,
];

const ENROLMENT_COLUMNS: &str =
    "id, user, email, service_id, user_id, state, algorithm, digits, period, \
     language, created_at, expires_at, activated_at, confirmed_at, activation_failures, last_step";

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A text as the audit trail keeps it: control, format and separator
/// characters escaped, bounded, so that no reader of the trail is shown a
/// forged or disguised entry.
pub fn audit_text(text: &str) -> String {
    otpproto::logtext::escape(text, otpproto::logtext::MAX_CHARS)
}

fn bad_column(index: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("invalid {what}").into(),
    )
}

fn enrolment_from_row(row: &Row<'_>) -> rusqlite::Result<Enrolment> {
    let user_id: String = row.get(4)?;
    let state: String = row.get(5)?;
    let algorithm: String = row.get(6)?;
    Ok(Enrolment {
        id: row.get(0)?,
        user: row.get(1)?,
        email: row.get(2)?,
        service_id: row.get(3)?,
        user_id: UserId::parse(&user_id).ok_or_else(|| bad_column(4, "user ID"))?,
        state: State::parse(&state).ok_or_else(|| bad_column(5, "state"))?,
        params: TokenParams {
            algorithm: Algorithm::parse(&algorithm).ok_or_else(|| bad_column(6, "algorithm"))?,
            digits: row.get(7)?,
            period: to_u64(row.get(8)?),
        },
        language: row.get(9)?,
        created_at: to_u64(row.get(10)?),
        expires_at: to_u64(row.get(11)?),
        activated_at: row.get::<_, Option<i64>>(12)?.map(to_u64),
        confirmed_at: row.get::<_, Option<i64>>(13)?.map(to_u64),
        activation_failures: row.get(14)?,
        last_step: row.get::<_, Option<i64>>(15)?.map(to_u64),
    })
}

/// The enrolment store.
pub struct Store {
    conn: Connection,
    cipher: Aes256Gcm,
    /// Keys the fingerprints of wrong codes, so the database holds no
    /// guessable digest of a code.
    fingerprint_key: Zeroizing<Vec<u8>>,
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> StoreError {
    StoreError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Creates `dir` (0700) when missing, refuses one that others can write.
fn ensure_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| file_error(dir, e))?;
    }
    let mode = fs::metadata(dir)
        .map_err(|e| file_error(dir, e))?
        .permissions()
        .mode();
    if mode & 0o002 != 0 {
        return Err(file_error(
            dir,
            "state directory is world-writable; chmod o-w it",
        ));
    }
    Ok(())
}

/// Reads the key file, refusing one that others can read.
fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mode = fs::metadata(path)
        .map_err(|e| file_error(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(file_error(
            path,
            format!("key file has mode {:04o}; it must be 0600", mode & 0o777),
        ));
    }
    let key = Zeroizing::new(fs::read(path).map_err(|e| file_error(path, e))?);
    if key.len() != KEY_LEN {
        return Err(file_error(
            path,
            format!("key file must hold {KEY_LEN} bytes"),
        ));
    }
    Ok(key)
}

fn write_new_key(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut key = Zeroizing::new(vec![0u8; KEY_LEN]);
    OsRng.fill_bytes(&mut key);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(path, e))?;
    Ok(key)
}

impl Store {
    /// Opens (creating on first run) the database and key file in
    /// `state_dir`. A key file that does not decrypt the stored key check
    /// value is refused, so a replaced key fails loudly at start-up.
    pub fn open(state_dir: &Path) -> Result<Store> {
        ensure_private_dir(state_dir)?;
        let db_path = state_dir.join(DB_FILE);
        let key_path = state_dir.join(KEY_FILE);
        let mut conn = Connection::open(&db_path)?;
        fs::set_permissions(&db_path, fs::Permissions::from_mode(0o600))
            .map_err(|e| file_error(&db_path, e))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;

        let check: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let key = match (&check, key_path.exists()) {
            (_, true) => read_key(&key_path)?,
            (None, false) => write_new_key(&key_path)?,
            (Some(_), false) => return Err(StoreError::MissingKey(key_path)),
        };
        let cipher =
            Aes256Gcm::new_from_slice(&key).map_err(|_| StoreError::WrongKey(key_path.clone()))?;
        let store = Store {
            conn,
            cipher,
            fingerprint_key: hmac(&key, &[b"otpd wrong-code fingerprint v1"])?,
        };
        match check {
            Some(sealed) => {
                let plain = unseal(&store.cipher, &sealed, b"key_check")
                    .ok_or(StoreError::WrongKey(key_path))?;
                if plain.as_slice() != KEY_CHECK_PLAINTEXT {
                    return Err(StoreError::WrongKey(state_dir.join(KEY_FILE)));
                }
            }
            None => {
                let sealed = seal(&store.cipher, KEY_CHECK_PLAINTEXT, b"key_check")?;
                store.conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('key_check', ?1)",
                    params![sealed],
                )?;
            }
        }
        Ok(store)
    }

    /// Records a new enrolment in state `issued` with a fresh secret and
    /// user ID. Without `replace`, a user with a pending or active
    /// enrolment is refused; with it, a pending one is marked replaced and
    /// an active one keeps working until the new one is confirmed.
    pub fn issue(&mut self, new: &NewEnrolment<'_>, now: u64) -> Result<Enrolment> {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let hash = Argon2::default()
            .hash_password(new.activation_password.as_bytes(), &salt)
            .map_err(|e| StoreError::Hash(e.to_string()))?
            .to_string();
        let mut secret = Zeroizing::new(vec![0u8; new.params.algorithm.secret_len()]);
        OsRng.fill_bytes(&mut secret);

        let tx = write_transaction(&mut self.conn)?;
        refuse_existing(&tx, new.user, new.replace)?;
        tx.execute(
            "UPDATE enrolments SET state = 'replaced' WHERE user = ?1 AND state IN ('issued', 'activated')",
            params![new.user],
        )?;
        let id = insert_enrolment(
            &tx,
            &self.cipher,
            &Insert {
                user: new.user,
                email: new.email,
                service_id: new.service_id,
                password_hash: &hash,
                secret: &secret,
                params: new.params,
                language: new.language,
                state: State::Issued,
                now,
                expires_at: new.expires_at,
                last_step: None,
            },
        )?;
        tx.commit()?;
        self.by_id(id)?
            .ok_or(StoreError::Database("new enrolment vanished".to_owned()))
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
        &mut self,
        tokens: &[ImportedToken<'_>],
        service_id: &str,
        replace: bool,
        now: u64,
    ) -> Result<()> {
        let tx = write_transaction(&mut self.conn)?;
        for token in tokens {
            refuse_existing(&tx, token.user, replace)?;
            let spent = spent_by_same_secret(&tx, &self.cipher, token)?;
            tx.execute(
                "UPDATE enrolments SET state = 'replaced' WHERE user = ?1 AND state IN ('issued', 'activated', 'active')",
                params![token.user],
            )?;
            insert_enrolment(
                &tx,
                &self.cipher,
                &Insert {
                    user: token.user,
                    email: "",
                    service_id,
                    // No PHC string: no password ever matches it.
                    password_hash: "!",
                    secret: token.secret,
                    params: token.params,
                    language: "",
                    state: State::Active,
                    now,
                    expires_at: now,
                    last_step: spent.max(token.last_step),
                },
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Chooses how far commits are flushed: `false` (SQLite
    /// `synchronous=NORMAL`) survives a crash of otpd, `true` (`FULL`) a
    /// power loss too, at the price of an fsync per commit.
    pub fn set_power_safe(&self, power_safe: bool) -> Result<()> {
        let mode = if power_safe { "FULL" } else { "NORMAL" };
        self.conn.pragma_update(None, "synchronous", mode)?;
        Ok(())
    }

    /// Removes an enrolment that never reached its user (the setup mail
    /// failed). Only an `issued` one is removed.
    pub fn withdraw(&mut self, id: i64) -> Result<bool> {
        Ok(self.conn.execute(
            "DELETE FROM enrolments WHERE id = ?1 AND state = 'issued'",
            params![id],
        )? == 1)
    }

    fn query_one(&self, condition: &str, value: &dyn rusqlite::ToSql) -> Result<Option<Enrolment>> {
        let sql = format!(
            "SELECT {ENROLMENT_COLUMNS} FROM enrolments WHERE {condition} ORDER BY id DESC LIMIT 1"
        );
        Ok(self
            .conn
            .query_row(&sql, [value], enrolment_from_row)
            .optional()?)
    }

    fn by_id(&self, id: i64) -> Result<Option<Enrolment>> {
        self.query_one("id = ?1", &id)
    }

    /// The enrolment that a setup link names.
    pub fn by_ids(&self, service_id: &str, user_id: &UserId) -> Result<Option<Enrolment>> {
        let sql = format!(
            "SELECT {ENROLMENT_COLUMNS} FROM enrolments WHERE service_id = ?1 AND user_id = ?2"
        );
        Ok(self
            .conn
            .query_row(
                &sql,
                params![service_id, user_id.as_str()],
                enrolment_from_row,
            )
            .optional()?)
    }

    /// The user's enrolment on its way to active, if any.
    pub fn pending(&self, user: &str) -> Result<Option<Enrolment>> {
        self.query_one("user = ?1 AND state IN ('issued', 'activated')", &user)
    }

    /// The user's active enrolment, if any.
    pub fn active(&self, user: &str) -> Result<Option<Enrolment>> {
        self.query_one("user = ?1 AND state = 'active'", &user)
    }

    /// The user's most recent enrolment in any state.
    pub fn latest(&self, user: &str) -> Result<Option<Enrolment>> {
        self.query_one("user = ?1", &user)
    }

    /// Every user's current enrolments (pending and active), by user.
    pub fn list(&self) -> Result<Vec<Enrolment>> {
        let sql = format!(
            "SELECT {ENROLMENT_COLUMNS} FROM enrolments e WHERE id = (SELECT MAX(id) FROM enrolments WHERE user = e.user) \
             OR state = 'active' ORDER BY user, id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], enrolment_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Takes one of the `limit` tries of an `issued`, unexpired enrolment
    /// before its activation password is checked, and returns the hash to
    /// check against (a slow check: callers that share the store release
    /// it first). The try counts as a wrong password from now on:
    /// [`Store::activation_failed`] leaves it counted, [`Store::activate`]
    /// hands it back. One conditional UPDATE, so requests at the same time
    /// never take more than `limit` tries between them and no password is
    /// checked without one. `None` when the enrolment is not `issued`, its
    /// link has expired or every try is taken.
    pub fn reserve_activation_attempt(
        &mut self,
        id: i64,
        limit: u32,
        now: u64,
    ) -> Result<Option<ActivationHash>> {
        let hash = self
            .conn
            .query_row(
                "UPDATE enrolments SET activation_failures = activation_failures + 1 \
                 WHERE id = ?1 AND state = 'issued' AND expires_at > ?3 AND activation_failures < ?2 \
                 RETURNING password_hash",
                params![id, limit, to_i64(now)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(hash.map(ActivationHash))
    }

    /// The password of a try taken with
    /// [`Store::reserve_activation_attempt`] was wrong: the try stays
    /// counted, and once the counted tries reach `limit` the enrolment is
    /// invalidated, even while other tries are still being checked (a
    /// right password among them then finds it invalidated: fail closed).
    /// `None` when the enrolment is no longer `issued`.
    pub fn activation_failed(&mut self, id: i64, limit: u32) -> Result<Option<ActivationFailure>> {
        let row = self
            .conn
            .query_row(
                "UPDATE enrolments \
                 SET state = CASE WHEN activation_failures >= ?2 THEN 'invalidated' ELSE state END \
                 WHERE id = ?1 AND state = 'issued' RETURNING activation_failures, state",
                params![id, limit],
                |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?;
        Ok(row.map(|(failures, state)| ActivationFailure {
            failures,
            invalidated: state == "invalidated",
        }))
    }

    /// Moves an `issued`, unexpired enrolment to `activated` and returns
    /// its secret: the one time it is handed out. Called when the password
    /// of a try taken with [`Store::reserve_activation_attempt`] was
    /// right; that try is handed back, so the count keeps the wrong
    /// passwords only. `None` when another request won the race, wrong
    /// tries invalidated the enrolment meanwhile or the link expired.
    pub fn activate(&mut self, id: i64, now: u64) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let sealed: Option<(Vec<u8>, String)> = self
            .conn
            .query_row(
                "UPDATE enrolments SET state = 'activated', activated_at = ?2, \
                 activation_failures = MAX(activation_failures - 1, 0) \
                 WHERE id = ?1 AND state = 'issued' AND expires_at > ?2 RETURNING secret, user_id",
                params![id, to_i64(now)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match sealed {
            None => Ok(None),
            Some((sealed, user_id)) => unseal(&self.cipher, &sealed, user_id.as_bytes())
                .map(Some)
                .ok_or(StoreError::Corrupt(id)),
        }
    }

    /// The decrypted secret of an enrolment.
    pub fn secret(&self, enrolment: &Enrolment) -> Result<Zeroizing<Vec<u8>>> {
        let sealed: Vec<u8> = self.conn.query_row(
            "SELECT secret FROM enrolments WHERE id = ?1",
            params![enrolment.id],
            |r| r.get(0),
        )?;
        unseal(&self.cipher, &sealed, enrolment.user_id.as_str().as_bytes())
            .ok_or(StoreError::Corrupt(enrolment.id))
    }

    /// Checks the first code of an `activated` enrolment (SPEC §2.3) and,
    /// when it matches, makes the enrolment active. Spaces and hyphens in
    /// the code are ignored. With `adapt`, a code of 30-second steps
    /// switches the token to 30 seconds.
    pub fn confirm_first_code(
        &mut self,
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
        if !self.mark_confirmed(enrolment.id, period, step, now)? {
            return Ok(FirstCode::NotActivated);
        }
        Ok(FirstCode::Active {
            period,
            adapted: period != enrolment.params.period,
        })
    }

    /// Makes an `activated` enrolment active with the confirmed `period`
    /// and first used `step`; the user's previous active token, if any, is
    /// replaced in the same transaction. `false` if it was not `activated`.
    fn mark_confirmed(&mut self, id: i64, period: u64, step: u64, now: u64) -> Result<bool> {
        let tx = write_transaction(&mut self.conn)?;
        let user: Option<String> = tx
            .query_row(
                "SELECT user FROM enrolments WHERE id = ?1 AND state = 'activated'",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(user) = user else { return Ok(false) };
        tx.execute(
            "UPDATE enrolments SET state = 'replaced' WHERE user = ?1 AND state = 'active'",
            params![user],
        )?;
        let changed = tx.execute(
            "UPDATE enrolments SET state = 'active', period = ?2, last_step = ?3, confirmed_at = ?4 \
             WHERE id = ?1 AND state = 'activated'",
            params![id, to_i64(period), to_i64(step), to_i64(now)],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Verifies a batch of codes in one immediate transaction (SPEC §2.4):
    /// one commit for many logins, each answer written before it is given.
    /// Replay protection is a conditional UPDATE of the last step, so a step
    /// is accepted once whatever the concurrency, across processes too.
    /// Every decision is written to the audit table in the same transaction.
    pub fn verify_batch(
        &mut self,
        requests: &[VerifyRequest<'_>],
        now: u64,
        policy: &Policy,
    ) -> Result<Vec<VerifyOutcome>> {
        let tx = write_transaction(&mut self.conn)?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            let outcome = verify_one(
                &tx,
                &self.cipher,
                &self.fingerprint_key,
                request,
                now,
                policy,
            )?;
            let (result, reason) = match &outcome {
                VerifyOutcome::Accept => ("ok", "code accepted"),
                VerifyOutcome::Reject(refusal) => ("fail", refusal.as_str()),
                VerifyOutcome::Error(_) => ("error", "token record unreadable"),
            };
            tx.prepare_cached(
                "INSERT INTO audit (time, user, channel, peer, result, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![to_i64(now), audit_text(request.user), request.channel.as_str(), audit_text(request.peer), result, reason])?;
            outcomes.push(outcome);
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Lifts the lock and clears the failures of the user's active token.
    pub fn unlock(&mut self, user: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE enrolments SET failures = 0, locked_until = NULL, last_wrong = NULL, last_wrong_at = NULL \
             WHERE user = ?1 AND state = 'active'",
            params![user],
        )? == 1)
    }

    /// Learns the clock drift of the user's active token from two
    /// consecutive codes, searching `search` steps either side of now. Both
    /// codes are spent: the second code's step becomes the last used one,
    /// and failures, lock and the last wrong code are cleared.
    ///
    /// Codes at or before the last used step are refused as spent, unless
    /// the second code is earlier and the last used step lies ahead of the
    /// clock (later than `window` steps after now): then every real code is
    /// a replay, and this administrator's action moves the replay state
    /// back to the second code's step ([`Resync::MovedBack`]).
    pub fn resync(
        &mut self,
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
        let Some((drift, step)) =
            verify::resync(&secret, &token.params, first, second, now, search)
        else {
            return Ok(Resync::NotFound);
        };
        let tx = write_transaction(&mut self.conn)?;
        let last: Option<Option<i64>> = tx
            .query_row(
                "SELECT last_step FROM enrolments WHERE id = ?1 AND state = 'active'",
                params![token.id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(last) = last else {
            return Ok(Resync::NoToken);
        };
        let outcome =
            match verify::replay_move(last.map(to_u64), step, token.params.step_at(now), window) {
                ReplayMove::Forward => Resync::Done { drift, step },
                ReplayMove::Back { from } => Resync::MovedBack { drift, from, step },
                ReplayMove::Spent => return Ok(Resync::Spent),
            };
        tx.execute(
            "UPDATE enrolments SET drift = ?2, last_step = ?3, failures = 0, locked_until = NULL, \
             last_wrong = NULL, last_wrong_at = NULL WHERE id = ?1 AND state = 'active'",
            params![token.id, drift, to_i64(step)],
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Failures and lock of the user's active token.
    pub fn counters(&self, user: &str) -> Result<Option<Counters>> {
        Ok(self
            .conn
            .query_row(
                "SELECT last_step, failures, locked_until, drift FROM enrolments WHERE user = ?1 AND state = 'active'",
                params![user],
                |r| {
                    Ok(Counters {
                        last_step: r.get::<_, Option<i64>>(0)?.map(to_u64),
                        failures: r.get(1)?,
                        locked_until: r.get::<_, Option<i64>>(2)?.map(to_u64),
                        last_wrong: None,
                        drift: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Withdraws every pending and active token of `user`; how many.
    pub fn revoke(&mut self, user: &str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE enrolments SET state = 'revoked' WHERE user = ?1 AND state IN ('issued', 'activated', 'active')",
            params![user],
        )?)
    }

    /// Writes a consistent copy of the database to `path` (SQLite's online
    /// backup, safe while otpd serves), created 0600. The key file is not
    /// part of it: back that up too.
    pub fn backup(&self, path: &Path) -> Result<()> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| file_error(path, e))?;
        self.conn
            .backup(rusqlite::DatabaseName::Main, path, None)
            .map_err(|e| file_error(path, e))?;
        Ok(())
    }

    /// Gives an `issued` enrolment a new expiry (for `otpctl resend`).
    pub fn extend(&mut self, id: i64, expires_at: u64) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE enrolments SET expires_at = ?2 WHERE id = ?1 AND state = 'issued'",
            params![id, to_i64(expires_at)],
        )? == 1)
    }

    /// Appends to the audit trail, its texts escaped.
    pub fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let [user, channel, peer, result, reason] = [
            &entry.user,
            &entry.channel,
            &entry.peer,
            &entry.result,
            &entry.reason,
        ]
        .map(|text| audit_text(text));
        self.conn.execute(
            "INSERT INTO audit (time, user, channel, peer, result, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![to_i64(entry.time), user, channel, peer, result, reason],
        )?;
        Ok(())
    }

    /// Audit entries, oldest first, optionally for one user and from a time.
    pub fn audit_entries(&self, user: Option<&str>, since: u64) -> Result<Vec<AuditEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT time, user, channel, peer, result, reason FROM audit \
             WHERE (?1 IS NULL OR user = ?1) AND time >= ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![user, to_i64(since)], |r| {
            Ok(AuditEntry {
                time: to_u64(r.get(0)?),
                user: r.get(1)?,
                channel: r.get(2)?,
                peer: r.get(3)?,
                result: r.get(4)?,
                reason: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `parts` under `key`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>> {
    // HMAC accepts keys of any length; the error cannot happen.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .map_err(|_| StoreError::Database("HMAC key rejected".to_owned()))?;
    for part in parts {
        mac.update(part);
    }
    Ok(Zeroizing::new(mac.finalize().into_bytes().to_vec()))
}

/// Encrypts `plain` bound to `aad` (the record it belongs to): nonce ‖ ciphertext.
fn seal(cipher: &Aes256Gcm, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| StoreError::Database("encryption failed".to_owned()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Decrypts what `seal` made; `None` for a wrong key, record or damage.
fn unseal(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
        .ok()
        .map(Zeroizing::new)
}

/// The columns of a new enrolment row.
struct Insert<'a> {
    user: &'a str,
    email: &'a str,
    service_id: &'a str,
    password_hash: &'a str,
    secret: &'a [u8],
    params: TokenParams,
    language: &'a str,
    state: State,
    now: u64,
    expires_at: u64,
    last_step: Option<u64>,
}

/// Begins a transaction that may write: it takes the write lock at once
/// (`BEGIN IMMEDIATE`), waiting up to the busy timeout while another
/// process writes. A deferred transaction that reads first cannot wait: its
/// upgrade to a writer fails at once with "database is locked" when another
/// process commits in between.
fn write_transaction(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// The last step (of `token`'s period) that the user's enrolments holding
/// the same secret already used, if any. Secrets are compared in constant
/// time; a record that does not decrypt may hold the same secret, so its
/// use counts too.
fn spent_by_same_secret(
    tx: &rusqlite::Transaction<'_>,
    cipher: &Aes256Gcm,
    token: &ImportedToken<'_>,
) -> Result<Option<u64>> {
    let mut stmt = tx.prepare(
        "SELECT user_id, secret, period, last_step FROM enrolments WHERE user = ?1 AND last_step IS NOT NULL",
    )?;
    let rows = stmt.query_map(params![token.user], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut spent = None;
    for row in rows {
        let (user_id, sealed, period, last_step) = row?;
        let same = unseal(cipher, &sealed, user_id.as_bytes())
            .is_none_or(|old| bool::from(old.as_slice().ct_eq(token.secret)));
        if same {
            let step =
                verify::spent_through(to_u64(last_step), to_u64(period), token.params.period);
            spent = spent.max(Some(step));
        }
    }
    Ok(spent)
}

/// Refuses a user who has a pending or active enrolment, unless `replace`.
fn refuse_existing(tx: &rusqlite::Transaction<'_>, user: &str, replace: bool) -> Result<()> {
    if replace {
        return Ok(());
    }
    let mut stmt = tx.prepare(
        "SELECT state FROM enrolments WHERE user = ?1 AND state IN ('issued', 'activated', 'active')",
    )?;
    let existing: Vec<String> = stmt
        .query_map(params![user], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if existing.iter().any(|s| s == "active") {
        return Err(StoreError::HasActive {
            user: user.to_owned(),
        });
    }
    if !existing.is_empty() {
        return Err(StoreError::HasPending {
            user: user.to_owned(),
        });
    }
    Ok(())
}

/// Inserts an enrolment under a fresh user ID, its secret sealed to it.
fn insert_enrolment(
    tx: &rusqlite::Transaction<'_>,
    cipher: &Aes256Gcm,
    row: &Insert<'_>,
) -> Result<i64> {
    let user_id = loop {
        let Some(candidate) = UserId::from_random(OsRng.next_u64()) else {
            continue;
        };
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM enrolments WHERE user_id = ?1)",
            params![candidate.as_str()],
            |r| r.get(0),
        )?;
        if !taken {
            break candidate;
        }
    };
    let sealed = seal(cipher, row.secret, user_id.as_str().as_bytes())?;
    let confirmed_at = (row.state == State::Active).then_some(to_i64(row.now));
    tx.prepare_cached(
        "INSERT INTO enrolments (user, email, service_id, user_id, password_hash, secret, algorithm, digits, period, \
         language, state, created_at, expires_at, confirmed_at, last_step) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        row.user,
        row.email,
        row.service_id,
        user_id.as_str(),
        row.password_hash,
        sealed,
        row.params.algorithm.as_str(),
        row.params.digits,
        to_i64(row.params.period),
        row.language,
        row.state.as_str(),
        to_i64(row.now),
        to_i64(row.expires_at),
        confirmed_at,
        row.last_step.map(to_i64),
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Verifies one code inside the caller's transaction.
fn verify_one(
    tx: &rusqlite::Transaction<'_>,
    cipher: &Aes256Gcm,
    fingerprint_key: &[u8],
    request: &VerifyRequest<'_>,
    now: u64,
    policy: &Policy,
) -> Result<VerifyOutcome> {
    type Row = (
        i64,
        String,
        Vec<u8>,
        String,
        u32,
        i64,
        Option<i64>,
        u32,
        Option<i64>,
        Option<Vec<u8>>,
        Option<i64>,
        i64,
    );
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT id, user_id, secret, algorithm, digits, period, last_step, failures, locked_until, \
             last_wrong, last_wrong_at, drift FROM enrolments WHERE user = ?1 AND state = 'active'",
        )?
        .query_row(params![request.user], |r| {
            Ok((
                r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?,
                r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?,
            ))
        })
        .optional()?;
    let Some((
        id,
        user_id,
        sealed,
        algorithm,
        digits,
        period,
        last_step,
        failures,
        locked_until,
        last_wrong,
        last_wrong_at,
        drift,
    )) = row
    else {
        return Ok(VerifyOutcome::Reject(Refusal::NoToken));
    };
    let (Some(secret), Some(algorithm)) = (
        unseal(cipher, &sealed, user_id.as_bytes()),
        Algorithm::parse(&algorithm),
    ) else {
        return Ok(VerifyOutcome::Error(format!(
            "enrolment {id} cannot be decrypted"
        )));
    };
    let params = TokenParams {
        algorithm,
        digits,
        period: to_u64(period),
    };
    let counters = Counters {
        last_step: last_step.map(to_u64),
        failures,
        locked_until: locked_until.map(to_u64),
        last_wrong: last_wrong
            .and_then(|fp| <[u8; 16]>::try_from(fp.as_slice()).ok())
            .zip(last_wrong_at.map(to_u64)),
        drift,
    };
    let digest = hmac(
        fingerprint_key,
        &[&id.to_be_bytes(), request.code.as_bytes()],
    )?;
    let mut fingerprint = [0u8; 16];
    fingerprint.copy_from_slice(&digest[..16]);
    match verify::decide(
        &secret,
        &params,
        request.code,
        now,
        policy,
        &counters,
        fingerprint,
    ) {
        Verdict::Accept { step } => {
            let won = tx
                .prepare_cached(
                    "UPDATE enrolments SET last_step = ?2, failures = 0, locked_until = NULL, last_wrong = NULL, \
                     last_wrong_at = NULL WHERE id = ?1 AND state = 'active' AND (last_step IS NULL OR last_step < ?2)",
                )?
                .execute(params![id, to_i64(step)])?;
            Ok(if won == 1 {
                VerifyOutcome::Accept
            } else {
                VerifyOutcome::Reject(Refusal::Replay)
            })
        }
        Verdict::Reject { refusal, update } => {
            if let Some(c) = update {
                tx.prepare_cached(
                    "UPDATE enrolments SET failures = ?2, locked_until = ?3, last_wrong = ?4, last_wrong_at = ?5 WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    c.failures,
                    c.locked_until.map(to_i64),
                    c.last_wrong.map(|(fp, _)| fp.to_vec()),
                    c.last_wrong.map(|(_, at)| to_i64(at)),
                ])?;
            }
            Ok(VerifyOutcome::Reject(refusal))
        }
    }
}

/// Brings the schema up to date, one immediate transaction per step, so
/// two processes opening a new database at once do not both migrate.
fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let latest = MIGRATIONS.len();
    loop {
        let tx = write_transaction(conn)?;
        let version: i64 = tx
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let Some(step) = usize::try_from(version).ok().filter(|v| *v <= latest) else {
            return Err(StoreError::TooNew(version));
        };
        let Some(sql) = MIGRATIONS.get(step) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            params![version + 1],
        )?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: TokenParams = TokenParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 60,
    };
    const NOW: u64 = 1_800_000_000;

    fn new_enrolment(user: &str, replace: bool) -> NewEnrolment<'_> {
        NewEnrolment {
            user,
            email: "alice@example.jp",
            service_id: "SVC",
            params: PARAMS,
            language: "ja",
            activation_password: "4321",
            expires_at: NOW + 3600,
            replace,
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[test]
    fn first_open_creates_private_files_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        drop(Store::open(&state).expect("first open"));
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&state.join(DB_FILE)), 0o600);
        Store::open(&state).expect("second open");
    }

    #[test]
    fn wrong_or_missing_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        store
            .issue(&new_enrolment("alice", false), NOW)
            .expect("issue");
        drop(store);
        let key = dir.path().join(KEY_FILE);
        fs::remove_file(&key).expect("remove key");
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::MissingKey(_))
        ));
        write_new_key(&key).expect("new key");
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::WrongKey(_))
        ));
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Store::open(dir.path()).err().expect("loose key refused");
        assert!(err.to_string().contains("0600"), "{err}");
    }

    #[test]
    fn secrets_and_passwords_are_not_stored_in_the_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let e = store
            .issue(&new_enrolment("alice", false), NOW)
            .expect("issue");
        let secret = store.secret(&e).expect("secret");
        let (hash, sealed): (String, Vec<u8>) = store
            .conn
            .query_row("SELECT password_hash, secret FROM enrolments", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("row");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("4321"));
        assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_slice()));
        let stored = store
            .reserve_activation_attempt(e.id, 5, NOW)
            .expect("reserve")
            .expect("a try");
        assert!(stored.verify("4321").expect("check"));
        assert!(!stored.verify("1234").expect("check"));
    }

    #[test]
    fn enrolment_walks_issue_activate_confirm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let e = store
            .issue(&new_enrolment("alice", false), NOW)
            .expect("issue");
        assert_eq!(e.state, State::Issued);
        assert_eq!(e.params, PARAMS);
        let found = store
            .by_ids("SVC", &e.user_id)
            .expect("query")
            .expect("found");
        assert_eq!(found.id, e.id);
        assert!(store.by_ids("OTHER", &e.user_id).expect("query").is_none());

        let secret = store
            .activate(e.id, NOW + 10)
            .expect("activate")
            .expect("secret");
        assert_eq!(secret.len(), 20);
        assert!(
            store.activate(e.id, NOW + 11).expect("again").is_none(),
            "secret handed out once"
        );
        assert!(store
            .mark_confirmed(e.id, 30, 42, NOW + 20)
            .expect("confirm"));
        assert!(!store
            .mark_confirmed(e.id, 30, 42, NOW + 21)
            .expect("confirm twice"));
        let active = store.active("alice").expect("query").expect("active");
        assert_eq!(active.params.period, 30);
        assert_eq!(active.last_step, Some(42));
        assert_eq!(store.secret(&active).expect("secret"), secret);
    }

    #[test]
    fn first_code_confirms_or_adapts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let e = store
            .issue(&new_enrolment("alice", false), NOW)
            .expect("issue");
        assert_eq!(
            store
                .confirm_first_code(&e, "000000", NOW, 1, true)
                .expect("q"),
            FirstCode::NotActivated
        );
        let secret = store
            .activate(e.id, NOW)
            .expect("activate")
            .expect("secret");
        let e = store.latest("alice").expect("q").expect("e");
        // NOW + 40 lies in the second half of a minute: its 30-second code
        // is no 60-second code nearby.
        let t = NOW + 40;
        let thirty = TokenParams {
            period: 30,
            ..PARAMS
        };
        let code = thirty.code_at(&secret, t);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(
            store
                .confirm_first_code(&e, &spaced, t, 1, false)
                .expect("q"),
            FirstCode::Wrong
        );
        assert_eq!(
            store
                .confirm_first_code(&e, &spaced, t, 1, true)
                .expect("q"),
            FirstCode::Active {
                period: 30,
                adapted: true
            }
        );
        let active = store.active("alice").expect("q").expect("active");
        assert_eq!(
            (active.params.period, active.last_step),
            (30, Some(thirty.step_at(t)))
        );
    }

    const POLICY: Policy = Policy {
        window: 1,
        max_failures: 3,
        lockout_seconds: 900,
    };

    /// An active token for `user`; returns its secret.
    fn active_token(store: &mut Store, user: &str) -> Zeroizing<Vec<u8>> {
        let e = store
            .issue(&new_enrolment(user, false), NOW)
            .expect("issue");
        let secret = store
            .activate(e.id, NOW)
            .expect("activate")
            .expect("secret");
        assert!(store.mark_confirmed(e.id, 60, 0, NOW).expect("confirm"));
        secret
    }

    fn verify(store: &mut Store, user: &str, code: &str, now: u64) -> VerifyOutcome {
        let request = VerifyRequest {
            user,
            code,
            channel: Channel::Pam,
            peer: "uid=0",
        };
        store
            .verify_batch(&[request], now, &POLICY)
            .expect("verify")
            .remove(0)
    }

    #[test]
    fn verification_accepts_once_and_audits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let secret = active_token(&mut store, "alice");
        let code = PARAMS.code_at(&secret, NOW);
        assert_eq!(
            verify(&mut store, "alice", &code, NOW),
            VerifyOutcome::Accept
        );
        assert_eq!(
            verify(&mut store, "alice", &code, NOW),
            VerifyOutcome::Reject(Refusal::Replay)
        );
        assert_eq!(
            verify(&mut store, "bob", &code, NOW),
            VerifyOutcome::Reject(Refusal::NoToken)
        );
        let audit = store.audit_entries(None, NOW).expect("audit");
        let reasons: Vec<&str> = audit.iter().map(|a| a.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["code accepted", "code already used", "no active token"]
        );
        assert!(audit
            .iter()
            .all(|a| !a.reason.contains(code.as_str()) && !a.peer.contains(code.as_str())));
    }

    #[test]
    fn concurrent_connections_accept_a_code_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let secret = active_token(&mut store, "alice");
        let code = PARAMS.code_at(&secret, NOW).to_string();
        let accepted: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let code = code.clone();
                    let path = dir.path().to_owned();
                    scope.spawn(move || {
                        let mut own = Store::open(&path).expect("open");
                        (0..5)
                            .filter(|_| {
                                verify(&mut own, "alice", &code, NOW) == VerifyOutcome::Accept
                            })
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        assert_eq!(accepted, 1);
    }

    #[test]
    fn lockout_unlock_and_resync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let secret = active_token(&mut store, "alice");
        for wrong in ["000001", "000002", "000003"] {
            assert!(matches!(
                verify(&mut store, "alice", wrong, NOW),
                VerifyOutcome::Reject(Refusal::WrongCode)
            ));
        }
        let code = PARAMS.code_at(&secret, NOW);
        assert_eq!(
            verify(&mut store, "alice", &code, NOW),
            VerifyOutcome::Reject(Refusal::Locked)
        );
        assert_eq!(
            store.counters("alice").expect("q").map(|c| c.locked_until),
            Some(Some(NOW + 900))
        );
        assert!(store.unlock("alice").expect("unlock"));
        assert_eq!(
            verify(&mut store, "alice", &code, NOW),
            VerifyOutcome::Accept
        );

        // The phone runs ten minutes fast.
        let fast = PARAMS.step_at(NOW) + 10;
        let first = PARAMS.code_for_step(&secret, fast);
        let second = PARAMS.code_for_step(&secret, fast + 1);
        assert_eq!(
            store
                .resync("alice", &second, &first, NOW, 1440, 1)
                .expect("resync"),
            Resync::NotFound
        );
        assert_eq!(
            store
                .resync("alice", &first, &second, NOW, 1440, 1)
                .expect("resync"),
            Resync::Done {
                drift: 11,
                step: fast + 1
            }
        );
        let next = PARAMS.code_for_step(&secret, fast + 2);
        assert_eq!(
            verify(&mut store, "alice", &next, NOW + 60),
            VerifyOutcome::Accept
        );
    }

    #[test]
    fn import_is_all_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        active_token(&mut store, "bob");
        let secret = b"12345678901234567890";
        let token = |user| ImportedToken {
            user,
            secret,
            params: PARAMS,
            last_step: None,
        };
        let err = store.import_tokens(&[token("alice"), token("bob")], "SVC", false, NOW);
        assert!(matches!(err, Err(StoreError::HasActive { .. })));
        assert!(store.active("alice").expect("q").is_none(), "half imported");
        store
            .import_tokens(&[token("alice"), token("bob")], "SVC", true, NOW)
            .expect("import");
        let alice = store.active("alice").expect("q").expect("active");
        assert_eq!(store.secret(&alice).expect("secret").as_slice(), secret);
        let code = PARAMS.code_at(secret, NOW);
        assert_eq!(verify(&mut store, "bob", &code, NOW), VerifyOutcome::Accept);
    }

    #[test]
    fn revoke_and_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("a")).expect("open");
        let secret = active_token(&mut store, "alice");
        let copy = dir.path().join("copy.db");
        store.backup(&copy).expect("backup");
        assert_eq!(mode(&copy), 0o600);
        assert!(
            store.backup(&copy).is_err(),
            "an existing file is not overwritten"
        );
        assert_eq!(store.revoke("alice").expect("revoke"), 1);
        let code = PARAMS.code_at(&secret, NOW);
        assert_eq!(
            verify(&mut store, "alice", &code, NOW),
            VerifyOutcome::Reject(Refusal::NoToken)
        );
        // The copy, with the key file beside it, is a store that still knows alice.
        let restored = dir.path().join("b");
        fs::create_dir(&restored).expect("dir");
        fs::set_permissions(&restored, fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::copy(&copy, restored.join(DB_FILE)).expect("copy db");
        fs::copy(dir.path().join("a").join(KEY_FILE), restored.join(KEY_FILE)).expect("copy key");
        let mut back = Store::open(&restored).expect("open the copy");
        assert_eq!(
            verify(&mut back, "alice", &code, NOW),
            VerifyOutcome::Accept
        );
    }

    #[test]
    fn expired_link_does_not_activate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let e = store
            .issue(&new_enrolment("alice", false), NOW)
            .expect("issue");
        assert!(store
            .activate(e.id, NOW + 3600)
            .expect("activate")
            .is_none());
        assert!(store.extend(e.id, NOW + 7200).expect("extend"));
        assert!(store
            .activate(e.id, NOW + 3600)
            .expect("activate")
            .is_some());
    }

    /// A wrong password on a reserved try: checked against the hash the
    /// reservation returned, then counted.
    fn wrong_try(store: &mut Store, id: i64, limit: u32) -> ActivationFailure {
        let hash = store
            .reserve_activation_attempt(id, limit, NOW)
            .expect("reserve")
            .expect("a try");
        assert!(!hash.verify("0000").expect("check"));
        store
            .activation_failed(id, limit)
            .expect("count")
            .expect("issued")
    }

    #[test]
    fn wrong_passwords_invalidate_at_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let e = store
            .issue(&new_enrolment("alice", false), NOW)
            .expect("issue");
        for n in 1..5 {
            let f = wrong_try(&mut store, e.id, 5);
            assert_eq!((f.failures, f.invalidated), (n, false));
        }
        let f = wrong_try(&mut store, e.id, 5);
        assert_eq!((f.failures, f.invalidated), (5, true));
        assert!(store
            .reserve_activation_attempt(e.id, 5, NOW)
            .expect("reserve")
            .is_none());
        assert!(store.activation_failed(e.id, 5).expect("count").is_none());
        assert!(store.activate(e.id, NOW).expect("activate").is_none());
        let latest = store.latest("alice").expect("q").expect("exists");
        assert_eq!(
            (latest.state, latest.activation_failures),
            (State::Invalidated, 5)
        );
        // An invalidated enrolment does not block a new issue.
        store
            .issue(&new_enrolment("alice", false), NOW)
            .expect("issue again");
    }

    #[test]
    fn tries_are_taken_before_the_check_and_never_exceed_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let e = store
            .issue(&new_enrolment("alice", false), NOW)
            .expect("issue");
        // Eight connections (otpd and otpctl share the file) reserve at once.
        let taken = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        let mut store = Store::open(dir.path()).expect("open");
                        store
                            .reserve_activation_attempt(e.id, 3, NOW)
                            .expect("reserve")
                            .is_some()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .filter(|taken| *taken)
                .count()
        });
        assert_eq!(taken, 3);
        let pending = store.by_id(e.id).expect("q").expect("exists");
        assert_eq!(
            (pending.state, pending.activation_failures),
            (State::Issued, 3)
        );
        // Any wrong one of them, at the limit, invalidates.
        let f = store
            .activation_failed(e.id, 3)
            .expect("count")
            .expect("issued");
        assert_eq!((f.failures, f.invalidated), (3, true));

        // A right password hands its try back: the count keeps wrong ones.
        let e = store
            .issue(&new_enrolment("bob", false), NOW)
            .expect("issue");
        wrong_try(&mut store, e.id, 5);
        let hash = store
            .reserve_activation_attempt(e.id, 5, NOW)
            .expect("reserve")
            .expect("a try");
        assert_eq!(
            store
                .by_id(e.id)
                .expect("q")
                .expect("exists")
                .activation_failures,
            2
        );
        assert!(hash.verify("4321").expect("check"));
        assert!(store.activate(e.id, NOW).expect("activate").is_some());
        let activated = store.by_id(e.id).expect("q").expect("exists");
        assert_eq!(
            (activated.state, activated.activation_failures),
            (State::Activated, 1)
        );
        // A try still being checked then finds nothing to count.
        assert!(store.activation_failed(e.id, 5).expect("count").is_none());

        // No try on an expired link.
        let e = store
            .issue(&new_enrolment("carol", false), NOW)
            .expect("issue");
        assert!(store
            .reserve_activation_attempt(e.id, 5, e.expires_at)
            .expect("reserve")
            .is_none());
        assert_eq!(
            store
                .by_id(e.id)
                .expect("q")
                .expect("exists")
                .activation_failures,
            0
        );
    }

    #[test]
    fn replace_keeps_the_old_token_until_confirmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let old = store
            .issue(&new_enrolment("alice", false), NOW)
            .expect("issue");
        assert!(matches!(
            store.issue(&new_enrolment("alice", false), NOW),
            Err(StoreError::HasPending { .. })
        ));
        store.activate(old.id, NOW).expect("activate");
        store.mark_confirmed(old.id, 60, 1, NOW).expect("confirm");
        assert!(matches!(
            store.issue(&new_enrolment("alice", false), NOW),
            Err(StoreError::HasActive { .. })
        ));
        let new = store
            .issue(&new_enrolment("alice", true), NOW)
            .expect("replace");
        assert_eq!(
            store.active("alice").expect("q").map(|e| e.id),
            Some(old.id)
        );
        assert_eq!(
            store.pending("alice").expect("q").map(|e| e.id),
            Some(new.id)
        );
        store.activate(new.id, NOW).expect("activate");
        store.mark_confirmed(new.id, 60, 2, NOW).expect("confirm");
        assert_eq!(
            store.active("alice").expect("q").map(|e| e.id),
            Some(new.id)
        );
        assert_eq!(store.list().expect("list").len(), 1);
    }

    #[test]
    fn withdraw_removes_only_issued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let e = store
            .issue(&new_enrolment("alice", false), NOW)
            .expect("issue");
        assert!(store.withdraw(e.id).expect("withdraw"));
        assert!(store.latest("alice").expect("q").is_none());
    }

    #[test]
    fn audit_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for (t, user) in [(10, "alice"), (20, "bob"), (30, "alice")] {
            store
                .audit(&AuditEntry {
                    time: t,
                    user: user.to_owned(),
                    channel: Channel::Cli.as_str().to_owned(),
                    peer: "uid=0".to_owned(),
                    result: "ok".to_owned(),
                    reason: "issued".to_owned(),
                })
                .expect("audit");
        }
        assert_eq!(store.audit_entries(None, 0).expect("all").len(), 3);
        let alice: Vec<u64> = store
            .audit_entries(Some("alice"), 15)
            .expect("q")
            .iter()
            .map(|e| e.time)
            .collect();
        assert_eq!(alice, vec![30]);
    }

    #[test]
    fn audit_texts_are_stored_escaped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        store
            .audit(&AuditEntry {
                time: 10,
                user: "ali\u{202e}ecb".to_owned(),
                channel: Channel::Cli.as_str().to_owned(),
                peer: "uid=0\nforged".to_owned(),
                result: "ok".to_owned(),
                reason: "unlocked".to_owned(),
            })
            .expect("audit");
        let request = VerifyRequest {
            user: "bob\u{2028}x",
            code: "123456",
            channel: Channel::Pam,
            peer: "uid=0 service=sshd\u{200b}",
        };
        store
            .verify_batch(&[request], NOW, &POLICY)
            .expect("verify");
        let audit = store.audit_entries(None, 0).expect("audit");
        let shown: Vec<(&str, &str)> = audit
            .iter()
            .map(|a| (a.user.as_str(), a.peer.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("ali\\u{202e}ecb", "uid=0\\u{a}forged"),
                ("bob\\u{2028}x", "uid=0 service=sshd\\u{200b}"),
            ]
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("open"));
        let conn = Connection::open(dir.path().join(DB_FILE)).expect("db");
        conn.execute("UPDATE schema_version SET version = 99", [])
            .expect("bump");
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::TooNew(99))
        ));
    }

    /// Runs `write` on a store of its own while another connection holds
    /// the write lock for `hold` and then commits, as otpd does between
    /// logins. The write must wait for the lock, not fail.
    fn while_another_connection_writes<T: Send>(
        dir: &Path,
        hold: Duration,
        write: impl FnOnce(&mut Store) -> Result<T> + Send,
    ) -> T {
        let mut other = Store::open(dir).expect("open");
        let mut writer = Store::open(dir).expect("open");
        let tx = other
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        std::thread::scope(|scope| {
            let done = scope.spawn(move || write(&mut writer));
            std::thread::sleep(hold);
            tx.execute(
                "INSERT INTO audit (time, user, channel, peer, result, reason) \
                 VALUES (1, 'x', 'cli', 'uid=0', 'ok', 'another writer')",
                [],
            )
            .expect("write");
            tx.commit().expect("commit");
            done.join()
                .expect("thread")
                .expect("the write waits for the lock instead of failing")
        })
    }

    /// Hashes a password as `issue` does, to time it.
    fn hash_like_issue() {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(b"4321", &salt)
            .expect("hash");
    }

    #[test]
    fn writers_wait_for_another_connections_write_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let activated = store
            .issue(&new_enrolment("carol", false), NOW)
            .expect("issue");
        let secret = store
            .activate(activated.id, NOW)
            .expect("activate")
            .expect("secret");
        let activated = store.latest("carol").expect("q").expect("carol");
        drop(store);

        // Long enough for the writer to reach its transaction; `issue`
        // hashes the activation password first.
        let hold = Duration::from_millis(800);
        let started = std::time::Instant::now();
        hash_like_issue();
        let issue_hold = hold + started.elapsed() * 3;

        let secret_bytes = b"12345678901234567890";
        while_another_connection_writes(dir.path(), hold, |s| {
            let token = ImportedToken {
                user: "alice",
                secret: secret_bytes,
                params: PARAMS,
                last_step: None,
            };
            s.import_tokens(&[token], "SVC", false, NOW)
        });
        let issued = while_another_connection_writes(dir.path(), issue_hold, |s| {
            s.issue(&new_enrolment("bob", false), NOW)
        });
        assert_eq!(issued.state, State::Issued);
        let code = PARAMS.code_at(&secret, NOW);
        let confirmed = while_another_connection_writes(dir.path(), hold, |s| {
            s.confirm_first_code(&activated, &code, NOW, 1, false)
        });
        assert_eq!(
            confirmed,
            FirstCode::Active {
                period: 60,
                adapted: false
            }
        );
        let fast = PARAMS.step_at(NOW) + 5;
        let first = PARAMS.code_for_step(secret_bytes, fast);
        let second = PARAMS.code_for_step(secret_bytes, fast + 1);
        let resynced = while_another_connection_writes(dir.path(), hold, |s| {
            s.resync("alice", &first, &second, NOW, 100, 1)
        });
        assert_eq!(
            resynced,
            Resync::Done {
                drift: 6,
                step: fast + 1
            }
        );
        let store = Store::open(dir.path()).expect("open");
        let writes = store
            .audit_entries(Some("x"), 0)
            .expect("audit")
            .iter()
            .filter(|e| e.reason == "another writer")
            .count();
        assert_eq!(writes, 4);
    }

    /// Imports `secret` for `user` with `period`, replacing what it has.
    fn import(store: &mut Store, user: &str, secret: &[u8], period: u64, last_step: Option<u64>) {
        let token = ImportedToken {
            user,
            secret,
            params: TokenParams { period, ..PARAMS },
            last_step,
        };
        store
            .import_tokens(&[token], "SVC", true, NOW)
            .expect("import");
    }

    #[test]
    fn reimporting_a_secret_keeps_its_replay_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let secret = b"12345678901234567890";
        import(&mut store, "alice", secret, 30, None);
        let thirty = TokenParams {
            period: 30,
            ..PARAMS
        };
        let code = thirty.code_at(secret, NOW);
        assert_eq!(
            verify(&mut store, "alice", &code, NOW),
            VerifyOutcome::Accept
        );
        let used = thirty.step_at(NOW);

        // The same secret again: the accepted code stays spent.
        import(&mut store, "alice", secret, 30, None);
        let last = |store: &Store| store.active("alice").expect("q").expect("active").last_step;
        assert_eq!(last(&store), Some(used));
        assert_eq!(
            verify(&mut store, "alice", &code, NOW),
            VerifyOutcome::Reject(Refusal::Replay)
        );
        // An older replay state from the import file does not lower it.
        import(&mut store, "alice", secret, 30, Some(used - 10));
        assert_eq!(last(&store), Some(used));
        // A later one raises it.
        import(&mut store, "alice", secret, 30, Some(used + 2));
        assert_eq!(last(&store), Some(used + 2));

        // With 60-second steps, every step that overlaps a spent one is spent.
        import(&mut store, "alice", secret, 60, None);
        assert_eq!(last(&store), Some(((used + 3) * 30 - 1) / 60));
        assert_eq!(
            verify(&mut store, "alice", &PARAMS.code_at(secret, NOW + 60), NOW),
            VerifyOutcome::Reject(Refusal::Replay)
        );

        // A revoked token's use counts as well.
        assert_eq!(store.revoke("alice").expect("revoke"), 1);
        import(&mut store, "alice", secret, 60, None);
        assert_eq!(last(&store), Some(((used + 3) * 30 - 1) / 60));

        // Another secret starts afresh; so does the same secret of another user.
        import(&mut store, "alice", b"another secret 12345", 60, None);
        assert_eq!(last(&store), None);
        import(&mut store, "bob", secret, 30, None);
        assert_eq!(
            store.active("bob").expect("q").expect("bob").last_step,
            None
        );
    }

    #[test]
    fn resync_moves_a_replay_state_ahead_of_the_clock_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let secret = active_token(&mut store, "alice");
        let now_step = PARAMS.step_at(NOW);
        // A code accepted while the server clock ran ten hours ahead.
        let ahead = NOW + 36_000;
        let code = PARAMS.code_at(&secret, ahead);
        assert_eq!(
            verify(&mut store, "alice", &code, ahead),
            VerifyOutcome::Accept
        );
        let current = PARAMS.code_for_step(&secret, now_step + 1);
        assert_eq!(
            verify(&mut store, "alice", &current, NOW),
            VerifyOutcome::Reject(Refusal::Replay)
        );

        let first = PARAMS.code_for_step(&secret, now_step - 1);
        let second = PARAMS.code_for_step(&secret, now_step);
        assert_eq!(
            store
                .resync("alice", &first, &second, NOW, 1440, 1)
                .expect("resync"),
            Resync::MovedBack {
                drift: 0,
                from: PARAMS.step_at(ahead),
                step: now_step
            }
        );
        assert_eq!(
            verify(&mut store, "alice", &current, NOW),
            VerifyOutcome::Accept
        );
        // The resync's codes are spent; given again they are refused, and
        // nothing moves.
        assert_eq!(
            verify(&mut store, "alice", &second, NOW),
            VerifyOutcome::Reject(Refusal::Replay)
        );
        assert_eq!(
            store
                .resync("alice", &first, &second, NOW, 1440, 1)
                .expect("resync"),
            Resync::Spent
        );
        assert_eq!(
            store
                .counters("alice")
                .expect("q")
                .and_then(|c| c.last_step),
            Some(now_step + 1)
        );
        // Codes beyond the search are not found.
        let far = PARAMS.code_for_step(&secret, now_step + 2000);
        let after = PARAMS.code_for_step(&secret, now_step + 2001);
        assert_eq!(
            store
                .resync("alice", &far, &after, NOW, 1440, 1)
                .expect("resync"),
            Resync::NotFound
        );
        assert_eq!(
            store
                .resync("bob", &first, &second, NOW, 1440, 1)
                .expect("resync"),
            Resync::NoToken
        );
    }
}
