//! The marketing service: audiences and campaigns over person tokens, and statistics
//! (policy clauses 2.2.4 advertising and 2.2.5 statistics, both with consent).
//!
//! It calls the gateway only, as `spiffe://qupia/ns/default/sa/marketing`. Sending a
//! campaign queues one outbox row per person; a delivery worker reveals each contact
//! through the gateway's BatchReveal with purpose `advertising` at the moment of
//! delivery, so the gateway checks consent per person then, and a withdrawal made after
//! queueing still stops the message. The revealed address and the rendered message live
//! only in memory, zeroized after the send.
//!
//! Nothing personal may ever be stored, logged, traced or put into an error here: the
//! database holds tokens, ids, templates and delivery states only, and a failed
//! delivery is recorded as a fixed code, never as a server's reply.

mod api;
mod config;
mod delivery;
mod error;
mod model;
pub mod sender;
mod server;
pub mod store;
pub mod template;

pub use config::{Config, DeliveryOptions, EmailSender, SmsSender, SmtpConfig, SmtpCredentials, SmtpTls};
pub use error::Error;
pub use model::Channel;
pub use server::{ServeError, serve};
