//! TLS settings for servers and clients, from PEM files.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use zeroize::Zeroizing;

use crate::ServiceIdentity;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("failed to create the development PKI: {0}")]
    DevPki(String),
}

/// The PEM files of one service: the CA that signs every Qupia certificate, and the
/// service's own certificate and private key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a service talks to its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Mutual TLS: the only mode for anything but a developer's laptop.
    Mtls(TlsFiles),
    /// Plaintext HTTP/2. Every caller is taken to be `assumed_caller`, because there is
    /// no certificate to read an identity from. Logged as a warning at start.
    InsecureDev { assumed_caller: ServiceIdentity },
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    std::fs::read(path).map(Zeroizing::new).map_err(|source| Error::Read { path: path.to_owned(), source })
}

impl TlsFiles {
    /// Server side: present our certificate and require a client certificate signed
    /// by the CA. A client without one, or with one from another CA, cannot connect.
    pub fn server_config(&self) -> Result<ServerTlsConfig, Error> {
        let ca = read(&self.ca)?;
        Ok(ServerTlsConfig::new()
            .identity(self.identity()?)
            .client_ca_root(Certificate::from_pem(&*ca))
            .client_auth_optional(false))
    }

    /// Client side: trust only the CA and present our own certificate.
    /// `server_name` is the DNS name the server's certificate must carry.
    pub fn client_config(&self, server_name: &str) -> Result<ClientTlsConfig, Error> {
        let ca = read(&self.ca)?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&*ca))
            .identity(self.identity()?)
            .domain_name(server_name))
    }

    fn identity(&self) -> Result<Identity, Error> {
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        Ok(Identity::from_pem(&*cert, &*key))
    }
}
