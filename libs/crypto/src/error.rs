use crate::KeyState;

/// Why a cryptographic operation or a key administration step failed.
///
/// Messages name versions, states and file paths, never key bytes or plaintext, so they
/// are safe to log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ciphertext, its associated data or the key is wrong; AES-GCM does not say which,
    /// and neither do we.
    #[error("ciphertext failed authentication")]
    Decrypt,
    /// The key version named by a wrapped key is not in the provider (never existed, or
    /// was destroyed).
    #[error("unknown key version {0}")]
    UnknownKeyVersion(u32),
    /// The key version exists, but its lifecycle state forbids the operation (unwrapping
    /// under a retired version, or a state change the lifecycle does not allow).
    #[error("key version {version} is {state}, which does not allow this operation")]
    KeyVersionNotUsable { version: u32, state: KeyState },
    /// The keyring file could not be read, written or understood; the message names the
    /// path.
    #[error("{0}")]
    Keyring(String),
    /// The PKCS#11 module or token failed or refused (a module that does not load, a PIN
    /// the token refuses, a key object missing from the token). The message names the
    /// configuration key at fault, the module path and the token label, never the PIN.
    #[error("{0}")]
    Pkcs11(String),
    /// The key provider cannot be reached now (an HSM token not present, a device
    /// error); trying again later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// Input that cannot even be attempted, such as a sealed value shorter than its nonce
    /// and tag.
    #[error("malformed input: {0}")]
    Malformed(&'static str),
}
