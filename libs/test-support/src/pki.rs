//! A test CA issuing real certificates into a temporary directory.

use qupia_transport::{DevPki, ServiceIdentity, TlsFiles};

#[derive(Debug)]
pub struct TestPki {
    pub ca: DevPki,
    dir: tempfile::TempDir,
    /// Each identity is issued once: a running service keeps reading the files it
    /// was started with, so they must never be replaced under it.
    issued: std::sync::Mutex<std::collections::HashMap<String, TlsFiles>>,
}

impl TestPki {
    pub fn new() -> TestPki {
        Self::named("Qupia test CA")
    }

    /// A CA with its own name and key: certificates it issues are foreign to any
    /// other `TestPki`.
    pub fn named(common_name: &str) -> TestPki {
        TestPki {
            ca: DevPki::generate_named(common_name).expect("generate a test CA"),
            dir: tempfile::tempdir().expect("temp dir"),
            issued: Default::default(),
        }
    }

    /// Files for `spiffe://qupia/ns/default/sa/<service>`, valid for the DNS names
    /// `<service>` and `localhost`.
    pub fn service(&self, service: &str) -> TlsFiles {
        self.identity(&ServiceIdentity::for_service("default", service), service)
    }

    /// Files for any identity; `stem` names the files and the DNS name.
    pub fn identity(&self, identity: &ServiceIdentity, stem: &str) -> TlsFiles {
        let mut issued = self.issued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        issued
            .entry(stem.to_owned())
            .or_insert_with(|| {
                self.ca
                    .write_service_files(self.dir.path(), stem, identity, &[stem, "localhost"])
                    .expect("issue a test certificate")
            })
            .clone()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
