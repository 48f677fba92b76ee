//! A private SoftHSM2 for tests of the PKCS#11 key store: its own token directory and
//! configuration, a token initialised with `softhsm2-util`, and the module path.
//!
//! SoftHSM2 reads its configuration (`SOFTHSM2_CONF`) once, when a process calls
//! `C_Initialize`, and sees only the tokens that exist at that moment. So there is one
//! SoftHSM2 per test process: [`SoftHsm::shared`] creates the directory and the shared
//! token, then initialises the module in this process while `SOFTHSM2_CONF` names the
//! private configuration. Every in-process vault then gets its own key set in that token
//! (a fresh key-label prefix), which is how several vaults share one HSM in production
//! too. Tokens made later with [`SoftHsm::init_token`] are visible to child processes
//! (pass them [`SoftHsm::conf`]), not to this one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use qupia_crypto::Pkcs11Options;
use secrecy::SecretString;

/// The Debian package `softhsm2` puts the module here.
pub const DEFAULT_SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Overrides [`DEFAULT_SOFTHSM_MODULE`] (other distributions install it elsewhere).
pub const SOFTHSM_MODULE_ENV: &str = "QUPIA_TEST_SOFTHSM_MODULE";

/// The label, user PIN and security officer PIN of the shared token.
pub const TOKEN_LABEL: &str = "qupia-test";
pub const USER_PIN: &str = "qupia-user-1234";
pub const SO_PIN: &str = "qupia-so-5678";

/// This process's SoftHSM2.
#[derive(Debug)]
pub struct SoftHsm {
    module: PathBuf,
    conf: PathBuf,
    /// Kept for the life of the process: the token files live here.
    _dir: tempfile::TempDir,
}

impl SoftHsm {
    /// The module path, if SoftHSM2 is installed.
    pub fn module_path() -> Option<PathBuf> {
        let module = std::env::var_os(SOFTHSM_MODULE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOFTHSM_MODULE));
        module.is_file().then_some(module)
    }

    /// Whether SoftHSM2 is installed; tests that need it say they were skipped when not.
    pub fn available() -> bool {
        SoftHsm::module_path().is_some()
    }

    /// The process's SoftHSM2, created on first use with the token [`TOKEN_LABEL`].
    ///
    /// # Panics
    ///
    /// If SoftHSM2 is not installed (`apt-get install softhsm2`) or a token can't be made.
    pub fn shared() -> &'static SoftHsm {
        static SHARED: OnceLock<SoftHsm> = OnceLock::new();
        SHARED.get_or_init(|| {
            let module = SoftHsm::module_path().unwrap_or_else(|| {
                panic!("SoftHSM2 is not installed: apt-get install softhsm2 (or set {SOFTHSM_MODULE_ENV})")
            });
            let dir = tempfile::Builder::new().prefix("qupia-softhsm-").tempdir().expect("temp dir");
            let tokens = dir.path().join("tokens");
            std::fs::create_dir(&tokens).expect("token directory");
            let conf = dir.path().join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
            )
            .expect("write softhsm2.conf");
            let hsm = SoftHsm { module, conf, _dir: dir };
            hsm.init_token(TOKEN_LABEL, USER_PIN);
            // Initialise the module here and now, while SOFTHSM2_CONF names this
            // configuration; the key store's later C_Initialize finds it initialised.
            temp_env::with_var("SOFTHSM2_CONF", Some(&hsm.conf), || {
                let pkcs11 = cryptoki::context::Pkcs11::new(&hsm.module).expect("load the SoftHSM2 module");
                let flags = cryptoki::context::CInitializeFlags::OS_LOCKING_OK;
                match pkcs11.initialize(cryptoki::context::CInitializeArgs::new(flags)) {
                    Ok(()) => {}
                    Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::CryptokiAlreadyInitialized, _)) => {
                        panic!("the PKCS#11 module was initialised before the SoftHSM2 fixture")
                    }
                    Err(err) => panic!("initialise SoftHSM2: {err:?}"),
                }
                // Never finalised: the library stays loaded and initialised for the process.
                std::mem::forget(pkcs11);
            });
            hsm
        })
    }

    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The configuration file; child processes need it as `SOFTHSM2_CONF`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// Initialises a new token in the free slot with `softhsm2-util`. Only processes
    /// started afterwards see it.
    pub fn init_token(&self, label: &str, pin: &str) {
        let output = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", SO_PIN])
            .output()
            .expect("run softhsm2-util (apt-get install softhsm2)");
        assert!(
            output.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Options for a key set with `prefix` in the shared token.
    pub fn options(&self, prefix: &str) -> Pkcs11Options {
        Pkcs11Options {
            module: self.module.clone(),
            token_label: TOKEN_LABEL.to_owned(),
            pin: SecretString::from(USER_PIN),
            key_label_prefix: prefix.to_owned(),
        }
    }

    /// Options for a key set of its own in the shared token.
    pub fn fresh_options(&self) -> Pkcs11Options {
        self.options(&format!("t{}", uuid::Uuid::new_v4().simple()))
    }
}
