//! The erasure ledger: every erasure, kept in a database of its own so that restoring
//! the vault database from an older backup cannot roll it back (design invariant 7).
//!
//! The vault appends an entry, and waits until it is durable, before it commits an
//! erasure; if the ledger cannot be written, the erasure fails. At every start, before
//! it serves, the vault erases again every ledgered person still present in its
//! database (see `Vault::replay_erasures`). The ledger holds person ids (the random
//! bytes inside tokens), times and identities, never a personal value.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

use crate::store::{Backend, StoreError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/erasure_ledger/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/erasure_ledger/postgres");

/// How long an append may wait for a lock before it fails; an erasure is better
/// refused (and retried) than left hanging on a stuck ledger.
const WRITE_WAIT: Duration = Duration::from_secs(3);

/// The file name of the default ledger, beside the keyring.
pub const DEFAULT_FILE_NAME: &str = "erasure-ledger.db";

/// One ledgered erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub seq: i64,
    pub person_id: [u8; 16],
    pub requested_by: String,
}

/// A connection pool to the erasure ledger's database.
#[derive(Debug, Clone)]
pub struct ErasureLedger {
    pool: AnyPool,
}

impl ErasureLedger {
    /// Connects to the ledger at `url` (`sqlite:` or `postgres:`) and runs its migrations.
    pub async fn connect(url: &str) -> Result<ErasureLedger, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or(StoreError::UnknownBackend)?;
        let options = AnyConnectOptions::from_str(url)?;
        let wait_ms = WRITE_WAIT.as_millis();
        let pool = AnyPoolOptions::new()
            // Erasures are rare: a couple of connections is plenty.
            .max_connections(if backend == Backend::Sqlite { 1 } else { 2 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    match backend {
                        // FULL: an entry is on disk before the erasure it guards commits.
                        Backend::Sqlite => {
                            conn.execute(
                                format!(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                     PRAGMA busy_timeout = {wait_ms};"
                                )
                                .as_str(),
                            )
                            .await?;
                        }
                        // A locked ledger fails the append instead of holding the erasure.
                        Backend::Postgres => {
                            conn.execute(
                                format!("SET lock_timeout = {wait_ms}; SET synchronous_commit = on;").as_str(),
                            )
                            .await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(ErasureLedger { pool })
    }

    /// Appends one erasure and returns once it is committed.
    pub async fn append(&self, person_id: &[u8; 16], requested_by: &str, at_ms: i64) -> Result<i64, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO erasure_ledger (person_id, erased_at, requested_by) VALUES ($1, $2, $3) RETURNING seq",
        )
        .bind(person_id.to_vec())
        .bind(at_ms)
        .bind(requested_by)
        .fetch_one(&self.pool)
        .await?;
        row.try_get("seq")
    }

    /// Up to `limit` entries after `after_seq`, oldest first.
    pub async fn entries_after(&self, after_seq: i64, limit: i64) -> Result<Vec<LedgerEntry>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT seq, person_id, requested_by FROM erasure_ledger WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|row| {
                let id: Vec<u8> = row.try_get("person_id")?;
                Ok(LedgerEntry {
                    seq: row.try_get("seq")?,
                    person_id: id
                        .try_into()
                        .map_err(|_| sqlx::Error::Decode("a ledgered person id is not 16 bytes".into()))?,
                    requested_by: row.try_get("requested_by")?,
                })
            })
            .collect()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
