//! The store's SQL for SQLite: one connection, behind a mutex, in WAL
//! mode. The facade in the crate root calls into [`Sqlite`]; nothing of
//! SQLite leaves the crate but the source of a [`StoreError`].
//!
//! A transaction that may write takes the write lock when it begins (see
//! [`write_transaction`]), so a writer waits for another process's commit
//! instead of failing with "database is locked".

use std::fs;
use std::ops::ControlFlow;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use otpcore::enrol::State;
use otpcore::notice::{Notice, What};
use otpcore::rules::UserId;
use otpcore::totp::{Algorithm, TokenParams};
use otpcore::verify::{self, Counters, Policy, Refusal, ReplayMove};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::backend::{
    advanced, assignable, audit_rows, last_wrong_columns, plan_verification, reauth_after_accept,
    refuse_existing, spent_by_same_secret, to_i64, to_u64, Backend, Contact, Insert, Plan,
    SpentRow, TokenRow,
};
use crate::copy::{
    column_list, CopyRead, CopyWrite, RawAudit, RawEnrolment, RawRecoveryCode, Tally, AUDIT_ROW,
    ENROLMENT_ROW, RECOVERY_TALLY_SQL, STATES_SQL, TALLY_SQL,
};
use crate::error::{Result, StoreError};
use crate::keyfile::io_error;
use crate::recovery::{audit_line, RecoveryAttempt, RecoveryRow};
use crate::seal::Keys;
use crate::{
    audit_text, ActivationFailure, AuditEntry, AuditResult, Enrolment, HardwareToken,
    ImportedToken, NewEnrolment, Resync, TokenKind, VerifyOutcome, VerifyRequest,
};

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
    r#"
ALTER TABLE enrolments ADD COLUMN kind TEXT NOT NULL DEFAULT 'totp';
ALTER TABLE enrolments ADD COLUMN serial TEXT;
CREATE UNIQUE INDEX enrolments_serial ON enrolments(serial);
"#,
    r#"
CREATE TABLE recovery_codes (
    enrolment_id INTEGER NOT NULL REFERENCES enrolments(id) ON DELETE CASCADE,
    hash         BLOB NOT NULL,
    PRIMARY KEY (enrolment_id, hash)
);
CREATE TRIGGER recovery_codes_leave_with_token AFTER UPDATE OF state ON enrolments
WHEN NEW.state <> 'active'
BEGIN
    DELETE FROM recovery_codes WHERE enrolment_id = NEW.id;
END;
"#,
    r#"
ALTER TABLE enrolments ADD COLUMN reauth_fp BLOB;
ALTER TABLE enrolments ADD COLUMN reauth_client TEXT;
ALTER TABLE enrolments ADD COLUMN reauth_at INTEGER;
CREATE TABLE radius_challenges (
    digest     BLOB PRIMARY KEY,
    user       TEXT NOT NULL,
    client     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX radius_challenges_expiry ON radius_challenges(expires_at);
"#,
    r#"
CREATE INDEX audit_time ON audit(time);
"#,
];

const ENROLMENT_COLUMNS: &str =
    "id, user, email, service_id, user_id, state, algorithm, digits, period, \
     language, created_at, expires_at, activated_at, confirmed_at, activation_failures, last_step, \
     kind, serial";

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
        kind: TokenKind::parse(&row.get::<_, String>(16)?).ok_or_else(|| bad_column(16, "kind"))?,
        serial: row.get(17)?,
    })
}

/// The SQLite database of a store.
pub(crate) struct Sqlite {
    conn: Mutex<Connection>,
}

impl Sqlite {
    /// Opens (creating on first run) the database at `path`, 0600, and
    /// brings its schema up to date.
    pub(crate) fn open(path: &Path) -> Result<Sqlite> {
        let mut conn = Connection::open(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error(path, e))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Sqlite {
            conn: Mutex::new(conn),
        })
    }

    /// The connection, for one statement or transaction. A panic while
    /// another thread held it leaves no half-done change behind (every
    /// change is one statement or transaction, rolled back when dropped
    /// unfinished), so a poisoned lock is taken over.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn query_one(&self, condition: &str, value: &dyn rusqlite::ToSql) -> Result<Option<Enrolment>> {
        let sql = format!(
            "SELECT {ENROLMENT_COLUMNS} FROM enrolments WHERE {condition} ORDER BY id DESC LIMIT 1"
        );
        Ok(self
            .conn()
            .query_row(&sql, [value], enrolment_from_row)
            .optional()?)
    }
}

impl Backend for Sqlite {
    /// The sealed key check value, once the key file is known.
    fn key_check(&self) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Records the sealed key check value, unless another process did first.
    fn set_key_check(&self, sealed: &[u8]) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('key_check', ?1)",
            params![sealed],
        )?;
        Ok(())
    }

    /// Records a new `issued` enrolment; its ID.
    fn issue(
        &self,
        keys: &Keys,
        new: &NewEnrolment<'_>,
        password_hash: &str,
        secret: &[u8],
        now: u64,
    ) -> Result<i64> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        refuse_existing(&current_states(&tx, new.user)?, new.user, new.replace)?;
        tx.execute(
            "UPDATE enrolments SET state = 'replaced' WHERE user = ?1 AND state IN ('issued', 'activated')",
            params![new.user],
        )?;
        let id = insert_enrolment(&tx, keys, &Insert::issued(new, password_hash, secret, now))?;
        tx.commit()?;
        Ok(id)
    }

    fn import_tokens(
        &self,
        keys: &Keys,
        tokens: &[ImportedToken<'_>],
        service_id: &str,
        replace: bool,
        now: u64,
    ) -> Result<Vec<Notice>> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let mut replaced = Vec::new();
        for token in tokens {
            refuse_existing(&current_states(&tx, token.user)?, token.user, replace)?;
            let spent = spent_by_same_secret(keys, &spent_rows(&tx, token.user)?, token);
            replaced.extend(replace_active(&tx, token.user, now)?);
            tx.execute(
                "UPDATE enrolments SET state = 'replaced' WHERE user = ?1 AND state IN ('issued', 'activated', 'active')",
                params![token.user],
            )?;
            insert_enrolment(&tx, keys, &Insert::imported(token, service_id, spent, now))?;
        }
        tx.commit()?;
        Ok(replaced)
    }

    fn import_hardware(
        &self,
        keys: &Keys,
        tokens: &[HardwareToken<'_>],
        service_id: &str,
        now: u64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        for token in tokens {
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM enrolments WHERE serial = ?1)",
                params![token.serial],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::SerialTaken(token.serial.to_owned()));
            }
            insert_enrolment(&tx, keys, &Insert::unassigned(token, service_id, now))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn assign(
        &self,
        serial: &str,
        user: &str,
        replace: bool,
        now: u64,
    ) -> Result<(i64, Vec<Notice>)> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let token: Option<(i64, String, String)> = tx
            .query_row(
                "SELECT id, state, user FROM enrolments WHERE serial = ?1",
                params![serial],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let id = assignable(serial, token)?;
        refuse_existing(&current_states(&tx, user)?, user, replace)?;
        let replaced = replace_active(&tx, user, now)?;
        tx.execute(
            "UPDATE enrolments SET state = 'replaced' WHERE user = ?1 AND state IN ('issued', 'activated', 'active')",
            params![user],
        )?;
        tx.execute(
            "UPDATE enrolments SET user = ?2, state = 'active', confirmed_at = ?3 WHERE id = ?1 AND state = 'unassigned'",
            params![id, user, to_i64(now)],
        )?;
        tx.commit()?;
        Ok((id, replaced))
    }

    fn unassigned(&self) -> Result<Vec<Enrolment>> {
        let sql = format!(
            "SELECT {ENROLMENT_COLUMNS} FROM enrolments WHERE state = 'unassigned' ORDER BY serial"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], enrolment_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn set_power_safe(&self, power_safe: bool) -> Result<()> {
        let mode = if power_safe { "FULL" } else { "NORMAL" };
        self.conn().pragma_update(None, "synchronous", mode)?;
        Ok(())
    }

    fn withdraw(&self, id: i64) -> Result<bool> {
        Ok(self.conn().execute(
            "DELETE FROM enrolments WHERE id = ?1 AND state = 'issued'",
            params![id],
        )? == 1)
    }

    fn by_id(&self, id: i64) -> Result<Option<Enrolment>> {
        self.query_one("id = ?1", &id)
    }

    fn by_ids(&self, service_id: &str, user_id: &UserId) -> Result<Option<Enrolment>> {
        let sql = format!(
            "SELECT {ENROLMENT_COLUMNS} FROM enrolments WHERE service_id = ?1 AND user_id = ?2"
        );
        Ok(self
            .conn()
            .query_row(
                &sql,
                params![service_id, user_id.as_str()],
                enrolment_from_row,
            )
            .optional()?)
    }

    fn pending(&self, user: &str) -> Result<Option<Enrolment>> {
        self.query_one("user = ?1 AND state IN ('issued', 'activated')", &user)
    }

    fn active(&self, user: &str) -> Result<Option<Enrolment>> {
        self.query_one("user = ?1 AND state = 'active'", &user)
    }

    fn latest(&self, user: &str) -> Result<Option<Enrolment>> {
        self.query_one("user = ?1 AND state <> 'unassigned'", &user)
    }

    fn list(&self) -> Result<Vec<Enrolment>> {
        let sql = format!(
            "SELECT {ENROLMENT_COLUMNS} FROM enrolments e WHERE state <> 'unassigned' \
             AND (id = (SELECT MAX(id) FROM enrolments WHERE user = e.user) OR state = 'active') ORDER BY user, id"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], enrolment_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Takes a try; the stored password hash to check against.
    fn reserve_activation_attempt(&self, id: i64, limit: u32, now: u64) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "UPDATE enrolments SET activation_failures = activation_failures + 1 \
                 WHERE id = ?1 AND state = 'issued' AND expires_at > ?3 AND activation_failures < ?2 \
                 RETURNING password_hash",
                params![id, limit, to_i64(now)],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn activation_failed(&self, id: i64, limit: u32) -> Result<Option<ActivationFailure>> {
        let row = self
            .conn()
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

    /// Activates; the sealed secret and the user ID it is bound to.
    fn activate(&self, id: i64, now: u64) -> Result<Option<(Vec<u8>, String)>> {
        Ok(self
            .conn()
            .query_row(
                "UPDATE enrolments SET state = 'activated', activated_at = ?2, \
                 activation_failures = MAX(activation_failures - 1, 0) \
                 WHERE id = ?1 AND state = 'issued' AND expires_at > ?2 RETURNING secret, user_id",
                params![id, to_i64(now)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The sealed secret of the enrolment `id`.
    fn sealed_secret(&self, id: i64) -> Result<Vec<u8>> {
        Ok(self.conn().query_row(
            "SELECT secret FROM enrolments WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )?)
    }

    /// Makes an `activated` enrolment active with the confirmed `period`
    /// and first used `step`; the user's previous active token, if any, is
    /// replaced in the same transaction. `None` if it was not `activated`.
    fn mark_confirmed(
        &self,
        id: i64,
        period: u64,
        step: u64,
        now: u64,
    ) -> Result<Option<Vec<Notice>>> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let user: Option<String> = tx
            .query_row(
                "SELECT user FROM enrolments WHERE id = ?1 AND state = 'activated'",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(user) = user else {
            return Ok(None);
        };
        let replaced = replace_active(&tx, &user, now)?;
        let changed = tx.execute(
            "UPDATE enrolments SET state = 'active', period = ?2, last_step = ?3, confirmed_at = ?4 \
             WHERE id = ?1 AND state = 'activated'",
            params![id, to_i64(period), to_i64(step), to_i64(now)],
        )?;
        tx.commit()?;
        Ok((changed == 1).then_some(replaced))
    }

    fn verify_batch(
        &self,
        keys: &Keys,
        requests: &[VerifyRequest<'_>],
        now: u64,
        policy: &Policy,
    ) -> Result<(Vec<VerifyOutcome>, Vec<Notice>)> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut notices = Vec::new();
        {
            let mut token = tx.prepare_cached(TOKEN_SELECT)?;
            let mut advance = tx.prepare_cached(ADVANCE)?;
            for request in requests {
                let (outcome, notice) =
                    verify_one(&tx, &mut token, &mut advance, keys, request, now, policy)?;
                notices.extend(notice);
                outcomes.push(outcome);
            }
        }
        insert_audit_rows(&tx, requests, &outcomes, now)?;
        tx.commit()?;
        Ok((outcomes, notices))
    }

    fn open_challenge(
        &self,
        digest: &[u8; 32],
        user: &str,
        client: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        tx.prepare_cached("DELETE FROM radius_challenges WHERE expires_at <= ?1")?
            .execute(params![to_i64(now)])?;
        tx.prepare_cached(
            "INSERT INTO radius_challenges (digest, user, client, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![&digest[..], user, client, to_i64(expires_at)])?;
        tx.commit()?;
        Ok(())
    }

    fn take_challenge(
        &self,
        digest: &[u8; 32],
        user: &str,
        client: &str,
        now: u64,
    ) -> Result<bool> {
        let taken: Option<(String, String, i64)> = self
            .conn()
            .prepare_cached(
                "DELETE FROM radius_challenges WHERE digest = ?1 RETURNING user, client, expires_at",
            )?
            .query_row(params![&digest[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(taken
            .is_some_and(|(u, c, expires_at)| u == user && c == client && now < to_u64(expires_at)))
    }

    fn unlock(&self, user: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE enrolments SET failures = 0, locked_until = NULL, last_wrong = NULL, last_wrong_at = NULL \
             WHERE user = ?1 AND state = 'active'",
            params![user],
        )? == 1)
    }

    /// Records a learnt `drift` and the second code's `step` on the active
    /// enrolment `id`, if the replay state allows it (`now_step` is the
    /// current step, `window` how far ahead of it a used step may lie).
    fn resync(&self, id: i64, drift: i64, step: u64, now_step: u64, window: u64) -> Result<Resync> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let last: Option<Option<i64>> = tx
            .query_row(
                "SELECT last_step FROM enrolments WHERE id = ?1 AND state = 'active'",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(last) = last else {
            return Ok(Resync::NoToken);
        };
        let outcome = match verify::replay_move(last.map(to_u64), step, now_step, window) {
            ReplayMove::Forward => Resync::Done { drift, step },
            ReplayMove::Back { from } => Resync::MovedBack { drift, from, step },
            ReplayMove::Spent => return Ok(Resync::Spent),
        };
        tx.execute(
            "UPDATE enrolments SET drift = ?2, last_step = ?3, failures = 0, locked_until = NULL, \
             last_wrong = NULL, last_wrong_at = NULL WHERE id = ?1 AND state = 'active'",
            params![id, drift, to_i64(step)],
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    fn counters(&self, user: &str) -> Result<Option<Counters>> {
        Ok(self
            .conn()
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

    fn revoke(&self, user: &str) -> Result<usize> {
        Ok(self.conn().execute(
            "UPDATE enrolments SET state = 'revoked' WHERE user = ?1 AND state IN ('issued', 'activated', 'active')",
            params![user],
        )?)
    }

    /// SQLite's online backup into a new file (0600) at `path`.
    fn backup(&self, path: &Path) -> Result<()> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        self.conn()
            .backup(rusqlite::DatabaseName::Main, path, None)
            .map_err(|source| StoreError::Backup {
                path: path.to_owned(),
                source,
            })
    }

    fn extend(&self, id: i64, expires_at: u64) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE enrolments SET expires_at = ?2 WHERE id = ?1 AND state = 'issued'",
            params![id, to_i64(expires_at)],
        )? == 1)
    }

    fn audit(&self, entry: &AuditEntry) -> Result<()> {
        self.conn().execute(
            "INSERT INTO audit (time, user, channel, peer, result, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                to_i64(entry.time),
                entry.user,
                entry.channel,
                entry.peer,
                entry.result.as_str(),
                entry.reason
            ],
        )?;
        Ok(())
    }

    fn copy_reader(&self) -> Result<Box<dyn CopyRead + '_>> {
        Ok(Box::new(SqliteCopy::begin(self.conn(), "BEGIN")?))
    }

    fn copy_writer(&self) -> Result<Box<dyn CopyWrite + '_>> {
        Ok(Box::new(SqliteCopy::begin(self.conn(), "BEGIN IMMEDIATE")?))
    }

    fn replace_recovery_codes(&self, id: i64, hashes: &[Vec<u8>]) -> Result<bool> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let active: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM enrolments WHERE id = ?1 AND state = 'active')",
            params![id],
            |r| r.get(0),
        )?;
        if !active {
            return Ok(false);
        }
        tx.execute(
            "DELETE FROM recovery_codes WHERE enrolment_id = ?1",
            params![id],
        )?;
        for hash in hashes {
            tx.prepare_cached("INSERT INTO recovery_codes (enrolment_id, hash) VALUES (?1, ?2)")?
                .execute(params![id, hash])?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn recovery_codes_left(&self, user: &str) -> Result<Option<u64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT (SELECT COUNT(*) FROM recovery_codes WHERE enrolment_id = e.id) \
                 FROM enrolments e WHERE user = ?1 AND state = 'active'",
                params![user],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(to_u64))
    }

    fn verify_recovery(
        &self,
        keys: &Keys,
        request: &VerifyRequest<'_>,
        digits: &str,
        now: u64,
        policy: &Policy,
    ) -> Result<(VerifyOutcome, Option<Notice>)> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let row = tx
            .prepare_cached(
                "SELECT id, period, failures, locked_until, last_wrong, last_wrong_at, \
                 email, language, service_id FROM enrolments WHERE user = ?1 AND state = 'active'",
            )?
            .query_row(params![request.user], |r| {
                Ok(RecoveryRow {
                    id: r.get(0)?,
                    period: r.get(1)?,
                    failures: r.get(2)?,
                    locked_until: r.get(3)?,
                    last_wrong: r.get(4)?,
                    last_wrong_at: r.get(5)?,
                    contact: Contact {
                        email: r.get(6)?,
                        language: r.get(7)?,
                        service_id: r.get(8)?,
                    },
                })
            })
            .optional()?;
        let (outcome, left, notice) = match row {
            None => (VerifyOutcome::Reject(Refusal::NoToken), 0, None),
            Some(row) => {
                let attempt = RecoveryAttempt::new(keys, row, digits)?;
                match attempt.refused_unseen(now, policy) {
                    Some(refusal) => (VerifyOutcome::Reject(refusal), 0, None),
                    None => {
                        let spent = tx
                            .prepare_cached(
                                "DELETE FROM recovery_codes WHERE enrolment_id = ?1 AND hash = ?2",
                            )?
                            .execute(params![attempt.id, attempt.hash])?
                            == 1;
                        let (outcome, counters) = attempt.settle(now, policy, spent);
                        let (last_wrong, last_wrong_at) = last_wrong_columns(&counters);
                        tx.prepare_cached(
                            "UPDATE enrolments SET failures = ?2, locked_until = ?3, last_wrong = ?4, last_wrong_at = ?5 WHERE id = ?1",
                        )?
                        .execute(params![
                            attempt.id,
                            counters.failures,
                            counters.locked_until.map(to_i64),
                            last_wrong,
                            last_wrong_at,
                        ])?;
                        let left: i64 = tx.query_row(
                            "SELECT COUNT(*) FROM recovery_codes WHERE enrolment_id = ?1",
                            params![attempt.id],
                            |r| r.get(0),
                        )?;
                        let left = to_u64(left);
                        let notice = attempt.notice(request, &outcome, &counters, left, now);
                        (outcome, left, notice)
                    }
                }
            }
        };
        let (result, reason) = audit_line(&outcome, left);
        tx.prepare_cached(
            "INSERT INTO audit (time, user, channel, peer, result, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            to_i64(now),
            audit_text(request.user),
            request.channel.as_str(),
            audit_text(request.peer),
            result.as_str(),
            reason
        ])?;
        tx.commit()?;
        Ok((outcome, notice))
    }

    fn audit_each(
        &self,
        user: Option<&str>,
        since: u64,
        each: &mut dyn FnMut(AuditEntry) -> ControlFlow<()>,
    ) -> Result<()> {
        // One statement stepped row by row, in one read snapshot (WAL:
        // writers go on meanwhile).
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT time, user, channel, peer, result, reason FROM audit \
             WHERE (?1 IS NULL OR user = ?1) AND time >= ?2 ORDER BY id",
        )?;
        let mut rows = stmt.query(params![user, to_i64(since)])?;
        while let Some(r) = rows.next()? {
            let result: String = r.get(4)?;
            let entry = AuditEntry {
                time: to_u64(r.get(0)?),
                user: r.get(1)?,
                channel: r.get(2)?,
                peer: r.get(3)?,
                result: AuditResult::parse(&result).ok_or_else(|| bad_column(4, "result"))?,
                reason: r.get(5)?,
            };
            if each(entry).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn prune_audit(&self, before: u64, limit: u64) -> Result<u64> {
        let deleted = self.conn().execute(
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < ?1 LIMIT ?2)",
            params![to_i64(before), to_i64(limit)],
        )?;
        Ok(deleted as u64)
    }

    fn token_states(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM enrolments GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, to_u64(r.get(1)?))))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// A transaction of a copy on the store's connection: a read snapshot
/// (`BEGIN`: it starts with the first read and stays, whoever commits
/// meanwhile, in WAL mode) or the write lock (`BEGIN IMMEDIATE`). Rolled
/// back when dropped uncommitted.
struct SqliteCopy<'a> {
    conn: MutexGuard<'a, Connection>,
    open: bool,
}

impl<'a> SqliteCopy<'a> {
    fn begin(conn: MutexGuard<'a, Connection>, begin: &str) -> Result<SqliteCopy<'a>> {
        conn.execute_batch(begin)?;
        Ok(SqliteCopy { conn, open: true })
    }
}

impl Drop for SqliteCopy<'_> {
    fn drop(&mut self) {
        if self.open {
            // Fails only when SQLite already rolled back by itself.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl CopyRead for SqliteCopy<'_> {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn schema_version(&mut self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))?)
    }

    fn tally(&mut self) -> Result<Tally> {
        let figures = self.conn.query_row(TALLY_SQL, [], |r| {
            let mut figures = [0i64; 10];
            for (i, figure) in figures.iter_mut().enumerate() {
                *figure = r.get(i)?;
            }
            Ok(figures)
        })?;
        let mut stmt = self.conn.prepare(STATES_SQL)?;
        let states = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let recovery_codes: i64 = self.conn.query_row(RECOVERY_TALLY_SQL, [], |r| r.get(0))?;
        Ok(Tally {
            recovery_codes: to_u64(recovery_codes),
            ..Tally::from_figures(figures, states)
        })
    }

    fn meta(&mut self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM meta ORDER BY key")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn enrolments(&mut self, after: i64, limit: usize) -> Result<Vec<RawEnrolment>> {
        let sql = format!(
            "SELECT {} FROM enrolments WHERE id > ?1 ORDER BY id LIMIT ?2",
            column_list(&ENROLMENT_ROW, "user")
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![after, to_i64(limit as u64)], |r| {
            Ok(RawEnrolment {
                id: r.get(0)?,
                user: r.get(1)?,
                email: r.get(2)?,
                service_id: r.get(3)?,
                user_id: r.get(4)?,
                password_hash: r.get(5)?,
                secret: r.get(6)?,
                algorithm: r.get(7)?,
                digits: r.get(8)?,
                period: r.get(9)?,
                language: r.get(10)?,
                state: r.get(11)?,
                created_at: r.get(12)?,
                expires_at: r.get(13)?,
                activated_at: r.get(14)?,
                confirmed_at: r.get(15)?,
                activation_failures: r.get(16)?,
                last_step: r.get(17)?,
                failures: r.get(18)?,
                locked_until: r.get(19)?,
                last_wrong: r.get(20)?,
                last_wrong_at: r.get(21)?,
                drift: r.get(22)?,
                kind: r.get(23)?,
                serial: r.get(24)?,
                reauth_fp: r.get(25)?,
                reauth_client: r.get(26)?,
                reauth_at: r.get(27)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn audit(&mut self, after: i64, limit: usize) -> Result<Vec<RawAudit>> {
        let sql = format!(
            "SELECT {} FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2",
            column_list(&AUDIT_ROW, "user")
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![after, to_i64(limit as u64)], |r| {
            Ok(RawAudit {
                id: r.get(0)?,
                time: r.get(1)?,
                user: r.get(2)?,
                channel: r.get(3)?,
                peer: r.get(4)?,
                result: r.get(5)?,
                reason: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn recovery_codes(
        &mut self,
        after: Option<&RawRecoveryCode>,
        limit: usize,
    ) -> Result<Vec<RawRecoveryCode>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT enrolment_id, hash FROM recovery_codes \
             WHERE ?1 IS NULL OR enrolment_id > ?1 OR (enrolment_id = ?1 AND hash > ?2) \
             ORDER BY enrolment_id, hash LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                after.map(|a| a.enrolment_id),
                after.map(|a| a.hash.as_slice()),
                to_i64(limit as u64)
            ],
            |r| {
                Ok(RawRecoveryCode {
                    enrolment_id: r.get(0)?,
                    hash: r.get(1)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// `?1, ?2, …, ?n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CopyWrite for SqliteCopy<'_> {
    fn write_meta(&mut self, rows: &[(String, Vec<u8>)]) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2)")?;
        for (key, value) in rows {
            stmt.execute(params![key, value])?;
        }
        Ok(())
    }

    fn write_enrolments(&mut self, rows: &[RawEnrolment]) -> Result<()> {
        let sql = format!(
            "INSERT INTO enrolments ({}) VALUES ({})",
            column_list(&ENROLMENT_ROW, "user"),
            placeholders(ENROLMENT_ROW.len())
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        for e in rows {
            stmt.execute(params![
                e.id,
                e.user,
                e.email,
                e.service_id,
                e.user_id,
                e.password_hash,
                e.secret,
                e.algorithm,
                e.digits,
                e.period,
                e.language,
                e.state,
                e.created_at,
                e.expires_at,
                e.activated_at,
                e.confirmed_at,
                e.activation_failures,
                e.last_step,
                e.failures,
                e.locked_until,
                e.last_wrong,
                e.last_wrong_at,
                e.drift,
                e.kind,
                e.serial,
                e.reauth_fp,
                e.reauth_client,
                e.reauth_at,
            ])?;
        }
        Ok(())
    }

    fn write_audit(&mut self, rows: &[RawAudit]) -> Result<()> {
        let sql = format!(
            "INSERT INTO audit ({}) VALUES ({})",
            column_list(&AUDIT_ROW, "user"),
            placeholders(AUDIT_ROW.len())
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        for a in rows {
            stmt.execute(params![
                a.id, a.time, a.user, a.channel, a.peer, a.result, a.reason
            ])?;
        }
        Ok(())
    }

    fn write_recovery_codes(&mut self, rows: &[RawRecoveryCode]) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT INTO recovery_codes (enrolment_id, hash) VALUES (?1, ?2)")?;
        for code in rows {
            stmt.execute(params![code.enrolment_id, code.hash])?;
        }
        Ok(())
    }

    /// New rows take the next ID after the largest (`INTEGER PRIMARY
    /// KEY`), so the IDs continue by themselves.
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

/// Begins a transaction that may write: it takes the write lock at once
/// (`BEGIN IMMEDIATE`), waiting up to the busy timeout while another
/// process writes. A deferred transaction that reads first cannot wait: its
/// upgrade to a writer fails at once with "database is locked" when another
/// process commits in between.
fn write_transaction(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// The user's enrolments that have used steps.
fn spent_rows(tx: &rusqlite::Transaction<'_>, user: &str) -> Result<Vec<SpentRow>> {
    let mut stmt = tx.prepare(
        "SELECT user_id, secret, period, last_step FROM enrolments WHERE user = ?1 AND last_step IS NOT NULL",
    )?;
    let rows = stmt.query_map(params![user], |r| {
        Ok(SpentRow {
            user_id: r.get(0)?,
            sealed: r.get(1)?,
            period: r.get(2)?,
            last_step: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The states of the user's pending and active enrolments.
fn current_states(tx: &rusqlite::Transaction<'_>, user: &str) -> Result<Vec<String>> {
    let mut stmt = tx.prepare(
        "SELECT state FROM enrolments WHERE user = ?1 AND state IN ('issued', 'activated', 'active')",
    )?;
    let states = stmt
        .query_map(params![user], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(states)
}

/// Inserts an enrolment under a fresh user ID, its secret sealed to it.
fn insert_enrolment(tx: &rusqlite::Transaction<'_>, keys: &Keys, row: &Insert<'_>) -> Result<i64> {
    let user_id = loop {
        let candidate = crate::fresh_user_id();
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM enrolments WHERE user_id = ?1)",
            params![candidate.as_str()],
            |r| r.get(0),
        )?;
        if !taken {
            break candidate;
        }
    };
    let sealed = keys.seal(row.secret, user_id.as_str().as_bytes())?;
    tx.prepare_cached(
        "INSERT INTO enrolments (user, email, service_id, user_id, password_hash, secret, algorithm, digits, period, \
         language, state, created_at, expires_at, confirmed_at, last_step, kind, serial, drift) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
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
        row.confirmed_at(),
        row.last_step.map(to_i64),
        row.kind.as_str(),
        row.serial,
        row.drift,
    ])?;
    Ok(tx.last_insert_rowid())
}

/// A user's active token, as verification reads it.
const TOKEN_SELECT: &str =
    "SELECT id, user_id, secret, algorithm, digits, period, last_step, failures, locked_until, \
     last_wrong, last_wrong_at, drift, kind, reauth_fp, reauth_client, reauth_at, \
     email, language, service_id FROM enrolments WHERE user = ?1 AND state = 'active'";

/// An accepted code's step, if no later step was accepted first.
const ADVANCE: &str =
    "UPDATE enrolments SET last_step = ?2, failures = 0, locked_until = NULL, last_wrong = NULL, \
     last_wrong_at = NULL WHERE id = ?1 AND state = 'active' AND (last_step IS NULL OR last_step < ?2)";

/// Verifies one code inside the caller's transaction, with the batch's
/// statements for reading the token ([`TOKEN_SELECT`]) and for advancing
/// its step ([`ADVANCE`]).
fn verify_one(
    tx: &rusqlite::Transaction<'_>,
    token: &mut rusqlite::Statement<'_>,
    advance: &mut rusqlite::Statement<'_>,
    keys: &Keys,
    request: &VerifyRequest<'_>,
    now: u64,
    policy: &Policy,
) -> Result<(VerifyOutcome, Option<Notice>)> {
    let row = token
        .query_row(params![request.user], |r| {
            Ok(TokenRow {
                id: r.get(0)?,
                user_id: r.get(1)?,
                sealed: r.get(2)?,
                algorithm: r.get(3)?,
                digits: r.get(4)?,
                period: r.get(5)?,
                last_step: r.get(6)?,
                failures: r.get(7)?,
                locked_until: r.get(8)?,
                last_wrong: r.get(9)?,
                last_wrong_at: r.get(10)?,
                drift: r.get(11)?,
                kind: r.get(12)?,
                reauth: match (r.get(13)?, r.get(14)?, r.get(15)?) {
                    (Some(fp), Some(client), Some(at)) => Some((fp, client, at)),
                    _ => None,
                },
                contact: Contact {
                    email: r.get(16)?,
                    language: r.get(17)?,
                    service_id: r.get(18)?,
                },
            })
        })
        .optional()?;
    let had_reauth = row.as_ref().is_some_and(|r| r.reauth.is_some());
    match plan_verification(keys, row.as_ref(), request, now, policy)? {
        Plan::Answer(outcome) => Ok((outcome, None)),
        Plan::Advance {
            id,
            step,
            fingerprint,
        } => {
            // The step, and the renegotiation window's columns when they
            // change, in one conditional UPDATE.
            let won = match reauth_after_accept(fingerprint, request, now) {
                None if !had_reauth => advance.execute(params![id, to_i64(step)])?,
                reauth => {
                    let (fp, client, at) = match reauth {
                        Some((fp, client, at)) => (Some(fp), Some(client), Some(at)),
                        None => (None, None, None),
                    };
                    tx.prepare_cached(
                        "UPDATE enrolments SET last_step = ?2, failures = 0, locked_until = NULL, last_wrong = NULL, \
                         last_wrong_at = NULL, reauth_fp = ?3, reauth_client = ?4, reauth_at = ?5 \
                         WHERE id = ?1 AND state = 'active' AND (last_step IS NULL OR last_step < ?2)",
                    )?
                    .execute(params![id, to_i64(step), fp, client, at])?
                }
            };
            Ok((advanced(won == 1), None))
        }
        Plan::Fail {
            id,
            refusal,
            counters,
            notice,
        } => {
            let (last_wrong, last_wrong_at) = last_wrong_columns(&counters);
            tx.prepare_cached(
                "UPDATE enrolments SET failures = ?2, locked_until = ?3, last_wrong = ?4, last_wrong_at = ?5 WHERE id = ?1",
            )?
            .execute(params![
                id,
                counters.failures,
                counters.locked_until.map(to_i64),
                last_wrong,
                last_wrong_at,
            ])?;
            Ok((VerifyOutcome::Reject(refusal), notice.map(|n| *n)))
        }
    }
}

/// Most audit rows written by one INSERT.
const AUDIT_ROWS: usize = 32;

/// Writes the audit rows of a batch's decisions inside its transaction, in
/// their order, with as few INSERTs as the statements for 32, 16, 8, 4, 2
/// and 1 rows allow (six statements in the connection's cache; after the
/// last full 32, at most five INSERTs for the rest).
fn insert_audit_rows(
    tx: &rusqlite::Transaction<'_>,
    requests: &[VerifyRequest<'_>],
    outcomes: &[VerifyOutcome],
    now: u64,
) -> Result<()> {
    let time = to_i64(now);
    let rows = audit_rows(requests, outcomes);
    let mut left = rows.as_slice();
    while !left.is_empty() {
        let n = AUDIT_ROWS.min(1 << left.len().ilog2());
        let (chunk, rest) = left.split_at(n);
        left = rest;
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(n * 6);
        for row in chunk {
            values.extend([
                &time as &dyn rusqlite::ToSql,
                &row.user,
                &row.channel,
                &row.peer,
                &row.result,
                &row.reason,
            ]);
        }
        tx.prepare_cached(audit_insert(n))?
            .execute(values.as_slice())?;
    }
    Ok(())
}

/// The INSERT of `n` audit rows, `n` a power of two up to [`AUDIT_ROWS`].
fn audit_insert(n: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        (0..=AUDIT_ROWS.ilog2())
            .map(|k| {
                format!(
                    "INSERT INTO audit (time, user, channel, peer, result, reason) VALUES {}",
                    vec!["(?, ?, ?, ?, ?, ?)"; 1 << k].join(", ")
                )
            })
            .collect()
    });
    &sql[n.ilog2() as usize]
}

/// Marks `user`'s active token replaced inside the caller's transaction;
/// the notice for it, if there was one.
fn replace_active(tx: &rusqlite::Transaction<'_>, user: &str, now: u64) -> Result<Vec<Notice>> {
    let mut stmt = tx.prepare_cached(
        "UPDATE enrolments SET state = 'replaced' WHERE user = ?1 AND state = 'active' \
         RETURNING email, language, service_id",
    )?;
    let contacts = stmt.query_map(params![user], |r| {
        Ok(Contact {
            email: r.get(0)?,
            language: r.get(1)?,
            service_id: r.get(2)?,
        })
    })?;
    contacts
        .map(|c| Ok(c?.notice(What::Replaced, user, now)))
        .collect()
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
