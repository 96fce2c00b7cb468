//! The copy's reader and writer on PostgreSQL: one pooled connection held
//! for the whole copy, its transaction open across many calls, each call
//! within [`STEP_TIMEOUT`]. The reader's transaction is `REPEATABLE READ
//! READ ONLY` (one snapshot); the writer's brings the schema up to date and
//! locks the tables (`EXCLUSIVE`: others may read, nobody else writes, and
//! a second copy waits and then finds data) before anything is checked.
//! Rows go in by `COPY … FROM STDIN (FORMAT binary)`. Dropped uncommitted,
//! the connection is closed rather than returned to the pool, and the
//! server rolls its transaction back.

use std::pin::pin;
use std::time::Duration;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::{migrate_in, to_i64, to_u64, Client, Postgres};
use crate::copy::{
    column_list, CopyRead, CopyWrite, RawAudit, RawEnrolment, RawRecoveryCode, Tally, AUDIT_ROW,
    ENROLMENT_ROW, RECOVERY_TALLY_SQL, STATES_SQL, TALLY_SQL,
};
use crate::error::{Result, StoreError};

/// How long each step of a copy (a chunk of rows, the counts) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The column types of [`ENROLMENT_ROW`].
const ENROLMENT_TYPES: [Type; 28] = [
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BYTEA,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::BYTEA,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::BYTEA,
    Type::TEXT,
    Type::INT8,
];

/// The column types of [`AUDIT_ROW`].
const AUDIT_TYPES: [Type; 7] = [
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

/// A connection held by a copy, inside its transaction.
pub(super) struct PgCopy<'a> {
    runtime: &'a tokio::runtime::Runtime,
    /// `None` once closed or committed.
    client: Option<Client>,
}

impl Postgres {
    /// A reader in one snapshot of the database.
    pub(super) fn copy_session_reader(&self) -> Result<PgCopy<'_>> {
        self.copy_session("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    }

    /// A writer whose transaction holds the schema, up to date, and the
    /// tables against other writers.
    pub(super) fn copy_session_writer(&self) -> Result<PgCopy<'_>> {
        let mut session = self.copy_session("BEGIN")?;
        session.step(async |c| {
            migrate_in(c).await?;
            c.batch_execute("LOCK TABLE meta, enrolments, audit, recovery_codes IN EXCLUSIVE MODE")
                .await?;
            Ok(())
        })?;
        Ok(session)
    }

    /// A connection of the pool with its transaction begun by `begin`.
    fn copy_session(&self, begin: &str) -> Result<PgCopy<'_>> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or(StoreError::Internal("the store is closing"))?;
        let client = runtime.block_on(async {
            tokio::time::timeout(self.timeout, self.pool.get())
                .await
                .map_err(|_| StoreError::Timeout(self.timeout))
        })??;
        let mut session = PgCopy {
            runtime,
            client: Some(client),
        };
        session.step(async |c| Ok(c.batch_execute(begin).await?))?;
        Ok(session)
    }
}

impl PgCopy<'_> {
    /// Runs `work` on the connection within [`STEP_TIMEOUT`]; past it the
    /// connection is closed (what it was doing is unknown).
    fn step<T>(&mut self, work: impl AsyncFnOnce(&Client) -> Result<T>) -> Result<T> {
        let Some(client) = &self.client else {
            return Err(StoreError::Internal("the copy's connection is closed"));
        };
        let outcome = self
            .runtime
            .block_on(async { tokio::time::timeout(STEP_TIMEOUT, work(client)).await });
        match outcome {
            Ok(result) => result,
            Err(_) => {
                self.close();
                Err(StoreError::Timeout(STEP_TIMEOUT))
            }
        }
    }

    /// Closes the connection instead of returning it to the pool: the
    /// server rolls back its open transaction.
    fn close(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Client::take(client));
        }
    }

    /// Up to `limit` rows of `table` (its `columns`) with IDs above
    /// `after`, in ID order, each read by `read`.
    fn rows_after<T>(
        &mut self,
        table: &str,
        columns: &[&str],
        after: i64,
        limit: usize,
        read: fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let sql = format!(
            "SELECT {} FROM {table} WHERE id > $1 ORDER BY id LIMIT $2",
            column_list(columns, "username")
        );
        self.step(async |c| {
            let stmt = c.prepare_cached(&sql).await?;
            c.query(&stmt, &[&after, &to_i64(limit as u64)])
                .await?
                .iter()
                .map(read)
                .collect()
        })
    }

    /// Writes `rows` into `table` (its `columns`, of `types`) by a binary
    /// `COPY`, each row's values in column order given by `values`.
    fn copy_in<R, const N: usize>(
        &mut self,
        table: &str,
        columns: &[&str],
        types: &[Type; N],
        rows: &[R],
        values: fn(&R) -> [&(dyn ToSql + Sync); N],
    ) -> Result<()> {
        let sql = format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            column_list(columns, "username")
        );
        self.step(async |c| {
            let sink = c.copy_in(&sql).await?;
            let mut writer = pin!(BinaryCopyInWriter::new(sink, types));
            for row in rows {
                writer.as_mut().write(&values(row)).await?;
            }
            writer.finish().await?;
            Ok(())
        })
    }
}

impl Drop for PgCopy<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// The values of an enrolment row, in the order of [`ENROLMENT_ROW`].
fn enrolment_values(e: &RawEnrolment) -> [&(dyn ToSql + Sync); 28] {
    [
        &e.id,
        &e.user,
        &e.email,
        &e.service_id,
        &e.user_id,
        &e.password_hash,
        &e.secret,
        &e.algorithm,
        &e.digits,
        &e.period,
        &e.language,
        &e.state,
        &e.created_at,
        &e.expires_at,
        &e.activated_at,
        &e.confirmed_at,
        &e.activation_failures,
        &e.last_step,
        &e.failures,
        &e.locked_until,
        &e.last_wrong,
        &e.last_wrong_at,
        &e.drift,
        &e.kind,
        &e.serial,
        &e.reauth_fp,
        &e.reauth_client,
        &e.reauth_at,
    ]
}

/// The values of an audit row, in the order of [`AUDIT_ROW`].
fn audit_values(a: &RawAudit) -> [&(dyn ToSql + Sync); 7] {
    [
        &a.id, &a.time, &a.user, &a.channel, &a.peer, &a.result, &a.reason,
    ]
}

fn raw_enrolment(r: &Row) -> Result<RawEnrolment> {
    Ok(RawEnrolment {
        id: r.try_get(0)?,
        user: r.try_get(1)?,
        email: r.try_get(2)?,
        service_id: r.try_get(3)?,
        user_id: r.try_get(4)?,
        password_hash: r.try_get(5)?,
        secret: r.try_get(6)?,
        algorithm: r.try_get(7)?,
        digits: r.try_get(8)?,
        period: r.try_get(9)?,
        language: r.try_get(10)?,
        state: r.try_get(11)?,
        created_at: r.try_get(12)?,
        expires_at: r.try_get(13)?,
        activated_at: r.try_get(14)?,
        confirmed_at: r.try_get(15)?,
        activation_failures: r.try_get(16)?,
        last_step: r.try_get(17)?,
        failures: r.try_get(18)?,
        locked_until: r.try_get(19)?,
        last_wrong: r.try_get(20)?,
        last_wrong_at: r.try_get(21)?,
        drift: r.try_get(22)?,
        kind: r.try_get(23)?,
        serial: r.try_get(24)?,
        reauth_fp: r.try_get(25)?,
        reauth_client: r.try_get(26)?,
        reauth_at: r.try_get(27)?,
    })
}

fn raw_audit(r: &Row) -> Result<RawAudit> {
    Ok(RawAudit {
        id: r.try_get(0)?,
        time: r.try_get(1)?,
        user: r.try_get(2)?,
        channel: r.try_get(3)?,
        peer: r.try_get(4)?,
        result: r.try_get(5)?,
        reason: r.try_get(6)?,
    })
}

impl CopyRead for PgCopy<'_> {
    fn backend(&self) -> &'static str {
        "postgresql"
    }

    fn schema_version(&mut self) -> Result<i64> {
        self.step(async |c| {
            Ok(c.query_one("SELECT version FROM schema_version", &[])
                .await?
                .try_get(0)?)
        })
    }

    fn tally(&mut self) -> Result<Tally> {
        self.step(async |c| {
            let row = c.query_one(TALLY_SQL, &[]).await?;
            let mut figures = [0i64; 10];
            for (i, figure) in figures.iter_mut().enumerate() {
                *figure = row.try_get(i)?;
            }
            let states = c
                .query(STATES_SQL, &[])
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_>>()?;
            let recovery_codes: i64 = c.query_one(RECOVERY_TALLY_SQL, &[]).await?.try_get(0)?;
            Ok(Tally {
                recovery_codes: to_u64(recovery_codes),
                ..Tally::from_figures(figures, states)
            })
        })
    }

    fn meta(&mut self) -> Result<Vec<(String, Vec<u8>)>> {
        self.step(async |c| {
            c.query(
                "SELECT key, value FROM meta ORDER BY key COLLATE \"C\"",
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }

    fn enrolments(&mut self, after: i64, limit: usize) -> Result<Vec<RawEnrolment>> {
        self.rows_after("enrolments", &ENROLMENT_ROW, after, limit, raw_enrolment)
    }

    fn audit(&mut self, after: i64, limit: usize) -> Result<Vec<RawAudit>> {
        self.rows_after("audit", &AUDIT_ROW, after, limit, raw_audit)
    }

    fn recovery_codes(
        &mut self,
        after: Option<&RawRecoveryCode>,
        limit: usize,
    ) -> Result<Vec<RawRecoveryCode>> {
        let after_id = after.map(|a| a.enrolment_id);
        let after_hash = after.map(|a| a.hash.clone());
        let limit = to_i64(limit as u64);
        self.step(async |c| {
            c.query(
                "SELECT enrolment_id, hash FROM recovery_codes \
                 WHERE $1::BIGINT IS NULL OR enrolment_id > $1 OR (enrolment_id = $1 AND hash > $2) \
                 ORDER BY enrolment_id, hash LIMIT $3",
                &[&after_id, &after_hash, &limit],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(RawRecoveryCode {
                    enrolment_id: r.try_get(0)?,
                    hash: r.try_get(1)?,
                })
            })
            .collect()
        })
    }
}

impl CopyWrite for PgCopy<'_> {
    fn write_meta(&mut self, rows: &[(String, Vec<u8>)]) -> Result<()> {
        self.step(async |c| {
            for (key, value) in rows {
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2)",
                    &[key, value],
                )
                .await?;
            }
            Ok(())
        })
    }

    fn write_enrolments(&mut self, rows: &[RawEnrolment]) -> Result<()> {
        self.copy_in(
            "enrolments",
            &ENROLMENT_ROW,
            &ENROLMENT_TYPES,
            rows,
            enrolment_values,
        )
    }

    fn write_audit(&mut self, rows: &[RawAudit]) -> Result<()> {
        self.copy_in("audit", &AUDIT_ROW, &AUDIT_TYPES, rows, audit_values)
    }

    fn write_recovery_codes(&mut self, rows: &[RawRecoveryCode]) -> Result<()> {
        let ids: Vec<i64> = rows.iter().map(|r| r.enrolment_id).collect();
        let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
        self.step(async |c| {
            c.execute(
                "INSERT INTO recovery_codes (enrolment_id, hash) \
                 SELECT * FROM unnest($1::BIGINT[], $2::BYTEA[])",
                &[&ids, &hashes],
            )
            .await?;
            Ok(())
        })
    }

    /// Sets the identity sequences to continue after the copied IDs, and
    /// commits; the connection goes back to the pool.
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.step(async |c| {
            c.batch_execute(
                "SELECT setval(pg_get_serial_sequence('enrolments', 'id'), COALESCE(MAX(id), 0) + 1, false) \
                 FROM enrolments; \
                 SELECT setval(pg_get_serial_sequence('audit', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM audit; \
                 COMMIT",
            )
            .await?;
            Ok(())
        })?;
        drop(self.client.take());
        Ok(())
    }
}
