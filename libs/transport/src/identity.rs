//! Who is calling: the identity in the caller's client certificate.

use std::fmt;

use tonic::Request;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A service identity: a SPIFFE-style URI such as `spiffe://qupia/ns/default/sa/gateway`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceIdentity(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("a service identity must be a spiffe:// URI with a trust domain and a path")]
    NotSpiffe,
}

impl ServiceIdentity {
    pub fn parse(uri: &str) -> Result<ServiceIdentity, IdentityError> {
        let rest = uri.strip_prefix("spiffe://").ok_or(IdentityError::NotSpiffe)?;
        let (trust_domain, path) = rest.split_once('/').ok_or(IdentityError::NotSpiffe)?;
        let domain_ok = !trust_domain.is_empty()
            && trust_domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        let path_ok = !path.is_empty()
            && path.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            });
        if domain_ok && path_ok { Ok(ServiceIdentity(uri.to_owned())) } else { Err(IdentityError::NotSpiffe) }
    }

    /// The identity `spiffe://qupia/ns/<namespace>/sa/<service>`.
    pub fn for_service(namespace: &str, service: &str) -> ServiceIdentity {
        ServiceIdentity::parse(&format!("spiffe://qupia/ns/{namespace}/sa/{service}"))
            .expect("namespace and service names are plain path segments")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ServiceIdentity {
    type Error = IdentityError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ServiceIdentity::parse(&value)
    }
}

impl From<ServiceIdentity> for String {
    fn from(value: ServiceIdentity) -> String {
        value.0
    }
}

impl fmt::Display for ServiceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The caller of one request, as the transport established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerIdentity {
    /// Authenticated by a client certificate that our CA signed.
    Service(ServiceIdentity),
    /// Plaintext `insecure-dev` transport: the identity the operator configured for
    /// every caller, because there is no certificate to read one from.
    InsecureDev(ServiceIdentity),
    /// No identity could be established (no certificate, or no SPIFFE URI in it).
    Anonymous,
}

impl CallerIdentity {
    /// Reads the caller's identity from the TLS session of `request`.
    ///
    /// The identity is the first `spiffe://` URI SAN of the leaf certificate. Request
    /// metadata is never consulted: a header is something any caller can set.
    pub fn of<T>(request: &Request<T>, insecure_dev: Option<&ServiceIdentity>) -> CallerIdentity {
        if let Some(identity) = insecure_dev {
            return CallerIdentity::InsecureDev(identity.clone());
        }
        let Some(certs) = request.peer_certs() else {
            return CallerIdentity::Anonymous;
        };
        let Some(leaf) = certs.first() else {
            return CallerIdentity::Anonymous;
        };
        identity_of_certificate(leaf.as_ref()).map_or(CallerIdentity::Anonymous, CallerIdentity::Service)
    }

    /// The identity, if there is one.
    pub fn service(&self) -> Option<&ServiceIdentity> {
        match self {
            CallerIdentity::Service(id) | CallerIdentity::InsecureDev(id) => Some(id),
            CallerIdentity::Anonymous => None,
        }
    }

    /// A label for logs and the access log.
    pub fn label(&self) -> &str {
        self.service().map_or("anonymous", ServiceIdentity::as_str)
    }
}

/// The SPIFFE id in a DER certificate's subject alternative names.
pub fn identity_of_certificate(der: &[u8]) -> Option<ServiceIdentity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => ServiceIdentity::parse(uri).ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spiffe_ids_and_refuses_the_rest() {
        assert!(ServiceIdentity::parse("spiffe://qupia/ns/default/sa/gateway").is_ok());
        for bad in [
            "",
            "gateway",
            "https://qupia/ns/default/sa/gateway",
            "spiffe://qupia",
            "spiffe://qupia/",
            "spiffe:///ns/default",
            "spiffe://qupia/ns//sa/gateway",
            "spiffe://qupia/ns/../sa/gateway",
            "spiffe://QUPIA/ns/default",
        ] {
            assert_eq!(ServiceIdentity::parse(bad), Err(IdentityError::NotSpiffe), "{bad}");
        }
    }

    #[test]
    fn reads_the_identity_from_a_certificate() {
        let pki = DevPki::generate().unwrap();
        let id = ServiceIdentity::for_service("default", "gateway");
        let issued = pki.issue(&id, &["gateway"]).unwrap();
        assert_eq!(identity_of_certificate(&issued.cert_der), Some(id));
        assert_eq!(identity_of_certificate(b"not a certificate"), None);
    }

    use crate::DevPki;
}
