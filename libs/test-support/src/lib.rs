//! What Qupia's tests share: a fresh database per test on SQLite or PostgreSQL, a
//! test PKI issuing real certificates, services started in-process on `127.0.0.1:0`
//! (vault and gateway: [`Suite`]; with accounts: [`AccountsSuite`]; with marketing:
//! [`MarketingSuite`]), a real SMTP server ([`SmtpServer`]), and scans that prove
//! personal data never reached a place it must not be.
//!
//! PostgreSQL tests run when `QUPIA_TEST_POSTGRES_URL` names a server to create
//! databases on (CI sets it); without it they say they were skipped. Test vaults keep
//! their keys in a keyring file, or in a private SoftHSM2 token when
//! `QUPIA_TEST_KEY_PROVIDER=pkcs11`.

mod accounts;
mod db;
mod logs;
mod marketing;
pub mod ops;
mod pki;
mod scan;
pub mod smtp;
mod softhsm;
mod suite;
mod vault;

pub use accounts::{AccountsSuite, publish_policy_version};
pub use db::{Backend, TestDb, postgres_admin_url};
pub use logs::{captured_log_text, captured_logs};
pub use marketing::{MarketingInstance, MarketingSuite};
pub use pki::TestPki;
pub use scan::{Leak, scan_bytes, scan_database, scan_text};
pub use smtp::{ReceivedMail, SmtpServer};
pub use softhsm::SoftHsm;
pub use suite::Suite;
pub use vault::{KEY_PROVIDER_ENV, TestKeys, VaultHarness, connect};

/// The shared SoftHSM2 token's label and PINs.
pub mod softhsm_token {
    pub use crate::softhsm::{SO_PIN, TOKEN_LABEL, USER_PIN};
}

/// Test people that look like real personal data, so scans for them mean something.
pub mod people {
    /// (surname, given name, patronymic, e-mail, phone)
    pub const PEOPLE: [(&str, &str, &str, &str, &str); 3] = [
        ("Нұрланова", "Әйгерім", "Серікқызы", "aigerim.nurlanova@mail.kz", "+77011234567"),
        ("Иванов", "Пётр", "Сергеевич", "p.ivanov@example.ru", "+77757654321"),
        ("O'Connor", "Mary-Kate", "", "mk.oconnor@example.com", "+77019876543"),
    ];

    /// Every value above, for scans (the empty patronymic left out).
    pub fn needles() -> Vec<&'static str> {
        PEOPLE.iter().flat_map(|(a, b, c, d, e)| [*a, *b, *c, *d, *e]).filter(|v| !v.is_empty()).collect()
    }
}

/// Runs a storage test on SQLite and on PostgreSQL: `storage_test!(name, body)`
/// makes `name::sqlite` and `name::postgres`, each calling `body(Backend)`.
#[macro_export]
macro_rules! storage_test {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::postgres_admin_url().is_none() {
                    eprintln!("skipped: QUPIA_TEST_POSTGRES_URL is not set");
                    return;
                }
                super::$body($crate::Backend::Postgres).await;
            }
        }
    };
}
