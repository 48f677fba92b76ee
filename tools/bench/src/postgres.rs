//! The run's PostgreSQL databases: one for the vault, one for the gateway and one for
//! the baseline, each owned by a role of its own without superuser rights (as in
//! production), created fresh for the run and dropped after it.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, Row};

/// One database and the URL its owner connects with.
#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    pub url: String,
}

/// The run's databases on one server.
#[derive(Debug)]
pub struct Databases {
    admin: PgConnectOptions,
    pub vault: Database,
    pub gateway: Database,
    pub baseline: Database,
    /// What the server is and how it is set, for the report.
    pub server_version: String,
    pub settings: BTreeMap<String, String>,
}

/// The server settings that decide what a commit costs and what the planner knows,
/// reported with every run.
const REPORTED_SETTINGS: &str = "SELECT name, setting || COALESCE(unit, '') AS value FROM pg_settings \
     WHERE name IN ('synchronous_commit', 'fsync', 'wal_sync_method', 'commit_delay', 'shared_buffers', \
     'autovacuum', 'max_connections') ORDER BY name";

impl Databases {
    /// Creates the three databases and their roles on the server `admin_url` names
    /// (as a role that may create databases and roles).
    pub async fn create(admin_url: &str, run_id: &str) -> anyhow::Result<Databases> {
        let admin = PgConnectOptions::from_str(admin_url).context("parse the PostgreSQL URL")?;
        let mut conn = admin.connect().await.context("connect to PostgreSQL")?;
        let server_version: String = conn.fetch_one("SHOW server_version").await?.try_get(0)?;
        let mut settings = BTreeMap::new();
        for row in conn.fetch_all(REPORTED_SETTINGS).await? {
            settings.insert(row.try_get("name")?, row.try_get("value")?);
        }
        let mut create = async |stem: &str| -> anyhow::Result<Database> {
            // The name is made of a random hex id and a fixed stem: nothing to quote.
            let name = format!("qupia_bench_{run_id}_{stem}");
            conn.execute(format!("CREATE ROLE {name} LOGIN").as_str())
                .await
                .with_context(|| format!("create the role {name}"))?;
            conn.execute(format!("CREATE DATABASE {name} OWNER {name}").as_str())
                .await
                .with_context(|| format!("create the database {name}"))?;
            let url = admin.clone().database(&name).username(&name).to_url_lossy().to_string();
            Ok(Database { name, url })
        };
        let vault = create("vault").await?;
        let gateway = create("gateway").await?;
        let baseline = create("baseline").await?;
        conn.close().await?;
        Ok(Databases { admin, vault, gateway, baseline, server_version, settings })
    }

    pub fn names(&self) -> Vec<String> {
        [&self.vault, &self.gateway, &self.baseline].iter().map(|db| db.name.clone()).collect()
    }

    /// `VACUUM ANALYZE` in every database of the run, as the operator's maintenance
    /// would have done after a bulk load: the planner then knows the tables' sizes.
    pub async fn vacuum_analyze(&self) -> anyhow::Result<()> {
        for name in self.names() {
            let mut conn = self.admin.clone().database(&name).connect().await.context("connect to PostgreSQL")?;
            conn.execute("VACUUM ANALYZE").await.with_context(|| format!("vacuum and analyze {name}"))?;
            conn.close().await?;
        }
        Ok(())
    }

    /// Drops the databases (closing any connection still open to them) and the roles.
    pub async fn drop_all(&self) -> anyhow::Result<()> {
        let mut conn = self.admin.connect().await.context("connect to PostgreSQL")?;
        for name in self.names() {
            conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .with_context(|| format!("drop the database {name}"))?;
            conn.execute(format!("DROP ROLE IF EXISTS {name}").as_str())
                .await
                .with_context(|| format!("drop the role {name}"))?;
        }
        conn.close().await?;
        Ok(())
    }
}
