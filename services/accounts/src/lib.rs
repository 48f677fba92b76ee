//! The accounts service: registers people and serves their rights over their data
//! (privacy policy clauses 1.4, 1.6, 2.2.1–2.2.3, 2.4, 3.1, 3.5).
//!
//! It is the business-facing side of Qupia: the web front end and the operator's CLI
//! call it, and it calls the gateway only, never the vault, under its own identity
//! (`spiffe://qupia/ns/default/sa/accounts`). Registration stores the person and their
//! scanned documents in the vault through the gateway, records the consents they
//! chose, and keeps an account row of ids and tokens; sign-in, profile, rectification,
//! consent changes, deletion, export and document download all go through the gateway,
//! for a named purpose, and leave their trace in the access log.
//!
//! Nothing in this crate stores, logs, traces or puts into an error message a name, an
//! e-mail address, a phone number or a document byte: the database holds account ids,
//! tokens and non-personal state only, not even a hash of a personal value.

mod accounts_api;
mod config;
mod error;
mod gateway;
pub mod model;
mod register;
mod server;
pub mod store;

pub use config::Config;
pub use error::Error;
pub use server::{ServeError, serve};
