//! Every SQL statement of the consent ledger and the policy versions.
//!
//! One SQL text serves SQLite (the embedded default) and PostgreSQL (production) through
//! sqlx's `Any` driver; only the migrations differ per backend, and only publishing a
//! policy version locks differently. Every event is ordered by `seq`, which the database
//! assigns and only ever increases, never by the clock: two events in the same
//! millisecond, or a clock stepping back, must not reorder a grant and its withdrawal.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use qupia_domain::Purpose;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

use super::model::{self, ConsentAction, ConsentCheck, ConsentEvent, ConsentState, NewConsentEvent, PolicyVersion};
use super::{ConsentError, now_ms};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Tokens per `check_many` query: 502 parameters, far below either database's limit.
const CHECK_MANY_CHUNK: usize = 500;

/// The columns of `consent_events` (aliased `e`), in the order [`event_of`] reads them.
const EVENT_COLUMNS: &str = "e.seq, e.id, e.person_token, e.purpose, e.recipient, e.action, \
     e.policy_version, e.channel, e.evidence, e.expires_at_ms, e.recorded_at_ms, e.recorded_by";

/// The newest policy version requiring re-consent for the event's purpose, read in the
/// same statement as the event so that one judgment sees one state of the ledger.
const RECONSENT_VERSION: &str = "(SELECT MAX(r.version) FROM policy_reconsent r \
     WHERE r.purpose = e.purpose) AS reconsent_version";

/// Keeps only the latest event of each (person, purpose, recipient).
const IS_LATEST: &str = "e.seq = (SELECT MAX(l.seq) FROM consent_events l \
     WHERE l.person_token = e.person_token AND l.purpose = e.purpose \
     AND l.recipient = e.recipient)";

/// Appends an event only if its policy version allows it, in one statement, so that no
/// publication can slip between the check and the write. `$6` = 0 (withdrawals only)
/// means the current version; a grant must name the current version; a withdrawal any
/// published one. No row inserted means the version was refused: see
/// [`ConsentStore::refusal`].
const INSERT_EVENT: &str = "INSERT INTO consent_events (id, person_token, purpose, recipient, \
     action, policy_version, channel, evidence, expires_at_ms, recorded_at_ms, recorded_by) \
     SELECT $1, $2, $3, $4, $5, v.version, $7, $8, $9, $10, $11 FROM policy_versions v \
     WHERE v.version = CASE WHEN $6 = 0 THEN (SELECT MAX(version) FROM policy_versions) ELSE $6 END \
     AND ($5 = 'withdrawn' OR v.version = (SELECT MAX(version) FROM policy_versions)) \
     RETURNING seq, policy_version";

/// The database behind the store, picked by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of_url(url: &str) -> Result<Backend, ConsentError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(sqlx::Error::Configuration("the gateway database URL must start with sqlite: or postgres:".into())
                .into())
        }
    }
}

/// The consent ledger and policy versions in the gateway's database. Cheap to clone: a
/// pool handle. Holds no cache on purpose: every gateway replica must see a withdrawal
/// or a new policy version on its very next check.
#[derive(Debug, Clone)]
pub struct ConsentStore {
    pool: AnyPool,
    backend: Backend,
}

impl ConsentStore {
    /// Connects to `url` (`sqlite:...` or `postgres:...`), runs the gateway's
    /// migrations, and returns the store.
    ///
    /// SQLite gets a single connection (it serialises writers anyway, and one connection
    /// cannot meet another's lock half-way through a transaction), WAL, and
    /// `synchronous=FULL` so that a recorded consent is on disk before the caller hears
    /// of it.
    pub async fn connect(url: &str, max_connections: u32) -> Result<ConsentStore, ConsentError> {
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
        Ok(ConsentStore { pool, backend })
    }

    /// The pool, for the gateway's other tables (disclosure requests) in this database.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Publishes the next policy version (1, 2, 3... without gaps). Consents to the
    /// `reconsent_purposes` given under earlier versions stop counting at once.
    pub async fn publish_policy_version(
        &self,
        text_sha256: &str,
        reconsent_purposes: &[Purpose],
        published_by: &str,
    ) -> Result<PolicyVersion, ConsentError> {
        model::validate_text_sha256(text_sha256)?;
        let reconsent = model::reconsent_set(reconsent_purposes)?;
        model::validate_identity("published_by", published_by)?;
        let published_at_ms = now_ms();

        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Publishers queue here, so each numbers its version after its predecessor's
            // commit. This mode does not conflict with the key-share locks that grants'
            // foreign-key checks take, so recording consents goes on meanwhile.
            sqlx::query("LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
        }
        // On SQLite this write is the transaction's first statement: it takes the
        // database write lock before MAX(version) is read.
        let version: i64 = sqlx::query(
            "INSERT INTO policy_versions (version, text_sha256, published_at_ms, published_by) \
             SELECT COALESCE(MAX(version), 0) + 1, $1, $2, $3 FROM policy_versions \
             RETURNING version",
        )
        .bind(text_sha256)
        .bind(published_at_ms)
        .bind(published_by)
        .fetch_one(&mut *tx)
        .await?
        .try_get("version")?;
        for purpose in &reconsent {
            sqlx::query("INSERT INTO policy_reconsent (version, purpose) VALUES ($1, $2)")
                .bind(version)
                .bind(purpose.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(PolicyVersion {
            version,
            text_sha256: text_sha256.to_owned(),
            reconsent_purposes: reconsent,
            published_at_ms,
            published_by: published_by.to_owned(),
        })
    }

    /// The version in force: the newest published one.
    pub async fn current_policy_version(&self) -> Result<Option<PolicyVersion>, ConsentError> {
        let row = sqlx::query(
            "SELECT version, text_sha256, published_at_ms, published_by FROM policy_versions \
             ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut version = policy_version_of(&row)?;
        let rows = sqlx::query("SELECT version, purpose FROM policy_reconsent WHERE version = $1")
            .bind(version.version)
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            version.reconsent_purposes.push(purpose_of(row.try_get("purpose")?)?);
        }
        version.reconsent_purposes.sort_unstable();
        Ok(Some(version))
    }

    /// Every published version, oldest first.
    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, ConsentError> {
        let rows = sqlx::query(
            "SELECT version, text_sha256, published_at_ms, published_by FROM policy_versions \
             ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut versions = rows.iter().map(policy_version_of).collect::<Result<Vec<_>, _>>()?;
        let reconsent = sqlx::query("SELECT version, purpose FROM policy_reconsent").fetch_all(&self.pool).await?;
        for row in &reconsent {
            let number: i64 = row.try_get("version")?;
            let purpose = purpose_of(row.try_get("purpose")?)?;
            // Versions are gapless from 1, so version n sits at index n - 1; a row of a
            // version published after the first read is left for the next call.
            let slot = usize::try_from(number - 1).ok().and_then(|i| versions.get_mut(i));
            if let Some(version) = slot {
                debug_assert_eq!(version.version, number);
                version.reconsent_purposes.push(purpose);
            }
        }
        for version in &mut versions {
            version.reconsent_purposes.sort_unstable();
        }
        Ok(versions)
    }

    /// Validates and appends one event; returns it with its id, seq and recorded_at.
    /// Bad input changes nothing.
    pub async fn record(&self, event: NewConsentEvent) -> Result<ConsentEvent, ConsentError> {
        let recorded_at_ms = now_ms();
        event.validate(recorded_at_ms)?;
        let id = uuid::Uuid::new_v4().to_string();
        let row = sqlx::query(INSERT_EVENT)
            .bind(id.as_str())
            .bind(event.person_token.as_str())
            .bind(event.purpose.as_str())
            .bind(event.recipient.as_str())
            .bind(event.action.as_str())
            .bind(event.policy_version)
            .bind(event.channel.as_str())
            .bind(event.evidence.as_str())
            .bind(event.expires_at_ms)
            .bind(recorded_at_ms)
            .bind(event.recorded_by.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Err(self.refusal(&event).await);
        };
        Ok(ConsentEvent {
            id,
            seq: row.try_get("seq")?,
            person_token: event.person_token,
            purpose: event.purpose,
            recipient: event.recipient,
            action: event.action,
            policy_version: row.try_get("policy_version")?,
            channel: event.channel,
            evidence: event.evidence,
            expires_at_ms: event.expires_at_ms,
            recorded_at_ms,
            recorded_by: event.recorded_by,
        })
    }

    /// Why [`INSERT_EVENT`] inserted nothing, worded for the caller.
    async fn refusal(&self, event: &NewConsentEvent) -> ConsentError {
        let current = match self.current_version_number().await {
            Ok(current) => current,
            Err(err) => return err,
        };
        let named = event.policy_version;
        let message = match current {
            None => "no policy version has been published yet".to_owned(),
            Some(current) if named > current => {
                format!("policy version {named} has not been published; the current one is {current}")
            }
            Some(current) if event.action == ConsentAction::Granted && named != current => format!(
                "policy version {named} is no longer in force: a grant must name the current \
                 version, {current}"
            ),
            // The versions changed between the insert and this read.
            Some(_) => "the policy version in force changed while recording: retry".to_owned(),
        };
        ConsentError::FailedPrecondition(message)
    }

    async fn current_version_number(&self) -> Result<Option<i64>, ConsentError> {
        let row = sqlx::query("SELECT MAX(version) AS version FROM policy_versions").fetch_one(&self.pool).await?;
        Ok(row.try_get("version")?)
    }

    /// Whether the person's consent for `purpose` (and, for `third_party_transfer`,
    /// `recipient`) counts at `now_ms`. One query, straight from the database.
    pub async fn check(
        &self,
        person_token: &str,
        purpose: Purpose,
        recipient: &str,
        now_ms: i64,
    ) -> Result<ConsentCheck, ConsentError> {
        model::validate_person_token(person_token)?;
        model::validate_subject(purpose, recipient)?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, {RECONSENT_VERSION} FROM consent_events e \
             WHERE e.person_token = $1 AND e.purpose = $2 AND e.recipient = $3 \
             ORDER BY e.seq DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(person_token)
            .bind(purpose.as_str())
            .bind(recipient)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => {
                let latest = event_of(&row)?;
                Ok(model::judge(&latest, row.try_get("reconsent_version")?, now_ms))
            }
            None => Ok(ConsentCheck::none_recorded()),
        }
    }

    /// [`ConsentStore::check`] for many people, one query per 500 distinct tokens; one
    /// entry per distinct token. Any malformed token refuses the whole call before any
    /// query.
    pub async fn check_many(
        &self,
        person_tokens: &[String],
        purpose: Purpose,
        recipient: &str,
        now_ms: i64,
    ) -> Result<HashMap<String, ConsentCheck>, ConsentError> {
        model::validate_subject(purpose, recipient)?;
        let mut seen = HashSet::with_capacity(person_tokens.len());
        let mut distinct = Vec::with_capacity(person_tokens.len());
        for token in person_tokens {
            model::validate_person_token(token)?;
            if seen.insert(token.as_str()) {
                distinct.push(token.as_str());
            }
        }

        let mut checks: HashMap<String, ConsentCheck> =
            distinct.iter().map(|token| ((*token).to_owned(), ConsentCheck::none_recorded())).collect();
        for chunk in distinct.chunks(CHECK_MANY_CHUNK) {
            let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT {EVENT_COLUMNS}, {RECONSENT_VERSION} FROM consent_events e \
                 WHERE e.purpose = $1 AND e.recipient = $2 AND e.person_token IN ({}) \
                 AND {IS_LATEST}",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(purpose.as_str()).bind(recipient);
            for token in chunk {
                query = query.bind(*token);
            }
            for row in query.fetch_all(&self.pool).await? {
                let latest = event_of(&row)?;
                let check = model::judge(&latest, row.try_get("reconsent_version")?, now_ms);
                checks.insert(latest.person_token, check);
            }
        }
        Ok(checks)
    }

    /// Everyone whose consent for `purpose` (and `recipient`) counts at `now_ms`: their
    /// person tokens and consent ids, ordered by token. One query; whether each latest
    /// grant still counts (re-consent, expiry) is judged as [`ConsentStore::check`]
    /// judges it.
    pub async fn active_consents(
        &self,
        purpose: Purpose,
        recipient: &str,
        now_ms: i64,
    ) -> Result<Vec<(String, String)>, ConsentError> {
        model::validate_subject(purpose, recipient)?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, {RECONSENT_VERSION} FROM consent_events e \
             WHERE e.purpose = $1 AND e.recipient = $2 AND e.action = 'granted' AND {IS_LATEST} \
             ORDER BY e.person_token"
        );
        let rows = sqlx::query(&sql).bind(purpose.as_str()).bind(recipient).fetch_all(&self.pool).await?;
        let mut active = Vec::with_capacity(rows.len());
        for row in &rows {
            let latest = event_of(row)?;
            if let ConsentCheck::Active { consent_id } =
                model::judge(&latest, row.try_get("reconsent_version")?, now_ms)
            {
                active.push((latest.person_token, consent_id));
            }
        }
        Ok(active)
    }

    /// Where each (purpose, recipient) the person has any event for stands at `now_ms`,
    /// sorted by purpose, then recipient.
    pub async fn states(&self, person_token: &str, now_ms: i64) -> Result<Vec<ConsentState>, ConsentError> {
        model::validate_person_token(person_token)?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, {RECONSENT_VERSION} FROM consent_events e \
             WHERE e.person_token = $1 AND {IS_LATEST}"
        );
        let rows = sqlx::query(&sql).bind(person_token).fetch_all(&self.pool).await?;
        let mut states = Vec::with_capacity(rows.len());
        for row in &rows {
            let latest = event_of(row)?;
            states.push(ConsentState {
                purpose: latest.purpose,
                recipient: latest.recipient.clone(),
                check: model::judge(&latest, row.try_get("reconsent_version")?, now_ms),
                latest,
            });
        }
        states.sort_by(|a, b| (a.purpose, &a.recipient).cmp(&(b.purpose, &b.recipient)));
        Ok(states)
    }

    /// Every event for the person, oldest first.
    pub async fn history(&self, person_token: &str) -> Result<Vec<ConsentEvent>, ConsentError> {
        model::validate_person_token(person_token)?;
        let sql = format!("SELECT {EVENT_COLUMNS} FROM consent_events e WHERE e.person_token = $1 ORDER BY e.seq");
        let rows = sqlx::query(&sql).bind(person_token).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(event_of).collect::<Result<Vec<_>, _>>()?)
    }
}

fn event_of(row: &AnyRow) -> Result<ConsentEvent, sqlx::Error> {
    let action: String = row.try_get("action")?;
    Ok(ConsentEvent {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        person_token: row.try_get("person_token")?,
        purpose: purpose_of(row.try_get("purpose")?)?,
        recipient: row.try_get("recipient")?,
        action: ConsentAction::from_stored(&action)
            .ok_or_else(|| sqlx::Error::Decode("a stored consent action is unknown".into()))?,
        policy_version: row.try_get("policy_version")?,
        channel: row.try_get("channel")?,
        evidence: row.try_get("evidence")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        recorded_at_ms: row.try_get("recorded_at_ms")?,
        recorded_by: row.try_get("recorded_by")?,
    })
}

/// A version without its re-consent purposes, which live in their own table.
fn policy_version_of(row: &AnyRow) -> Result<PolicyVersion, sqlx::Error> {
    Ok(PolicyVersion {
        version: row.try_get("version")?,
        text_sha256: row.try_get("text_sha256")?,
        reconsent_purposes: Vec::new(),
        published_at_ms: row.try_get("published_at_ms")?,
        published_by: row.try_get("published_by")?,
    })
}

fn purpose_of(name: &str) -> Result<Purpose, sqlx::Error> {
    Purpose::from_str(name).map_err(|_| sqlx::Error::Decode("a stored purpose is unknown".into()))
}
