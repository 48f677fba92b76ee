//! The bounded start-up wait for the database and other dependencies (the vault's HSM):
//! in a cluster they may come up after the service, and a restart loop is a worse signal
//! than a clear wait.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::any::AnyConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::Error;

/// The database did not accept connections within the start-up wait.
#[derive(Debug, thiserror::Error)]
#[error(
    "database_url: the database at {target} did not accept connections within {waited:?} ({attempts} attempts); last error: {last}"
)]
pub struct Unreachable {
    /// The URL with its password redacted.
    pub target: String,
    pub waited: Duration,
    pub attempts: u32,
    pub last: String,
}

/// Waits up to `budget` for the database at `url` to accept a connection, retrying
/// with backoff while the failure looks like a database that is not up yet. Any
/// other failure (a malformed URL, bad credentials) returns at once without error:
/// opening the store reports it with its own message. SQLite needs no wait.
pub async fn wait_for_database(url: &str, budget: Duration) -> Result<(), Error> {
    if url.starts_with("sqlite:") {
        return Ok(());
    }
    sqlx::any::install_default_drivers();
    let Ok(options) = AnyConnectOptions::from_str(url) else { return Ok(()) };
    let target = redact_url(url);
    let started = Instant::now();
    let mut backoff = Duration::from_millis(250);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let attempt_timeout =
            budget.saturating_sub(started.elapsed()).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let last = match tokio::time::timeout(attempt_timeout, options.connect()).await {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
                if attempts > 1 {
                    tracing::info!(database = %target, attempts, "the database accepts connections");
                }
                return Ok(());
            }
            Ok(Err(error)) if is_transient(&error) => error.to_string(),
            Ok(Err(_)) => return Ok(()),
            Err(_) => format!("no answer within {attempt_timeout:?}"),
        };
        let waited = started.elapsed();
        if waited + backoff > budget {
            return Err(Error::Unreachable(Unreachable { target, waited, attempts, last }));
        }
        tracing::warn!(
            database = %target,
            attempt = attempts,
            error = %last,
            retry_in = ?backoff,
            "waiting for the database (database_url) to accept connections"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(4));
    }
}

/// One try at something start-up waits for.
#[derive(Debug)]
pub enum Attempt<T, E> {
    Ready(T),
    /// Not there yet (a device not connected, a server starting): worth another try.
    NotYet(E),
    /// A failure waiting will not fix (bad configuration, a refused credential).
    Failed(E),
}

/// Why [`wait_until_ready`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E: fmt::Display + fmt::Debug> {
    /// An attempt failed in a way waiting will not fix; reported at once.
    #[error("{0}")]
    Failed(E),
    /// Still not ready when the start-up wait ran out.
    #[error("{last} (still not ready after {waited:?} and {attempts} attempts)")]
    GaveUp { last: E, waited: Duration, attempts: u32 },
}

/// Calls `attempt` until it is ready, fails for good, or `budget` runs out, with the same
/// backoff as [`wait_for_database`]. `what` names the dependency and its setting in the
/// warning logged before each retry.
pub async fn wait_until_ready<T, E, F, Fut>(what: &str, budget: Duration, mut attempt: F) -> Result<T, WaitError<E>>
where
    E: fmt::Display + fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(250);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match attempt().await {
            Attempt::Ready(ready) => {
                if attempts > 1 {
                    tracing::info!(attempts, "{what} is ready");
                }
                return Ok(ready);
            }
            Attempt::Failed(error) => return Err(WaitError::Failed(error)),
            Attempt::NotYet(error) => error,
        };
        let waited = started.elapsed();
        if waited + backoff > budget {
            return Err(WaitError::GaveUp { last, waited, attempts });
        }
        tracing::warn!(attempt = attempts, error = %last, retry_in = ?backoff, "waiting for {what}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(4));
    }
}

/// A failure a database that is still starting would cause.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        // 57P03 cannot_connect_now (starting up, in recovery), 08xxx connection
        // exceptions, 53300 too_many_connections.
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code == "57P03" || code == "53300" || code.starts_with("08"))
        }
        _ => false,
    }
}

/// `url` with the password in its user info and in any `password` query parameter
/// replaced by `***`, fit for a log line or an error message.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let mut redacted = String::new();
    if let Some(scheme) = scheme {
        redacted.push_str(scheme);
        redacted.push_str("://");
    }
    redacted.push_str(&authority);
    redacted.push_str(path);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().contains("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_keeps_the_rest() {
        assert_eq!(redact_url("postgres://qupia:s3cret@db:5432/vault"), "postgres://qupia:***@db:5432/vault");
        assert_eq!(redact_url("postgres://qupia@db/vault"), "postgres://qupia@db/vault");
        assert_eq!(
            redact_url("postgresql://u:p%40ss@h/d?sslmode=require&password=x"),
            "postgresql://u:***@h/d?sslmode=require&password=***"
        );
        assert_eq!(redact_url("sqlite:///tmp/v.db?mode=rwc"), "sqlite:///tmp/v.db?mode=rwc");
    }

    #[tokio::test]
    async fn gives_up_naming_the_setting_and_never_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://qupia:hunter2@127.0.0.1:{port}/vault");
        let started = Instant::now();
        let error = wait_for_database(&url, Duration::from_secs(1)).await.expect_err("nobody listens");
        let message = error.to_string();
        assert!(message.starts_with("database_url: "), "{message}");
        assert!(message.contains(&format!("qupia:***@127.0.0.1:{port}")), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let Error::Unreachable(unreachable) = error else { panic!("expected Unreachable") };
        assert!(unreachable.attempts >= 2, "retried: {unreachable:?}");
    }

    #[tokio::test]
    async fn waits_for_a_dependency_until_ready_and_stops_at_once_on_a_lasting_failure() {
        let mut tries = 0;
        let ready = wait_until_ready("the test dependency", Duration::from_secs(10), || {
            tries += 1;
            let outcome = if tries < 3 { Attempt::NotYet("not yet") } else { Attempt::Ready(tries) };
            async move { outcome }
        })
        .await
        .expect("ready on the third try");
        assert_eq!(ready, 3);

        let mut tries = 0;
        let error = wait_until_ready("the test dependency", Duration::from_secs(10), || {
            tries += 1;
            async { Attempt::<(), _>::Failed("pkcs11_pin: refused") }
        })
        .await
        .expect_err("a lasting failure");
        assert_eq!(tries, 1, "a lasting failure is not retried");
        assert_eq!(error.to_string(), "pkcs11_pin: refused");

        let error = wait_until_ready("the test dependency", Duration::from_millis(600), || async {
            Attempt::<(), _>::NotYet("pkcs11_token_label: no token")
        })
        .await
        .expect_err("never ready");
        let WaitError::GaveUp { attempts, .. } = &error else { panic!("expected GaveUp: {error:?}") };
        assert!(*attempts >= 2, "retried: {error:?}");
        assert!(error.to_string().starts_with("pkcs11_token_label: no token (still not ready after"), "{error}");
    }

    #[tokio::test]
    async fn returns_once_the_database_comes_up() {
        let Some(url) = std::env::var("QUPIA_TEST_POSTGRES_URL").ok() else { return };
        wait_for_database(&url, Duration::from_secs(5)).await.expect("the test database is up");
    }
}
