//! The gateway's purpose policy, as code a security team can read and review.
//!
//! The policy is written in Cedar (`policies/default.cedar` is the default) and decides,
//! for a calling service, a purpose and a field, whether the field may be seen in clear;
//! anything it does not permit is denied. Every policy is validated against
//! `policies/qupia.cedarschema` before it is used, and errors point at the line to fix.
//! A [`PolicyStore`] holds the live version and swaps in a new one only once it has
//! validated. This crate decides who may ask; consent and disclosure approvals are the
//! gateway's to check. It never sees personal data: requests name callers, purposes and
//! fields, never values.

mod decision;
mod error;
mod model;
mod parse;
mod policy;
mod store;

pub use decision::{AccessRequest, Decision, ExplainedRule, Explanation, Resource};
pub use error::PolicyError;
pub use policy::Policy;
pub use store::PolicyStore;
