//! The gateway: Qupia's policy enforcement point.
//!
//! Internal services call it, never the vault. It knows each caller by its
//! certificate, asks the purpose policy (Cedar, readable by a security team) which
//! fields that caller may see for the purpose named, checks the person's consent where
//! the purpose needs it, has every decision written to the vault's access log, and only
//! then lets the vault reveal. Scanned documents stream through it the same way, and
//! statistics are counted inside the vault over consenting people only. It owns
//! consents, the versions of the published privacy policy and the register of
//! disclosure requests of state bodies, and rate-limits each caller.
//!
//! The gateway never holds personal data at rest: its database has tokens, purposes
//! and ids only, and values it relays from the vault are never logged.

mod access_history;
mod audit_proxy;
mod config;
pub mod consent;
mod consent_api;
mod disclosure;
mod disclosure_api;
mod document_api;
mod enforce;
mod error;
mod gateway_api;
mod key_proxy;
mod model;
mod policy_api;
mod rate_limit;
mod server;
mod statistics_api;
pub mod subject;
mod subject_api;

pub use config::{Config, RateLimit, Roles};
pub use error::Error;
pub use server::{ServeError, serve};
