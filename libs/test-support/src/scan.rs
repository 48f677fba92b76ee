//! Scans for personal data where it must never be.

use sqlx::{Connection, Row};

use crate::{Backend, TestDb};

/// A needle found where it must not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub place: String,
    pub needle: String,
}

/// Finds each needle in `haystack`, as UTF-8 bytes and as lower-case hex of them
/// (the form PostgreSQL prints `bytea` in).
pub fn scan_bytes(place: &str, haystack: &[u8], needles: &[&str]) -> Vec<Leak> {
    let mut leaks = Vec::new();
    for needle in needles {
        let raw = needle.as_bytes();
        let hexed = hex::encode(raw);
        let found = contains(haystack, raw) || contains(haystack, hexed.as_bytes());
        if found {
            leaks.push(Leak { place: place.to_owned(), needle: (*needle).to_owned() });
        }
    }
    leaks
}

pub fn scan_text(place: &str, haystack: &str, needles: &[&str]) -> Vec<Leak> {
    scan_bytes(place, haystack.as_bytes(), needles)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Scans a test database for the needles: for SQLite, every byte of the database
/// file and its WAL; for PostgreSQL, every column of every row of every table in
/// the public schema, read as bytes.
pub async fn scan_database(db: &TestDb, needles: &[&str]) -> Vec<Leak> {
    match db.backend {
        Backend::Sqlite => {
            let path = db.sqlite_path.as_ref().expect("a SQLite test database has a path");
            let mut leaks = Vec::new();
            for suffix in ["", "-wal", "-journal"] {
                let file = format!("{}{suffix}", path.display());
                if let Ok(bytes) = std::fs::read(&file) {
                    leaks.extend(scan_bytes(&file, &bytes, needles));
                }
            }
            leaks
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect to the test database");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&mut conn)
            .await
            .expect("list tables");
            let mut leaks = Vec::new();
            for table in tables {
                let columns: Vec<String> = sqlx::query_scalar(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = 'public' AND table_name = $1",
                )
                .bind(&table)
                .fetch_all(&mut conn)
                .await
                .expect("list columns");
                for column in columns {
                    // Every column as its binary send form, whatever its type.
                    let query = format!("SELECT convert_to(\"{column}\"::text, 'UTF8') AS v FROM \"{table}\"");
                    let rows = sqlx::query(&query).fetch_all(&mut conn).await.expect("read a column");
                    for row in rows {
                        let value: Option<Vec<u8>> = row.try_get("v").expect("bytes");
                        if let Some(value) = value {
                            leaks.extend(scan_bytes(&format!("{table}.{column}"), &value, needles));
                        }
                    }
                }
            }
            leaks
        }
    }
}
