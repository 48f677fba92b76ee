//! Transport security shared by every Qupia service.
//!
//! Services talk gRPC over HTTP/2 with mutual TLS. A caller is known by the URI SAN of
//! its client certificate (a SPIFFE-style id such as
//! `spiffe://qupia/ns/default/sa/gateway`), never by anything it can put in a header.
//! Plaintext transport exists only as an explicit, loudly logged `insecure-dev` mode.

mod admit;
mod dev_pki;
mod identity;
mod incoming;
mod tls;

pub use admit::{Admission, admit, caller_of};
pub use dev_pki::{DevPki, IssuedCert};
pub use identity::{CallerIdentity, IdentityError, ServiceIdentity};
pub use incoming::incoming;
pub use tls::{Error, TlsFiles, TlsMode};
