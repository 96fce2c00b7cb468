//! A copy of the whole store into an empty database of either backend
//! (`otpctl store copy`): moving a SQLite store to PostgreSQL, or back.
//!
//! Rows are copied as stored, column for column: enrolments in every state
//! with their IDs (the fingerprint of a last wrong code is keyed with the
//! ID), their sealed secrets as sealed bytes (bound to the user ID, so the
//! same key file opens them on the target), replay state, failure counts,
//! locks, drift, activation failures and the RADIUS renegotiation window
//! of the last accepted code; the audit trail with its IDs and
//! in its order; the keyed hashes of unused recovery codes; and `meta`
//! with the key check value. The target keeps its
//! own schema, at this build's version; its ID sequences continue after the
//! copied IDs.
//!
//! The source is read in one read transaction, a consistent snapshot while
//! otpd serves; the target is written in one transaction that holds its
//! tables against other writers, and that refuses a target holding any
//! enrolment, audit row or key check value before it writes anything. Rows
//! travel in chunks of [`CHUNK`], so the copy's memory does not grow with
//! the store. Before the target commits, the copy reads it back in the same
//! transaction and compares counts, sums and a digest of every row with the
//! source's: a difference rolls the copy back. The backends hold the SQL
//! (readers and writers of [`RawEnrolment`] and [`RawAudit`] rows); the
//! procedure is here, once.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::backend::Backend;
use crate::error::{Result, StoreError};
use crate::keyfile::{self, io_error};
use crate::postgres::{self, DatabaseUrl, Postgres};
use crate::sqlite::Sqlite;

/// Rows per read and write.
pub(crate) const CHUNK: usize = 5_000;

/// How long connecting to a PostgreSQL target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The columns of an enrolment row, in the order of [`RawEnrolment`]; the
/// user's column is called `user` here and may be named otherwise by a
/// backend (see [`column_list`]).
pub(crate) const ENROLMENT_ROW: [&str; 28] = [
    "id",
    "user",
    "email",
    "service_id",
    "user_id",
    "password_hash",
    "secret",
    "algorithm",
    "digits",
    "period",
    "language",
    "state",
    "created_at",
    "expires_at",
    "activated_at",
    "confirmed_at",
    "activation_failures",
    "last_step",
    "failures",
    "locked_until",
    "last_wrong",
    "last_wrong_at",
    "drift",
    "kind",
    "serial",
    "reauth_fp",
    "reauth_client",
    "reauth_at",
];

/// The columns of an audit row, in the order of [`RawAudit`].
pub(crate) const AUDIT_ROW: [&str; 7] =
    ["id", "time", "user", "channel", "peer", "result", "reason"];

/// `columns` separated by commas, `user` named `user_column`.
pub(crate) fn column_list(columns: &[&str], user_column: &str) -> String {
    columns
        .iter()
        .map(|c| if *c == "user" { user_column } else { c })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An enrolment row as stored, every column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEnrolment {
    pub id: i64,
    pub user: String,
    pub email: String,
    pub service_id: String,
    pub user_id: String,
    pub password_hash: String,
    /// Sealed, bound to `user_id`.
    pub secret: Vec<u8>,
    pub algorithm: String,
    pub digits: i64,
    pub period: i64,
    pub language: String,
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub activated_at: Option<i64>,
    pub confirmed_at: Option<i64>,
    pub activation_failures: i64,
    pub last_step: Option<i64>,
    pub failures: i64,
    pub locked_until: Option<i64>,
    pub last_wrong: Option<Vec<u8>>,
    pub last_wrong_at: Option<i64>,
    pub drift: i64,
    pub kind: String,
    pub serial: Option<String>,
    /// The renegotiation window: the accepted code's fingerprint, the
    /// RADIUS client and when.
    pub reauth_fp: Option<Vec<u8>>,
    pub reauth_client: Option<String>,
    pub reauth_at: Option<i64>,
}

/// An audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawAudit {
    pub id: i64,
    pub time: i64,
    pub user: String,
    pub channel: String,
    pub peer: String,
    pub result: String,
    pub reason: String,
}

/// A row of a table read in ID order.
trait Keyed {
    fn id(&self) -> i64;
    /// Feeds every column to `digest`, each one delimited.
    fn feed(&self, digest: &mut Sha256);
}

fn feed_int(digest: &mut Sha256, v: i64) {
    digest.update([b'i']);
    digest.update(v.to_be_bytes());
}

fn feed_opt(digest: &mut Sha256, v: Option<i64>) {
    match v {
        Some(v) => feed_int(digest, v),
        None => digest.update([b'n']),
    }
}

fn feed_bytes(digest: &mut Sha256, v: &[u8]) {
    digest.update([b'b']);
    digest.update((v.len() as u64).to_be_bytes());
    digest.update(v);
}

fn feed_opt_bytes(digest: &mut Sha256, v: Option<&[u8]>) {
    match v {
        Some(v) => feed_bytes(digest, v),
        None => digest.update([b'n']),
    }
}

impl Keyed for RawEnrolment {
    fn id(&self) -> i64 {
        self.id
    }

    fn feed(&self, d: &mut Sha256) {
        feed_int(d, self.id);
        for text in [
            &self.user,
            &self.email,
            &self.service_id,
            &self.user_id,
            &self.password_hash,
        ] {
            feed_bytes(d, text.as_bytes());
        }
        feed_bytes(d, &self.secret);
        feed_bytes(d, self.algorithm.as_bytes());
        feed_int(d, self.digits);
        feed_int(d, self.period);
        feed_bytes(d, self.language.as_bytes());
        feed_bytes(d, self.state.as_bytes());
        feed_int(d, self.created_at);
        feed_int(d, self.expires_at);
        feed_opt(d, self.activated_at);
        feed_opt(d, self.confirmed_at);
        feed_int(d, self.activation_failures);
        feed_opt(d, self.last_step);
        feed_int(d, self.failures);
        feed_opt(d, self.locked_until);
        feed_opt_bytes(d, self.last_wrong.as_deref());
        feed_opt(d, self.last_wrong_at);
        feed_int(d, self.drift);
        feed_bytes(d, self.kind.as_bytes());
        feed_opt_bytes(d, self.serial.as_deref().map(str::as_bytes));
        feed_opt_bytes(d, self.reauth_fp.as_deref());
        feed_opt_bytes(d, self.reauth_client.as_deref().map(str::as_bytes));
        feed_opt(d, self.reauth_at);
    }
}

impl Keyed for RawAudit {
    fn id(&self) -> i64 {
        self.id
    }

    fn feed(&self, d: &mut Sha256) {
        feed_int(d, self.id);
        feed_int(d, self.time);
        for text in [
            &self.user,
            &self.channel,
            &self.peer,
            &self.result,
            &self.reason,
        ] {
            feed_bytes(d, text.as_bytes());
        }
    }
}

/// Counts and sums of a store, as its database computes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Enrolments by state (`issued`, `active`, `revoked`, ...).
    pub by_state: BTreeMap<String, u64>,
    pub audit_rows: u64,
    /// Rows of `meta`: the key check value.
    pub meta_rows: u64,
    /// Sum of the last used steps (replay state).
    pub last_step_sum: i64,
    /// Sum of the failure counts.
    pub failures_sum: i64,
    /// Sum of the wrong activation passwords.
    pub activation_failures_sum: i64,
    /// Enrolments with a lock time.
    pub locked: u64,
    /// Enrolments that remember a last wrong code.
    pub last_wrong: u64,
    /// Sum of the learnt clock drifts.
    pub drift_sum: i64,
    pub max_enrolment_id: i64,
    pub max_audit_id: i64,
    /// Unused recovery codes of every token.
    pub recovery_codes: u64,
}

/// The figures of [`Tally`] but the states, one row of ten integers in the
/// order of [`Tally::from_figures`]; the same SQL on either backend.
pub(crate) const TALLY_SQL: &str = "SELECT CAST(COALESCE(SUM(last_step), 0) AS BIGINT), \
     CAST(COALESCE(SUM(failures), 0) AS BIGINT), CAST(COALESCE(SUM(activation_failures), 0) AS BIGINT), \
     COUNT(locked_until), COUNT(last_wrong), CAST(COALESCE(SUM(drift), 0) AS BIGINT), COALESCE(MAX(id), 0), \
     (SELECT COUNT(*) FROM audit), (SELECT COALESCE(MAX(id), 0) FROM audit), (SELECT COUNT(*) FROM meta) \
     FROM enrolments";

/// The recovery codes of [`Tally`]: one row of one integer.
pub(crate) const RECOVERY_TALLY_SQL: &str = "SELECT COUNT(*) FROM recovery_codes";

/// A stored recovery code: its enrolment and keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRecoveryCode {
    pub enrolment_id: i64,
    pub hash: Vec<u8>,
}

impl RawRecoveryCode {
    fn feed(&self, d: &mut Sha256) {
        feed_int(d, self.enrolment_id);
        feed_bytes(d, &self.hash);
    }
}

/// Enrolments by state, as rows of state and count.
pub(crate) const STATES_SQL: &str = "SELECT state, COUNT(*) FROM enrolments GROUP BY state";

impl Tally {
    /// The tally of the row of [`TALLY_SQL`] and the rows of [`STATES_SQL`].
    pub(crate) fn from_figures(figures: [i64; 10], states: Vec<(String, i64)>) -> Tally {
        use crate::backend::to_u64;
        let [last_step_sum, failures_sum, activation_failures_sum, locked, last_wrong, drift_sum, max_enrolment_id, audit_rows, max_audit_id, meta_rows] =
            figures;
        Tally {
            by_state: states
                .into_iter()
                .map(|(state, n)| (state, to_u64(n)))
                .collect(),
            audit_rows: to_u64(audit_rows),
            meta_rows: to_u64(meta_rows),
            last_step_sum,
            failures_sum,
            activation_failures_sum,
            locked: to_u64(locked),
            last_wrong: to_u64(last_wrong),
            drift_sum,
            max_enrolment_id,
            max_audit_id,
            recovery_codes: 0,
        }
    }

    /// Enrolments in every state.
    pub fn enrolments(&self) -> u64 {
        self.by_state.values().sum()
    }

    fn holds_data(&self) -> bool {
        self.enrolments() > 0
            || self.audit_rows > 0
            || self.meta_rows > 0
            || self.recovery_codes > 0
    }

    /// The names and values of the figures, for a report.
    pub fn figures(&self) -> Vec<(String, i128)> {
        let mut figures: Vec<(String, i128)> = self
            .by_state
            .iter()
            .map(|(state, n)| (format!("enrolments {state}"), i128::from(*n)))
            .collect();
        figures.extend([
            ("enrolments".to_owned(), i128::from(self.enrolments())),
            ("audit rows".to_owned(), i128::from(self.audit_rows)),
            ("key check values".to_owned(), i128::from(self.meta_rows)),
            (
                "sum of last_step".to_owned(),
                i128::from(self.last_step_sum),
            ),
            ("sum of failures".to_owned(), i128::from(self.failures_sum)),
            (
                "sum of activation_failures".to_owned(),
                i128::from(self.activation_failures_sum),
            ),
            ("locked".to_owned(), i128::from(self.locked)),
            (
                "with a last wrong code".to_owned(),
                i128::from(self.last_wrong),
            ),
            ("sum of drift".to_owned(), i128::from(self.drift_sum)),
            (
                "last enrolment id".to_owned(),
                i128::from(self.max_enrolment_id),
            ),
            ("last audit id".to_owned(), i128::from(self.max_audit_id)),
            ("recovery codes".to_owned(), i128::from(self.recovery_codes)),
        ]);
        figures
    }
}

/// One side of a copy as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySide {
    /// `sqlite` or `postgresql`.
    pub backend: &'static str,
    /// The schema version of that backend's tables.
    pub schema_version: i64,
    pub tally: Tally,
    /// SHA-256 over every row of `meta`, `enrolments` and `audit` in ID
    /// order, each column delimited (hex).
    pub digest: String,
}

/// What [`Store::copy_to`](crate::Store::copy_to) copied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The target, its password left out.
    pub target: String,
    /// The configured store, in the snapshot that was copied.
    pub source: CopySide,
    /// The target, read back in the copy's transaction before it committed.
    pub copy: CopySide,
}

/// Reads a store for a copy, inside one transaction.
pub(crate) trait CopyRead {
    /// `sqlite` or `postgresql`.
    fn backend(&self) -> &'static str;
    fn schema_version(&mut self) -> Result<i64>;
    fn tally(&mut self) -> Result<Tally>;
    /// Every row of `meta`, by key.
    fn meta(&mut self) -> Result<Vec<(String, Vec<u8>)>>;
    /// Up to `limit` enrolments with an ID above `after`, by ID.
    fn enrolments(&mut self, after: i64, limit: usize) -> Result<Vec<RawEnrolment>>;
    /// Up to `limit` audit rows with an ID above `after`, by ID.
    fn audit(&mut self, after: i64, limit: usize) -> Result<Vec<RawAudit>>;
    /// Up to `limit` recovery codes after `after` in the order of
    /// enrolment and hash (from the start when `None`).
    fn recovery_codes(
        &mut self,
        after: Option<&RawRecoveryCode>,
        limit: usize,
    ) -> Result<Vec<RawRecoveryCode>>;
}

/// Writes a copy into a database, inside one transaction that holds its
/// tables against other writers; dropped without [`CopyWrite::commit`], it
/// leaves nothing behind.
pub(crate) trait CopyWrite: CopyRead {
    fn write_meta(&mut self, rows: &[(String, Vec<u8>)]) -> Result<()>;
    /// Inserts the rows with their IDs.
    fn write_enrolments(&mut self, rows: &[RawEnrolment]) -> Result<()>;
    /// Inserts the rows with their IDs.
    fn write_audit(&mut self, rows: &[RawAudit]) -> Result<()>;
    fn write_recovery_codes(&mut self, rows: &[RawRecoveryCode]) -> Result<()>;
    /// Makes new IDs continue after the copied ones, and commits.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// Where a copy goes: a PostgreSQL database or a new SQLite file.
pub struct TargetSpec {
    kind: Kind,
}

enum Kind {
    Sqlite(PathBuf),
    Postgresql {
        url: Box<DatabaseUrl>,
        password: Option<Zeroizing<String>>,
    },
}

/// The scheme of a SQLite target.
const SQLITE_SCHEME: &str = "sqlite://";

impl TargetSpec {
    /// The target `to`: `postgresql://…` (the TLS rules of `[store] url`,
    /// the password in the URL or in `password_file`, read with the rules
    /// of `[store] password_file`), or `sqlite:///ABSOLUTE/PATH` for a new
    /// SQLite file. Errors name the option and never quote the URL.
    pub fn parse(to: &str, password_file: Option<&Path>) -> Result<TargetSpec> {
        let bad = |key: &'static str, reason: String| StoreError::Config { key, reason };
        if let Some(path) = to.strip_prefix(SQLITE_SCHEME) {
            if password_file.is_some() {
                return Err(bad(
                    "--password-file",
                    "is for a postgresql:// target".to_owned(),
                ));
            }
            let path = Path::new(path);
            if !path.is_absolute() || path.file_name().is_none() {
                return Err(bad(
                    "--to",
                    "a SQLite target is sqlite:// and an absolute file path, e.g. sqlite:///var/lib/otpd/otpd.db"
                        .to_owned(),
                ));
            }
            return Ok(TargetSpec {
                kind: Kind::Sqlite(path.to_owned()),
            });
        }
        if !(to.starts_with("postgresql://") || to.starts_with("postgres://")) {
            return Err(bad(
                "--to",
                "must be postgresql://USER@HOST/DATABASE or sqlite:///ABSOLUTE/PATH".to_owned(),
            ));
        }
        let url = DatabaseUrl::parse(to).map_err(|e| bad("--to", e.to_string()))?;
        let password = password_file
            .map(|path| {
                keyfile::read_password(path).map_err(|e| bad("--password-file", e.to_string()))
            })
            .transpose()?;
        Ok(TargetSpec {
            kind: Kind::Postgresql {
                url: Box::new(url),
                password,
            },
        })
    }

    /// The target as it may be shown: a PostgreSQL URL without its
    /// password, or the SQLite URL.
    pub fn shown(&self) -> String {
        match &self.kind {
            Kind::Sqlite(path) => format!("{SQLITE_SCHEME}{}", path.display()),
            Kind::Postgresql { url, .. } => url.redacted(),
        }
    }
}

/// Copies the store in `source` to `target`.
pub(crate) fn copy_to(source: &dyn Backend, target: &TargetSpec) -> Result<CopyReport> {
    let shown = target.shown();
    match &target.kind {
        Kind::Postgresql { url, password } => {
            let db = Postgres::connect(postgres::Options {
                url: (**url).clone(),
                password: password.clone(),
                pool_size: 1,
                timeout: CONNECT_TIMEOUT,
            })
            .map_err(at_target(&shown))?;
            copy_between(source, &db, &shown)
        }
        Kind::Sqlite(path) => {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => StoreError::Unsafe {
                        path: path.clone(),
                        reason: "exists; a copy goes into a new file only".to_owned(),
                    },
                    _ => io_error(path, e),
                })?;
            let copied = Sqlite::open(path)
                .map_err(at_target(&shown))
                .and_then(|db| copy_between(source, &db, &shown));
            if copied.is_err() {
                remove_sqlite_files(path);
            }
            copied
        }
    }
}

/// Names the target `shown` in an error of its side.
fn at_target(shown: &str) -> impl Fn(StoreError) -> StoreError + '_ {
    move |source| StoreError::Target {
        target: shown.to_owned(),
        source: Box::new(source),
    }
}

/// Removes the SQLite file this copy created at `path`, with its journal
/// files, after a failed copy.
fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = fs::remove_file(PathBuf::from(name));
    }
}

/// Copies `source` into `target` (shown as `shown`) and checks the copy.
fn copy_between(source: &dyn Backend, target: &dyn Backend, shown: &str) -> Result<CopyReport> {
    let on_target = at_target(shown);
    let mut writer = target.copy_writer().map_err(&on_target)?;
    let found = writer.tally().map_err(&on_target)?;
    if found.holds_data() {
        return Err(StoreError::TargetNotEmpty {
            target: shown.to_owned(),
            enrolments: found.enrolments(),
            audit_rows: found.audit_rows,
            meta_rows: found.meta_rows,
        });
    }
    let mut reader = source.copy_reader()?;
    let tally = reader.tally()?;
    let mut digest = Sha256::new();
    let meta = reader.meta()?;
    feed_meta(&mut digest, &meta);
    writer.write_meta(&meta).map_err(&on_target)?;
    in_chunks(
        |after| reader.enrolments(after, CHUNK),
        |rows| {
            rows.iter().for_each(|r| r.feed(&mut digest));
            writer.write_enrolments(rows).map_err(&on_target)
        },
    )?;
    in_chunks(
        |after| reader.audit(after, CHUNK),
        |rows| {
            rows.iter().for_each(|r| r.feed(&mut digest));
            writer.write_audit(rows).map_err(&on_target)
        },
    )?;
    recovery_in_chunks(
        |after| reader.recovery_codes(after, CHUNK),
        |rows| {
            rows.iter().for_each(|r| r.feed(&mut digest));
            writer.write_recovery_codes(rows).map_err(&on_target)
        },
    )?;
    let source_side = CopySide {
        backend: reader.backend(),
        schema_version: reader.schema_version()?,
        tally,
        digest: hex(digest),
    };
    drop(reader);
    let copy_side = read_side(writer.as_mut()).map_err(&on_target)?;
    check(&source_side, &copy_side)?;
    writer.commit().map_err(&on_target)?;
    Ok(CopyReport {
        target: shown.to_owned(),
        source: source_side,
        copy: copy_side,
    })
}

/// The figures of the store `reader` reads, every row through the digest.
fn read_side(reader: &mut dyn CopyWrite) -> Result<CopySide> {
    let tally = reader.tally()?;
    let mut digest = Sha256::new();
    feed_meta(&mut digest, &reader.meta()?);
    in_chunks(
        |after| reader.enrolments(after, CHUNK),
        |rows| {
            rows.iter().for_each(|r| r.feed(&mut digest));
            Ok(())
        },
    )?;
    in_chunks(
        |after| reader.audit(after, CHUNK),
        |rows| {
            rows.iter().for_each(|r| r.feed(&mut digest));
            Ok(())
        },
    )?;
    recovery_in_chunks(
        |after| reader.recovery_codes(after, CHUNK),
        |rows| {
            rows.iter().for_each(|r| r.feed(&mut digest));
            Ok(())
        },
    )?;
    Ok(CopySide {
        backend: reader.backend(),
        schema_version: reader.schema_version()?,
        tally,
        digest: hex(digest),
    })
}

/// The differences between the source's figures and the copy's, as an error.
fn check(source: &CopySide, copy: &CopySide) -> Result<()> {
    let theirs: BTreeMap<String, i128> = copy.tally.figures().into_iter().collect();
    let ours: BTreeMap<String, i128> = source.tally.figures().into_iter().collect();
    let mut differences: Vec<String> = ours
        .keys()
        .chain(theirs.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (
                ours.get(name).copied().unwrap_or(0),
                theirs.get(name).copied().unwrap_or(0),
            );
            (a != b).then(|| format!("{name}: source {a}, copy {b}"))
        })
        .collect();
    if source.digest != copy.digest {
        differences.push("the digest of the rows differs".to_owned());
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(StoreError::CopyMismatch(differences.join("; ")))
    }
}

/// Reads a table in ID order, `CHUNK` rows at a time, handing each chunk
/// to `each`.
fn in_chunks<T: Keyed>(
    mut read: impl FnMut(i64) -> Result<Vec<T>>,
    mut each: impl FnMut(&[T]) -> Result<()>,
) -> Result<()> {
    let mut after = i64::MIN;
    loop {
        let rows = read(after)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.id();
        each(&rows)?;
        if rows.len() < CHUNK {
            return Ok(());
        }
    }
}

/// Reads the recovery codes in the order of enrolment and hash, `CHUNK`
/// rows at a time, handing each chunk to `each`.
fn recovery_in_chunks(
    mut read: impl FnMut(Option<&RawRecoveryCode>) -> Result<Vec<RawRecoveryCode>>,
    mut each: impl FnMut(&[RawRecoveryCode]) -> Result<()>,
) -> Result<()> {
    let mut after: Option<RawRecoveryCode> = None;
    loop {
        let rows = read(after.as_ref())?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        each(&rows)?;
        if rows.len() < CHUNK {
            return Ok(());
        }
    }
}

fn feed_meta(digest: &mut Sha256, meta: &[(String, Vec<u8>)]) {
    for (key, value) in meta {
        feed_bytes(digest, key.as_bytes());
        feed_bytes(digest, value);
    }
}

fn hex(digest: Sha256) -> String {
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn side(tally: Tally, digest: &str) -> CopySide {
        CopySide {
            backend: "sqlite",
            schema_version: 3,
            tally,
            digest: digest.to_owned(),
        }
    }

    #[test]
    fn a_difference_in_any_figure_or_row_is_a_mismatch() {
        let mut tally = Tally::from_figures(
            [10, 2, 1, 1, 1, 0, 7, 20, 21, 1],
            vec![("active".to_owned(), 5), ("revoked".to_owned(), 2)],
        );
        let source = side(tally.clone(), "ab");
        assert!(check(&source, &side(tally.clone(), "ab")).is_ok());
        tally.failures_sum = 3;
        tally.by_state.insert("issued".to_owned(), 1);
        let err = check(&source, &side(tally, "ab")).expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "the copy does not match its source (enrolments: source 7, copy 8; \
             enrolments issued: source 0, copy 1; sum of failures: source 2, copy 3); \
             it was rolled back and nothing was written"
        );
        let err = check(&source, &side(source.tally.clone(), "cd")).expect_err("mismatch");
        assert!(err.to_string().contains("digest"), "{err}");
    }
}
