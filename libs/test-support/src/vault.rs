//! The vault, started in-process on `127.0.0.1:0` over real mTLS.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qupia_api::keys::v1::key_admin_service_client::KeyAdminServiceClient;
use qupia_api::vault::v1::vault_document_service_client::VaultDocumentServiceClient;
use qupia_api::vault::v1::vault_service_client::VaultServiceClient;
use qupia_api::vault::v1::vault_statistics_service_client::VaultStatisticsServiceClient;
use qupia_crypto::Pkcs11Options;
use qupia_transport::{ServiceIdentity, TlsFiles, TlsMode};
use qupia_vault::{Config, KeyLifecycleOptions, KeyProviderConfig, Limits};
use secrecy::ExposeSecret;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::{Backend, SoftHsm, TestDb, TestPki};

/// Chooses the key provider of test vaults: `pkcs11` runs them on SoftHSM2, anything else
/// (or nothing) on the keyring file.
pub const KEY_PROVIDER_ENV: &str = "QUPIA_TEST_KEY_PROVIDER";

/// The keys of one test vault, on the provider [`KEY_PROVIDER_ENV`] chooses.
#[derive(Debug, Clone)]
pub enum TestKeys {
    /// A keyring file (not created until the vault starts).
    Keyring(PathBuf),
    /// A key set of its own in the process's SoftHSM2 token.
    Pkcs11(Pkcs11Options),
}

impl TestKeys {
    /// Whether test vaults run on SoftHSM2.
    pub fn pkcs11_selected() -> bool {
        std::env::var(KEY_PROVIDER_ENV).is_ok_and(|value| value == "pkcs11")
    }

    /// New keys for one vault: a keyring file in `dir`, or a fresh key set in SoftHSM2.
    pub fn new(dir: &Path) -> TestKeys {
        if TestKeys::pkcs11_selected() {
            TestKeys::Pkcs11(SoftHsm::shared().fresh_options())
        } else {
            TestKeys::Keyring(dir.join("keyring.json"))
        }
    }

    /// The vault configuration for these keys.
    pub fn config(&self) -> KeyProviderConfig {
        match self {
            TestKeys::Keyring(path) => KeyProviderConfig::keyring(path),
            TestKeys::Pkcs11(options) => {
                KeyProviderConfig::Pkcs11 { options: options.clone(), wait: Duration::from_secs(5) }
            }
        }
    }

    /// The `qupia-vault` flags and environment that select these keys, for tests that
    /// start the binary.
    pub fn command_line(&self) -> (Vec<OsString>, Vec<(OsString, OsString)>) {
        match self {
            TestKeys::Keyring(path) => (vec!["--keyring".into(), path.into()], Vec::new()),
            TestKeys::Pkcs11(options) => (
                vec![
                    "--key-provider".into(),
                    "pkcs11".into(),
                    "--pkcs11-module".into(),
                    options.module.clone().into(),
                    "--pkcs11-token-label".into(),
                    options.token_label.clone().into(),
                    "--pkcs11-key-label-prefix".into(),
                    options.key_label_prefix.clone().into(),
                ],
                vec![
                    ("SOFTHSM2_CONF".into(), SoftHsm::shared().conf().into()),
                    ("QUPIA_VAULT_PKCS11_PIN".into(), options.pin.expose_secret().into()),
                ],
            ),
        }
    }

    /// The keyring file, when these keys are one.
    pub fn keyring_path(&self) -> Option<&Path> {
        match self {
            TestKeys::Keyring(path) => Some(path),
            TestKeys::Pkcs11(_) => None,
        }
    }
}

/// A running vault with its database, keys and PKI.
#[derive(Debug)]
pub struct VaultHarness {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub pki: std::sync::Arc<TestPki>,
    /// Where the keyring file would be. Under `QUPIA_TEST_KEY_PROVIDER=pkcs11` the keys
    /// are in SoftHSM2 instead and no file is ever written here: see [`VaultHarness::keys`].
    pub keyring_path: PathBuf,
    /// The vault's keys.
    pub keys: TestKeys,
    /// The erasure ledger's own database on PostgreSQL; on SQLite the ledger is a file
    /// beside where the keyring would be ([`VaultHarness::ledger_sqlite_path`]).
    pub ledger_db: Option<TestDb>,
    /// Rates, batch size and alarm threshold of key administration.
    pub key_lifecycle: KeyLifecycleOptions,
    limits: Limits,
    /// The ops server's address once it listens.
    ops: qupia_ops::BoundAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), qupia_vault::ServeError>>>,
    _dir: tempfile::TempDir,
}

/// Opens an mTLS channel to `addr` as the holder of `files`, expecting the server
/// certificate to carry `server_name`.
///
/// A refused TCP connection is retried for up to two seconds (a server that has just
/// been started may not be accepting yet); every other failure is returned at once,
/// so tests of refused certificates stay fast and exact.
pub async fn connect(
    addr: SocketAddr,
    files: &TlsFiles,
    server_name: &str,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .expect("a valid URI")
        .tls_config(files.client_config(server_name).expect("read TLS files"))?;
    let mut attempts = 0;
    loop {
        match endpoint.connect().await {
            Err(err) if attempts < 40 && refused(&err) => attempts += 1,
            outcome => return outcome,
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(current) = source {
        if current.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = current.source();
    }
    false
}

impl VaultHarness {
    /// Starts a vault that trusts the gateway's identity.
    pub async fn start(backend: Backend) -> VaultHarness {
        Self::start_with(backend, Limits::default()).await
    }

    pub async fn start_with(backend: Backend, limits: Limits) -> VaultHarness {
        Self::start_in(backend, limits, std::sync::Arc::new(TestPki::new())).await
    }

    /// Starts a vault whose certificates come from `pki` (shared with other services).
    pub async fn start_in(backend: Backend, limits: Limits, pki: std::sync::Arc<TestPki>) -> VaultHarness {
        Self::start_on(backend, limits, KeyLifecycleOptions::default(), pki, None).await
    }

    /// Starts a vault on `keys`, whatever [`KEY_PROVIDER_ENV`] says.
    pub async fn start_with_keys(backend: Backend, keys: TestKeys) -> VaultHarness {
        let pki = std::sync::Arc::new(TestPki::new());
        Self::start_on(backend, Limits::default(), KeyLifecycleOptions::default(), pki, Some(keys)).await
    }

    /// Starts a vault with the key-administration options given.
    pub async fn start_with_key_options(backend: Backend, key_lifecycle: KeyLifecycleOptions) -> VaultHarness {
        Self::start_on(backend, Limits::default(), key_lifecycle, std::sync::Arc::new(TestPki::new()), None).await
    }

    async fn start_on(
        backend: Backend,
        limits: Limits,
        key_lifecycle: KeyLifecycleOptions,
        pki: std::sync::Arc<TestPki>,
        keys: Option<TestKeys>,
    ) -> VaultHarness {
        let db = TestDb::create(backend, "vault").await;
        let ledger_db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDb::create(backend, "ledger").await),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let keyring_path = dir.path().join("keyring.json");
        let keys = keys.unwrap_or_else(|| TestKeys::new(dir.path()));
        let mut harness = VaultHarness {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            db,
            pki,
            keyring_path,
            keys,
            ledger_db,
            key_lifecycle,
            limits,
            ops: qupia_ops::BoundAddr::default(),
            stop: None,
            task: None,
            _dir: dir,
        };
        harness.launch().await;
        harness
    }

    /// Starts the vault again on the same database, keyring and ledger (after `stop`).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// The erasure ledger's file on SQLite.
    pub fn ledger_sqlite_path(&self) -> PathBuf {
        self.keyring_path.with_file_name("erasure-ledger.db")
    }

    async fn launch(&mut self) {
        let limits = self.limits;
        let config = Config {
            database_url: self.db.url.clone(),
            max_connections: 8,
            keys: self.keys.config(),
            tls: TlsMode::Mtls(self.pki.service("vault")),
            trusted_callers: vec![ServiceIdentity::for_service("default", "gateway")],
            limits,
            ops: qupia_ops::OpsOptions::ephemeral(),
            erasure_ledger_url: Some(match &self.ledger_db {
                Some(ledger) => ledger.url.clone(),
                None => format!("sqlite://{}?mode=rwc", self.ledger_sqlite_path().display()),
            }),
            key_lifecycle: self.key_lifecycle.clone(),
        };
        self.ops = config.ops.bound.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(qupia_vault::serve(config, listener, async {
            let _ = stopped.await;
        })));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        for _ in 0..200 {
            // The ops server starts once keys and database are open, just before serving.
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() && self.ops.get().is_some() {
                return;
            }
            if self.task.as_ref().is_some_and(|task| task.is_finished()) {
                let task = self.task.take().expect("checked");
                panic!("the vault stopped while starting: {:?}", task.await.expect("vault task"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the vault did not start listening");
    }

    /// The vault's ops HTTP server (`/metrics`, `/livez`, `/readyz`).
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.get().expect("the vault's ops server listens once the vault is up")
    }

    /// Stops the vault and waits until it has drained and closed its database.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("vault task").expect("vault stopped cleanly");
        }
    }

    /// A client holding a certificate for `spiffe://qupia/ns/default/sa/<service>`.
    pub async fn client_as(&self, service: &str) -> VaultServiceClient<Channel> {
        let files = self.pki.service(service);
        VaultServiceClient::new(connect(self.addr, &files, "vault").await.expect("connect to the vault"))
    }

    /// A key-administration client holding a certificate for `service`.
    pub async fn keys_as(&self, service: &str) -> KeyAdminServiceClient<Channel> {
        let files = self.pki.service(service);
        KeyAdminServiceClient::new(connect(self.addr, &files, "vault").await.expect("connect to the vault"))
    }

    /// A client with the gateway's identity: the one the vault trusts.
    pub async fn gateway(&self) -> VaultServiceClient<Channel> {
        self.client_as("gateway").await
    }

    /// The document service, as `spiffe://qupia/ns/default/sa/<service>`.
    pub async fn documents_as(&self, service: &str) -> VaultDocumentServiceClient<Channel> {
        let files = self.pki.service(service);
        VaultDocumentServiceClient::new(connect(self.addr, &files, "vault").await.expect("connect to the vault"))
    }

    /// The statistics service, as `spiffe://qupia/ns/default/sa/<service>`.
    pub async fn statistics_as(&self, service: &str) -> VaultStatisticsServiceClient<Channel> {
        let files = self.pki.service(service);
        VaultStatisticsServiceClient::new(connect(self.addr, &files, "vault").await.expect("connect to the vault"))
    }
}

impl Drop for VaultHarness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
