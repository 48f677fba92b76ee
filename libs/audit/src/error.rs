//! The ledger's one error type.

/// Why an append, a query or a verification did not happen.
///
/// Neither variant carries a value from an entry: `Invalid` names the rule that was
/// broken, and `Storage` wraps what the database said, which for our statements never
/// includes a bound parameter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or failed; nothing was written. A reveal must not proceed.
    #[error("audit ledger storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    /// An entry (or an external checkpoint) broke a rule; nothing was written.
    #[error("invalid audit entry: {0}")]
    Invalid(&'static str),
}
