//! The one error a policy can fail to load with.

use std::path::PathBuf;

/// Why a policy was refused. The gateway refuses to start on either, and a reload that
/// fails keeps the previous policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A syntax or schema-validation error, a missing or duplicate `@id`, or a template.
    /// Each line of the message starts with `origin:line:column:` so that an editor (and
    /// a reviewer) can jump straight to the offending rule.
    #[error("{0}")]
    Invalid(String),
    /// The policy file could not be read.
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}
