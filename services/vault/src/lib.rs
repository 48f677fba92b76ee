//! The vault: the only Qupia process, and this the only crate, that ever sees
//! plaintext personal data or keys.
//!
//! It stores people as AES-256-GCM ciphertexts under per-person data keys wrapped by
//! a versioned key-encryption key, hands out random tokens in their place, finds
//! people by e-mail or phone through a keyed blind index, and crypto-shreds them on
//! erasure. It keeps scanned documents the same way, in authenticated chunks under the
//! person's data key, and computes statistics without letting a value out. Only the
//! identities it trusts (the gateway's) may call it.
//!
//! Nothing in this crate may log, trace or put into an error message a personal
//! value or key material.

mod audit_api;
mod config;
mod dek_cache;
mod dimension;
mod document;
mod documents_api;
pub mod erasure_ledger;
mod error;
mod grpc;
mod key_admin;
mod key_api;
mod key_jobs;
pub mod key_store;
pub mod model;
mod server;
mod statistics_api;
pub mod store;
mod vault;

pub use config::{Config, KeyLifecycleOptions, KeyProviderConfig, Limits};
pub use error::Error;
pub use server::{ServeError, serve};
pub use vault::Vault;
