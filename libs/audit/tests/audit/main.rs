//! The ledger against real databases: every test runs on SQLite and on PostgreSQL, on
//! the vault's own migrations, and asserts something a security reviewer relies on.

mod append;
mod fail_closed;
mod query;
mod support;
mod tamper;
