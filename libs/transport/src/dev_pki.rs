//! A throw-away certificate authority for development and tests.
//!
//! `qupiactl dev up` and the test suites issue real certificates from it, so that the
//! mTLS path under test is the one production runs; production certificates come from
//! cert-manager instead.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use zeroize::Zeroizing;

use crate::tls::Error;
use crate::{ServiceIdentity, TlsFiles};

/// A CA key pair that can issue service certificates.
pub struct DevPki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl std::fmt::Debug for DevPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPki").finish_non_exhaustive()
    }
}

/// A certificate with its private key.
pub struct IssuedCert {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

fn pki_error(err: rcgen::Error) -> Error {
    Error::DevPki(err.to_string())
}

impl DevPki {
    /// Creates a new CA with a fresh key.
    pub fn generate() -> Result<DevPki, Error> {
        Self::generate_named("Qupia development CA")
    }

    /// Creates a new CA with a fresh key and the given common name (tests make a
    /// second, foreign CA this way).
    pub fn generate_named(common_name: &str) -> Result<DevPki, Error> {
        let key = KeyPair::generate().map_err(pki_error)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(pki_error)?;
        Ok(DevPki { ca_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a certificate for `identity` that serves as both a server certificate (for
    /// `dns_names`) and a client certificate (the identity as a URI SAN).
    pub fn issue(&self, identity: &ServiceIdentity, dns_names: &[&str]) -> Result<IssuedCert, Error> {
        let key = KeyPair::generate().map_err(pki_error)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, identity.as_str());
        params.distinguished_name = name;
        params.subject_alt_names.push(SanType::URI(identity.as_str().try_into().map_err(pki_error)?));
        for dns in dns_names {
            params.subject_alt_names.push(SanType::DnsName((*dns).try_into().map_err(pki_error)?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(pki_error)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// Issues a certificate and writes `ca.pem`, `<stem>.pem` and `<stem>-key.pem`
    /// (mode 0600) into `dir`.
    pub fn write_service_files(
        &self,
        dir: &Path,
        stem: &str,
        identity: &ServiceIdentity,
        dns_names: &[&str],
    ) -> Result<TlsFiles, Error> {
        let issued = self.issue(identity, dns_names)?;
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Read { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // Each file is replaced whole (written beside it, then renamed), so a service
        // reading its files while another certificate is issued never sees half a file.
        write_file(&files.ca, self.ca_pem.as_bytes(), 0o644).map_err(io(&files.ca))?;
        write_file(&files.key, issued.key_pem.as_bytes(), 0o600).map_err(io(&files.key))?;
        write_file(&files.cert, issued.cert_pem.as_bytes(), 0o644).map_err(io(&files.cert))?;
        Ok(files)
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let temporary = path.with_file_name(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options.open(&temporary)?.write_all(bytes)?;
    std::fs::rename(&temporary, path)
}
