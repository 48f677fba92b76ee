//! The accounts database: every SQL statement the service runs lives here.
//!
//! One set of statements serves SQLite (the embedded default) and PostgreSQL
//! (production) through sqlx's `Any` driver; only the migrations differ per backend.
//! The tables hold account ids, tokens and non-personal state: never a name, an
//! e-mail address, a phone number, a document byte, or a hash of one.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

use crate::model::{AccountId, Attestation};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

const ACCOUNT_COLUMNS: &str = "account_id, person_token, attestation, policy_version, identity_document_token, \
                               authorisation_document_token, registered_at_ms, updated_at_ms";

/// The database behind a store, picked by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database URL must start with sqlite: or postgres:")]
    UnknownBackend,
    #[error("failed to migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// A registered account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub person_token: String,
    pub attestation: Attestation,
    /// The privacy policy version accepted at registration.
    pub policy_version: i64,
    pub identity_document_token: String,
    /// Present exactly when the registration was authorised.
    pub authorisation_document_token: Option<String>,
    pub registered_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Account {
    /// The account's document tokens: the identity document first.
    pub fn document_tokens(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.identity_document_token.as_str()).chain(self.authorisation_document_token.as_deref())
    }
}

/// What is known of an account id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountLookup {
    Found(Account),
    /// Deleted at this time; nothing else about it is kept.
    Deleted {
        deleted_at_ms: i64,
    },
    Unknown,
}

/// What inserting an account did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The person already had an account (a retried registration finished first):
    /// that one, unchanged.
    Existing(Account),
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

fn account_of(row: &AnyRow) -> Result<Account, sqlx::Error> {
    let decode = |what: &str| sqlx::Error::Decode(format!("a stored {what} is malformed").into());
    let id: String = row.try_get("account_id")?;
    let attestation: String = row.try_get("attestation")?;
    Ok(Account {
        id: AccountId::parse(&id, "account_id").map_err(|_| decode("account id"))?,
        person_token: row.try_get("person_token")?,
        attestation: Attestation::from_stored(&attestation).ok_or_else(|| decode("attestation"))?,
        policy_version: row.try_get("policy_version")?,
        identity_document_token: row.try_get("identity_document_token")?,
        authorisation_document_token: row.try_get("authorisation_document_token")?,
        registered_at_ms: row.try_get("registered_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

impl Store {
    /// Connects to `url`, runs the migrations, and returns a pool.
    ///
    /// SQLite gets a single connection: SQLite serialises writers anyway, and one
    /// connection cannot meet another's lock half-way through a transaction.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or(StoreError::UnknownBackend)?;
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 1 } else { max_connections })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // FULL: an account is on disk before the caller hears of it.
                        // secure_delete: a deleted account's tokens are overwritten, not
                        // left in free pages.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; \
                             PRAGMA busy_timeout = 5000;",
                        )
                        .await?;
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
        Ok(Store { pool })
    }

    /// The connection pool, for the pool gauges on `/metrics`.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Records a new account. A person has at most one account: if theirs was stored
    /// meanwhile (a retried registration racing the first), that one is returned.
    pub async fn insert_account(&self, account: &Account) -> Result<Inserted, sqlx::Error> {
        let inserted = sqlx::query(
            "INSERT INTO accounts (account_id, person_token, attestation, policy_version, identity_document_token, \
             authorisation_document_token, registered_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (person_token) DO NOTHING",
        )
        .bind(account.id.to_string())
        .bind(&account.person_token)
        .bind(account.attestation.as_str())
        .bind(account.policy_version)
        .bind(&account.identity_document_token)
        .bind(account.authorisation_document_token.as_deref())
        .bind(account.registered_at_ms)
        .bind(account.updated_at_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Inserted::New);
        }
        match self.account_of_person(&account.person_token).await? {
            Some(existing) => Ok(Inserted::Existing(existing)),
            None => Err(sqlx::Error::Protocol("an account insert neither stored a row nor met one".into())),
        }
    }

    /// The account with this id, or whether it was deleted.
    pub async fn account(&self, id: &AccountId) -> Result<AccountLookup, sqlx::Error> {
        let id = id.to_string();
        let row = sqlx::query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1"))
            .bind(&id)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return Ok(AccountLookup::Found(account_of(&row)?));
        }
        let deleted: Option<i64> =
            sqlx::query_scalar("SELECT deleted_at_ms FROM deleted_accounts WHERE account_id = $1")
                .bind(&id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(deleted.map_or(AccountLookup::Unknown, |deleted_at_ms| AccountLookup::Deleted { deleted_at_ms }))
    }

    /// The account of a person token, if the person has one.
    pub async fn account_of_person(&self, person_token: &str) -> Result<Option<Account>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE person_token = $1"))
            .bind(person_token)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_of).transpose()
    }

    /// The accounts of these person tokens, in the tokens' order; tokens without an
    /// account are left out.
    pub async fn accounts_of_people(&self, person_tokens: &[String]) -> Result<Vec<Account>, sqlx::Error> {
        let mut accounts = Vec::with_capacity(person_tokens.len());
        for token in person_tokens {
            if let Some(account) = self.account_of_person(token).await? {
                accounts.push(account);
            }
        }
        Ok(accounts)
    }

    /// Notes that the profile was rectified now.
    pub async fn touch(&self, id: &AccountId, now_ms: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE accounts SET updated_at_ms = $1 WHERE account_id = $2")
            .bind(now_ms)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes the account and leaves its tombstone (the id and the time only), in one
    /// transaction. Returns the time of deletion.
    pub async fn delete_account(&self, id: &AccountId, now_ms: i64) -> Result<i64, sqlx::Error> {
        let id = id.to_string();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM accounts WHERE account_id = $1").bind(&id).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO deleted_accounts (account_id, deleted_at_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let deleted_at_ms: i64 = sqlx::query_scalar("SELECT deleted_at_ms FROM deleted_accounts WHERE account_id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted_at_ms)
    }
}
