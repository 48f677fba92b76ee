//! Every SQL statement of the marketing service: audiences, campaigns and the outbox.
//!
//! One SQL text serves SQLite (the embedded default) and PostgreSQL (production)
//! through sqlx's `Any` driver; only the migrations differ per backend, and only the
//! delivery worker's claim locks differently (PostgreSQL skips rows another worker
//! holds). Nothing stored here is personal: person tokens, random ids, names a
//! marketer gave, templates, delivery states and fixed error codes.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

use crate::model::{self, Channel, DeliveryState};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Rows per multi-row statement: a few hundred parameters, far below either
/// database's limit.
const CHUNK: usize = 200;

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("failed to migrate the marketing database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The database behind the store, picked by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of_url(url: &str) -> Result<Backend, sqlx::Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(sqlx::Error::Configuration("the marketing database URL must start with sqlite: or postgres:".into()))
        }
    }
}

/// An audience as stored, with its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    pub id: String,
    pub name: String,
    pub member_count: u64,
    pub created_at_ms: i64,
}

/// A campaign as stored; its templates were validated when it was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub audience_id: String,
    pub channel: Channel,
    pub subject_template: String,
    pub body_template: String,
    pub created_at_ms: i64,
}

/// How many of a campaign's messages are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub pending: u64,
    pub sent: u64,
    pub skipped_no_consent: u64,
    pub skipped_erased: u64,
    pub failed: u64,
}

impl Counters {
    pub fn queued(&self) -> u64 {
        self.pending + self.sent + self.skipped_no_consent + self.skipped_erased + self.failed
    }

    fn add(&mut self, state: DeliveryState, count: u64) {
        let slot = match state {
            DeliveryState::Pending => &mut self.pending,
            DeliveryState::Sent => &mut self.sent,
            DeliveryState::SkippedNoConsent => &mut self.skipped_no_consent,
            DeliveryState::SkippedErased => &mut self.skipped_erased,
            DeliveryState::Failed => &mut self.failed,
        };
        *slot += count;
    }
}

/// A message the delivery worker has taken, under its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedMessage {
    pub id: String,
    pub campaign_id: String,
    pub person_token: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub state: DeliveryState,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// A fixed code (`smtp_unavailable`), never a message text.
    pub error_code: Option<&'static str>,
    /// When a message left pending is due again.
    pub next_attempt_at_ms: i64,
}

/// The marketing database. Cheap to clone: a pool handle.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

fn u64_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("a stored {what} is not one this service writes").into())
}

fn audience_of(row: &AnyRow) -> Result<Audience, sqlx::Error> {
    Ok(Audience {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        member_count: u64_of(row.try_get("member_count")?),
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn campaign_of(row: &AnyRow) -> Result<Campaign, sqlx::Error> {
    let channel: String = row.try_get("channel")?;
    Ok(Campaign {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        audience_id: row.try_get("audience_id")?,
        channel: Channel::parse_stored(&channel).ok_or_else(|| corrupt("channel"))?,
        subject_template: row.try_get("subject_template")?,
        body_template: row.try_get("body_template")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

const AUDIENCE_COLUMNS: &str = "a.id, a.name, a.created_at_ms, \
     (SELECT COUNT(*) FROM audience_members m WHERE m.audience_id = a.id) AS member_count";

const CAMPAIGN_COLUMNS: &str = "id, name, audience_id, channel, subject_template, body_template, created_at_ms";

/// `$first, $first+1, …` for `n` parameters.
fn params(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

impl Store {
    /// Connects to `url` (`sqlite:...` or `postgres:...`) and runs the migrations.
    ///
    /// SQLite gets one connection (it serialises writers anyway), WAL, and
    /// `synchronous=FULL`, so a queued campaign survives a crash once acknowledged.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 1 } else { max_connections.max(1) })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
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
        Ok(Store { pool, backend })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Creates an audience with its first members, in one transaction.
    pub async fn create_audience(
        &self,
        id: &str,
        name: &str,
        members: &[String],
        created_by: &str,
        now_ms: i64,
    ) -> Result<Audience, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO audiences (id, name, created_at_ms, created_by) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(name)
            .bind(now_ms)
            .bind(created_by)
            .execute(&mut *tx)
            .await?;
        Self::insert_members(&mut tx, id, members, now_ms).await?;
        let audience = Self::audience_in(&mut tx, id).await?.ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(audience)
    }

    /// Inserts members not yet in the audience, numbered after the last one; returns
    /// how many were new.
    async fn insert_members(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        audience_id: &str,
        tokens: &[String],
        now_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let last: i64 =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM audience_members WHERE audience_id = $1")
                .bind(audience_id)
                .fetch_one(&mut **tx)
                .await?
                .try_get("last")?;
        let mut added = 0;
        let mut seq = last;
        for chunk in tokens.chunks(CHUNK) {
            let rows: Vec<String> = (0..chunk.len()).map(|i| format!("({})", params(4 * i + 1, 4))).collect();
            let sql = format!(
                "INSERT INTO audience_members (audience_id, person_token, seq, added_at_ms) VALUES {} \
                 ON CONFLICT (audience_id, person_token) DO NOTHING",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for token in chunk {
                seq += 1;
                query = query.bind(audience_id).bind(token.as_str()).bind(seq).bind(now_ms);
            }
            added += query.execute(&mut **tx).await?.rows_affected();
        }
        Ok(added)
    }

    async fn audience_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: &str) -> Result<Option<Audience>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {AUDIENCE_COLUMNS} FROM audiences a WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        row.as_ref().map(audience_of).transpose()
    }

    /// Adds members; `None` when there is no such audience.
    pub async fn add_members(
        &self,
        audience_id: &str,
        tokens: &[String],
        now_ms: i64,
    ) -> Result<Option<(u64, Audience)>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if Self::audience_in(&mut tx, audience_id).await?.is_none() {
            return Ok(None);
        }
        let added = Self::insert_members(&mut tx, audience_id, tokens, now_ms).await?;
        let audience = Self::audience_in(&mut tx, audience_id).await?.ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(Some((added, audience)))
    }

    /// Removes members; `None` when there is no such audience. Messages already
    /// queued for them stay queued: the campaign was sent while they were members.
    pub async fn remove_members(
        &self,
        audience_id: &str,
        tokens: &[String],
    ) -> Result<Option<(u64, Audience)>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if Self::audience_in(&mut tx, audience_id).await?.is_none() {
            return Ok(None);
        }
        let mut removed = 0;
        for chunk in tokens.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM audience_members WHERE audience_id = $1 AND person_token IN ({})",
                params(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(audience_id);
            for token in chunk {
                query = query.bind(token.as_str());
            }
            removed += query.execute(&mut *tx).await?.rows_affected();
        }
        let audience = Self::audience_in(&mut tx, audience_id).await?.ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(Some((removed, audience)))
    }

    pub async fn audience(&self, id: &str) -> Result<Option<Audience>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {AUDIENCE_COLUMNS} FROM audiences a WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(audience_of).transpose()
    }

    /// Every audience, oldest first.
    pub async fn audiences(&self) -> Result<Vec<Audience>, sqlx::Error> {
        let rows = sqlx::query(&format!("SELECT {AUDIENCE_COLUMNS} FROM audiences a ORDER BY a.created_at_ms, a.id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audience_of).collect()
    }

    /// An audience's members, in the order they were added.
    pub async fn members(&self, audience_id: &str) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT person_token FROM audience_members WHERE audience_id = $1 ORDER BY seq")
            .bind(audience_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| row.try_get("person_token")).collect()
    }

    /// Stores a campaign; `None` when its audience does not exist.
    pub async fn create_campaign(&self, campaign: &Campaign, created_by: &str) -> Result<Option<()>, sqlx::Error> {
        // The audience check and the insert in one statement, so an audience cannot
        // vanish between them.
        let inserted = sqlx::query(
            "INSERT INTO campaigns (id, name, audience_id, channel, subject_template, body_template, \
             created_at_ms, created_by) \
             SELECT $1, $2, a.id, $4, $5, $6, $7, $8 FROM audiences a WHERE a.id = $3",
        )
        .bind(&campaign.id)
        .bind(&campaign.name)
        .bind(&campaign.audience_id)
        .bind(campaign.channel.as_str())
        .bind(&campaign.subject_template)
        .bind(&campaign.body_template)
        .bind(campaign.created_at_ms)
        .bind(created_by)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok((inserted == 1).then_some(()))
    }

    pub async fn campaign(&self, id: &str) -> Result<Option<Campaign>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(campaign_of).transpose()
    }

    /// Campaigns by id (those that exist), for the delivery worker.
    pub async fn campaigns_by_id(&self, ids: &[&str]) -> Result<HashMap<String, Campaign>, sqlx::Error> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id IN ({})", params(1, chunk.len()));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&self.pool).await? {
                let campaign = campaign_of(&row)?;
                found.insert(campaign.id.clone(), campaign);
            }
        }
        Ok(found)
    }

    /// Every campaign, oldest first.
    pub async fn campaigns(&self) -> Result<Vec<Campaign>, sqlx::Error> {
        let rows = sqlx::query(&format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY created_at_ms, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(campaign_of).collect()
    }

    /// The counters of one campaign.
    pub async fn counters(&self, campaign_id: &str) -> Result<Counters, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT campaign_id, state, COUNT(*) AS n FROM outbox WHERE campaign_id = $1 GROUP BY campaign_id, state",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Self::counters_of(&rows)?.remove(campaign_id).unwrap_or_default())
    }

    /// The counters of every campaign that has messages.
    pub async fn all_counters(&self) -> Result<HashMap<String, Counters>, sqlx::Error> {
        let rows = sqlx::query("SELECT campaign_id, state, COUNT(*) AS n FROM outbox GROUP BY campaign_id, state")
            .fetch_all(&self.pool)
            .await?;
        Self::counters_of(&rows)
    }

    fn counters_of(rows: &[AnyRow]) -> Result<HashMap<String, Counters>, sqlx::Error> {
        let mut counters: HashMap<String, Counters> = HashMap::new();
        for row in rows {
            let state: String = row.try_get("state")?;
            let state = DeliveryState::parse_stored(&state).ok_or_else(|| corrupt("delivery state"))?;
            counters.entry(row.try_get("campaign_id")?).or_default().add(state, u64_of(row.try_get("n")?));
        }
        Ok(counters)
    }

    /// Queues the campaign for every member of its audience it has not reached: a
    /// new message for each member without one, and those skipped for want of
    /// consent or failed are pending again. Returns how many were queued; `None` when
    /// there is no such campaign.
    pub async fn queue_campaign(&self, campaign_id: &str, now_ms: i64) -> Result<Option<u64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT audience_id FROM campaigns WHERE id = $1")
            .bind(campaign_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let audience_id: String = row.try_get("audience_id")?;
        let requeued = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at_ms = $3, last_error_code = NULL, \
             lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = $3 \
             WHERE campaign_id = $1 AND state IN ('skipped_no_consent', 'failed') \
             AND person_token IN (SELECT person_token FROM audience_members WHERE audience_id = $2)",
        )
        .bind(campaign_id)
        .bind(&audience_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let rows = sqlx::query(
            "SELECT m.person_token FROM audience_members m WHERE m.audience_id = $2 \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.campaign_id = $1 AND o.person_token = m.person_token) \
             ORDER BY m.seq",
        )
        .bind(campaign_id)
        .bind(&audience_id)
        .fetch_all(&mut *tx)
        .await?;
        let tokens: Vec<String> = rows.iter().map(|row| row.try_get("person_token")).collect::<Result<_, _>>()?;
        let mut inserted = 0;
        for chunk in tokens.chunks(CHUNK) {
            let rows: Vec<String> =
                (0..chunk.len()).map(|i| format!("({}, 'pending', 0)", params(6 * i + 1, 6))).collect();
            let sql = format!(
                "INSERT INTO outbox (id, campaign_id, person_token, next_attempt_at_ms, queued_at_ms, updated_at_ms, \
                 state, attempts) \
                 VALUES {} ON CONFLICT (campaign_id, person_token) DO NOTHING",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for token in chunk {
                query = query
                    .bind(model::new_id("msg_"))
                    .bind(campaign_id)
                    .bind(token.as_str())
                    .bind(now_ms)
                    .bind(now_ms)
                    .bind(now_ms);
            }
            inserted += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(Some(requeued + inserted))
    }

    /// Takes up to `limit` due messages for `owner` until `lease_until_ms`: pending,
    /// due, and not held by a live lease of another worker.
    pub async fn claim_due(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>, sqlx::Error> {
        // PostgreSQL: concurrent workers skip each other's rows instead of queueing on
        // them. SQLite has one writer at a time, so its claim is already exclusive.
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET lease_owner = $1, lease_until_ms = $2 WHERE id IN (\
             SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at_ms <= $3 \
             AND (lease_until_ms IS NULL OR lease_until_ms <= $3) \
             ORDER BY next_attempt_at_ms, id LIMIT $4{lock}) \
             RETURNING id, campaign_id, person_token, attempts"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedMessage {
                    id: row.try_get("id")?,
                    campaign_id: row.try_get("campaign_id")?,
                    person_token: row.try_get("person_token")?,
                    attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    /// Records what became of a message and releases it. Returns false when the
    /// lease was lost (another worker took the message after it expired).
    pub async fn complete(&self, id: &str, owner: &str, outcome: Outcome, now_ms: i64) -> Result<bool, sqlx::Error> {
        let updated = sqlx::query(
            "UPDATE outbox SET state = $1, attempts = $2, last_error_code = $3, next_attempt_at_ms = $4, \
             lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = $5 WHERE id = $6 AND lease_owner = $7",
        )
        .bind(outcome.state.as_str())
        .bind(i64::from(outcome.attempts))
        .bind(outcome.error_code)
        .bind(outcome.next_attempt_at_ms)
        .bind(now_ms)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Whether any message of the campaign is pending.
    pub async fn has_pending(&self, campaign_id: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE campaign_id = $1 AND state = 'pending'")
            .bind(campaign_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }
}
