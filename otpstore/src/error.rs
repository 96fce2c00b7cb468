//! What a store operation can fail with. Each message says what to do; the
//! error of the layer below (the database, the file system, the password
//! hash) stays reachable as the source, so callers can tell a database that
//! is unavailable or busy from a record that is missing or damaged.

use std::path::PathBuf;
use std::sync::Arc;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or refused the operation: not reachable, busy
    /// beyond the wait, full, damaged, or a row this build cannot read.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// PostgreSQL failed or refused the operation.
    #[error("database error: {}", Causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection to PostgreSQL could be had within the deadline.
    #[error("database unavailable: {}", Causes(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The database did not answer within the deadline.
    #[error("database unavailable: no answer within {} ms", .0.as_millis())]
    Timeout(std::time::Duration),
    /// `[store]` is not usable as configured.
    #[error("{key}: {reason}")]
    Config { key: &'static str, reason: String },
    /// The backend does not offer the operation.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A file or directory of the store could not be created, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A copy of the database could not be written.
    #[error("{path}: {source}")]
    Backup {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A file or directory of the store is refused as it is (its mode or size).
    #[error("{path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
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
    /// A hardware token's serial number is already in the store.
    #[error("a token with serial {0:?} is already in the store")]
    SerialTaken(String),
    /// No hardware token has the serial number.
    #[error("no token has serial {0:?}; `otpctl list --unassigned` shows the loaded ones")]
    UnknownSerial(String),
    /// The hardware token was given to a user already.
    #[error("the token with serial {serial:?} is already assigned (to {user})")]
    SerialAssigned { serial: String, user: String },
    #[error("the database was written by a newer otpd (schema {0}); upgrade otpd")]
    TooNew(i64),
    /// Hashing an activation password, or reading a stored hash, failed.
    #[error("password hashing failed: {0}")]
    Hash(#[from] argon2::password_hash::Error),
    /// A stored activation password hash lacks a part it needs.
    #[error("password hashing failed: the stored hash lacks its salt or its output")]
    HashIncomplete,
    /// Sealing a secret failed.
    #[error("database error: encryption failed")]
    Seal(#[source] aes_gcm::Error),
    /// The database a copy goes to could not be opened or written.
    #[error("{target}: {source}")]
    Target {
        /// The target, its password left out.
        target: String,
        #[source]
        source: Box<StoreError>,
    },
    /// A copy was refused: its target already holds data.
    #[error(
        "{target} already holds data (enrolments: {enrolments}, audit rows: {audit_rows}, \
         key check values: {meta_rows}); a copy goes into an empty database only, and nothing was written"
    )]
    TargetNotEmpty {
        target: String,
        enrolments: u64,
        audit_rows: u64,
        meta_rows: u64,
    },
    /// What a copy read back from its target differs from its source; the
    /// copy was rolled back.
    #[error(
        "the copy does not match its source ({0}); it was rolled back and nothing was written"
    )]
    CopyMismatch(String),
    /// A step the store relies on did not hold (a row it just wrote is gone).
    #[error("database error: {0}")]
    Internal(&'static str),
}

impl StoreError {
    /// Whether the database was busy (another writer held it beyond the
    /// wait) or locked: the operation may succeed when tried again, and
    /// nothing was changed.
    pub fn is_busy(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            StoreError::Database(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            StoreError::Postgres(e) => matches!(
                e.code(),
                Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED)
            ),
            _ => false,
        }
    }

    /// Whether PostgreSQL refused the login's password.
    pub fn is_wrong_password(&self) -> bool {
        use tokio_postgres::error::SqlState;
        let code = match self {
            StoreError::Postgres(e) => e.code(),
            StoreError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        };
        code == Some(&SqlState::INVALID_PASSWORD)
    }
}

/// An error and its causes, each once: the PostgreSQL client says what
/// failed (the server's message, the refused connection) only in an
/// error's sources.
struct Causes<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let more = e.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            cause = e.source();
        }
        f.write_str(&text)
    }
}

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

/// Why a code was neither accepted nor refused: nobody gets in, and the
/// caller answers with an error (or, over RADIUS, not at all).
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    /// The token's record cannot be read: damaged, or sealed with another
    /// key. The store audits it as `token record unreadable`.
    #[error("enrolment {0} cannot be decrypted")]
    Unreadable(i64),
    /// The store failed the whole batch the code was in (the database is
    /// unreachable, busy beyond the wait, ...); nothing was written.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The code was not verified: the verifier has stopped.
    #[error("the verifier has stopped")]
    Stopped,
    /// The verifier dropped the request before it answered.
    #[error("the verifier dropped the request")]
    Dropped,
}

/// Two errors are the same when they are of one kind about the same
/// record, or the same failure of the store.
impl PartialEq for VerifyError {
    fn eq(&self, other: &VerifyError) -> bool {
        match (self, other) {
            (VerifyError::Unreadable(a), VerifyError::Unreadable(b)) => a == b,
            (VerifyError::Store(a), VerifyError::Store(b)) => Arc::ptr_eq(a, b),
            (VerifyError::Stopped, VerifyError::Stopped)
            | (VerifyError::Dropped, VerifyError::Dropped) => true,
            _ => false,
        }
    }
}

impl Eq for VerifyError {}
