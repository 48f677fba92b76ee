//! Opening a migrated test database, making entries, and the attacker's moves.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use qupia_audit::{AuditLedger, Backend, Entry, NewEntry, Operation, Outcome};
use qupia_test_support::TestDb;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

/// A migrated database with a ledger over it.
pub struct Fixture {
    pub db: TestDb,
    pub pool: AnyPool,
    pub backend: Backend,
    pub ledger: AuditLedger,
}

pub fn backend_of(backend: qupia_test_support::Backend) -> Backend {
    match backend {
        qupia_test_support::Backend::Sqlite => Backend::Sqlite,
        qupia_test_support::Backend::Postgres => Backend::Postgres,
    }
}

/// A fresh database with the vault's migrations (0002 is the ledger's) and a pool of
/// `connections`, set up the way the vault sets up SQLite.
pub async fn fixture(backend: qupia_test_support::Backend, stem: &str, connections: u32) -> Fixture {
    let db = TestDb::create(backend, stem).await;
    let backend = backend_of(backend);
    let pool = open(&db.url, backend, connections, true).await.expect("open the test database");
    let migrations =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../services/vault/migrations").join(match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        });
    Migrator::new(migrations)
        .await
        .expect("read the vault's migrations")
        .run(&pool)
        .await
        .expect("run the vault's migrations");
    let ledger = AuditLedger::new(pool.clone(), backend);
    Fixture { db, pool, backend, ledger }
}

/// A pool on `url`; `writable` adds the vault's SQLite settings (which need a writable
/// database).
pub async fn open(url: &str, backend: Backend, connections: u32, writable: bool) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    let pragmas = if writable {
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;"
                    } else {
                        "PRAGMA busy_timeout = 5000;"
                    };
                    conn.execute(pragmas).await?;
                }
                Ok(())
            })
        })
        .connect_with(AnyConnectOptions::from_str(url)?)
        .await
}

/// The `i`-th test entry: callers, purposes, persons and outcomes cycle with different
/// periods so that filters pick out predictable seqs (entry `i` is seq `i + 1` when
/// appended in order into an empty ledger).
pub fn entry(i: usize) -> NewEntry {
    NewEntry {
        caller: format!("spiffe://qupia/ns/test/sa/{}", ["gateway", "marketing"][i % 2]),
        operation: [Operation::Reveal, Operation::Lookup][i % 2].into(),
        purpose: ["service_delivery", "advertising", "statistics"][i % 3].into(),
        person: format!("qpp_person{}", i % 4),
        fields: vec!["email".into(), "phone".into()],
        outcome: if i.is_multiple_of(5) { Outcome::Denied } else { Outcome::Allowed },
        reason: format!("test decision {i}"),
        consent_id: format!("consent-{i}"),
        request_id: String::new(),
        decision_id: format!("dec-{i}"),
        trace_id: format!("trace-{i}"),
    }
}

pub fn entries(range: std::ops::Range<usize>) -> Vec<NewEntry> {
    range.map(entry).collect()
}

/// Every entry, in seq order, through the public query.
pub async fn all_entries(ledger: &AuditLedger) -> Vec<Entry> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |e: &Entry| e.seq);
        let page = ledger.query(&Default::default(), after, 1000).await.expect("query");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

pub async fn count(pool: &AnyPool) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM audit_log")
        .fetch_one(pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("count column")
}

/// The attacker's first move: someone who owns the schema removes the append-only
/// triggers (a DDL change the database can log, but can't prevent).
pub async fn drop_append_only_guard(fixture: &Fixture) {
    let sql = match fixture.backend {
        Backend::Sqlite => {
            "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; \
             DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete;"
        }
        Backend::Postgres => {
            "ALTER TABLE audit_log DISABLE TRIGGER USER; \
             ALTER TABLE audit_checkpoints DISABLE TRIGGER USER;"
        }
    };
    fixture.pool.execute(sql).await.expect("drop the triggers");
}

pub async fn exec(pool: &AnyPool, sql: &str) {
    pool.execute(sql).await.expect(sql);
}

/// Overwrites every column but seq of row `seq` with `entry`'s values.
pub async fn overwrite(pool: &AnyPool, seq: i64, entry: &Entry) {
    sqlx::query(
        "UPDATE audit_log SET at_ms = $1, caller = $2, operation = $3, purpose = $4, \
         person = $5, fields = $6, decision = $7, reason = $8, consent_id = $9, \
         request_id = $10, decision_id = $11, trace_id = $12, prev_hash = $13, hash = $14 \
         WHERE seq = $15",
    )
    .bind(entry.at_ms)
    .bind(entry.caller.as_str())
    .bind(entry.operation.as_str())
    .bind(entry.purpose.as_str())
    .bind(entry.person.as_str())
    .bind(entry.fields.join(","))
    .bind(entry.outcome.as_str())
    .bind(entry.reason.as_str())
    .bind(entry.consent_id.as_str())
    .bind(entry.request_id.as_str())
    .bind(entry.decision_id.as_str())
    .bind(entry.trace_id.as_str())
    .bind(hex::decode(&entry.prev_hash).expect("hex"))
    .bind(hex::decode(&entry.hash).expect("hex"))
    .bind(seq)
    .execute(pool)
    .await
    .expect("overwrite a row");
}

/// Rewrites the head row, as an attacker covering their tracks would.
pub async fn set_head(pool: &AnyPool, seq: i64, hash_hex: &str) {
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(hex::decode(hash_hex).expect("hex"))
        .execute(pool)
        .await
        .expect("rewrite the head");
}
