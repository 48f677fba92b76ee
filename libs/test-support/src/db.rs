//! A fresh database for each test.

use std::path::PathBuf;

use sqlx::{Connection, Executor};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests create their databases on, if configured.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("QUPIA_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty())
}

/// A database that exists for one test; a PostgreSQL one is dropped afterwards.
///
/// A PostgreSQL test database belongs to a role of its own without superuser rights,
/// as in production: `url` connects as that role (what the service uses), and
/// `admin_url` as the superuser (what a test uses to play operator or attacker).
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub admin_url: String,
    /// The role the service connects as (PostgreSQL only).
    pub role: Option<String>,
    /// The SQLite file, for byte scans.
    pub sqlite_path: Option<PathBuf>,
    postgres: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn create(backend: Backend, stem: &str) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let path = dir.path().join(format!("{stem}.db"));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                TestDb {
                    backend,
                    admin_url: url.clone(),
                    url,
                    role: None,
                    sqlite_path: Some(path),
                    postgres: None,
                    _dir: dir,
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url().expect("QUPIA_TEST_POSTGRES_URL is set");
                let name = format!("qupia_{stem}_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to the PostgreSQL named by QUPIA_TEST_POSTGRES_URL");
                conn.execute(format!("CREATE ROLE {name} LOGIN").as_str()).await.expect("create a test role");
                conn.execute(format!("CREATE DATABASE {name} OWNER {name}").as_str())
                    .await
                    .expect("create a test database");
                let admin_url = database_url(&admin, &name);
                let url = with_user(&admin_url, &name);
                TestDb {
                    backend,
                    url,
                    admin_url,
                    role: Some(name.clone()),
                    sqlite_path: None,
                    postgres: Some((admin, name)),
                    _dir: dir,
                }
            }
        }
    }
}

/// `admin` with its database name replaced by `name`.
fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// `url` with its user replaced by `user`.
fn with_user(url: &str, user: &str) -> String {
    let Some(after_scheme) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[after_scheme..];
    let host_start = rest.find('@').map_or(0, |at| at + 1);
    format!("{}{user}@{}", &url[..after_scheme], &rest[host_start..])
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.ok()?;
                conn.execute(format!("DROP ROLE IF EXISTS {name}").as_str()).await.ok()
            })
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            super::database_url("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            super::database_url("postgres://postgres@127.0.0.1:5432?sslmode=disable", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1?sslmode=disable"
        );
        assert_eq!(super::with_user("postgres://postgres@127.0.0.1:5432/t1", "r1"), "postgres://r1@127.0.0.1:5432/t1");
        assert_eq!(super::with_user("postgres://127.0.0.1/t1", "r1"), "postgres://r1@127.0.0.1/t1");
    }
}
