//! The suite under test: the release binaries `qupia-vault` and `qupia-gateway` started
//! as child processes on free ports, with a fresh CA, a certificate per identity and a
//! keyring, and mTLS channels to the gateway as the services that call it.
//!
//! Child processes rather than in-process servers, so that each one's CPU time and
//! memory can be read from `/proc` and the client's own work is not mixed in.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use qupia_transport::{DevPki, ServiceIdentity, TlsFiles};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

use crate::options::{KeyProvider, Plan};
use crate::postgres::Databases;

/// The identities the suite issues certificates for: the two services, and the callers
/// the benchmark plays.
const IDENTITIES: [&str; 5] = ["vault", "gateway", "accounts", "marketing", "qupiactl"];

/// How long a service may take to start (migrations on a fresh database included).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running vault and gateway, and channels to the gateway.
#[derive(Debug)]
pub struct Suite {
    processes: Processes,
    pub vault_pid: i32,
    pub gateway_pid: i32,
    /// The accounts service: stores people, grants consent, looks people up.
    pub accounts: Channel,
    /// The marketing service: reveals contacts for advertising.
    pub marketing: Channel,
    /// The security team's CLI: publishes the privacy policy, verifies the access log.
    pub qupiactl: Channel,
}

/// The child processes, killed when dropped.
#[derive(Debug)]
struct Processes {
    vault: Child,
    gateway: Child,
    /// Certificates, keyring and logs.
    dir: PathBuf,
}

/// Where the service binaries are: `bin_dir`, or the directory of this executable (the
/// cargo target directory's `release/` or `debug/`).
pub fn binaries(bin_dir: Option<&Path>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = match bin_dir {
        Some(dir) => dir.to_owned(),
        None => {
            let exe = std::env::current_exe().context("find this executable")?;
            let dir = exe.parent().context("this executable has no directory")?;
            // A test binary lives in deps/, beside the binaries' own directory.
            if dir.ends_with("deps") { dir.parent().unwrap_or(dir).to_owned() } else { dir.to_owned() }
        }
    };
    let vault = dir.join("qupia-vault");
    let gateway = dir.join("qupia-gateway");
    if !vault.is_file() || !gateway.is_file() {
        anyhow::bail!(
            "qupia-vault and qupia-gateway are not in {}: build them first with \
             `cargo build --release -p qupia-vault -p qupia-gateway -p qupia-bench` \
             (or name their directory with --bin-dir)",
            dir.display()
        );
    }
    Ok((vault, gateway))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?.local_addr()?.port())
}

/// Issues the CA and a certificate for every identity into `dir/tls`.
fn issue_certificates(dir: &Path) -> anyhow::Result<()> {
    let pki = DevPki::generate().context("generate the run's CA")?;
    for name in IDENTITIES {
        let identity = ServiceIdentity::for_service("default", name);
        pki.write_service_files(&dir.join("tls"), name, &identity, &[name, "localhost"])
            .with_context(|| format!("issue the {name} certificate"))?;
    }
    Ok(())
}

fn tls_files(dir: &Path, name: &str) -> TlsFiles {
    let tls = dir.join("tls");
    TlsFiles { ca: tls.join("ca.pem"), cert: tls.join(format!("{name}.pem")), key: tls.join(format!("{name}-key.pem")) }
}

fn tls_args(command: &mut Command, files: &TlsFiles) {
    command.arg("--tls-ca").arg(&files.ca).arg("--tls-cert").arg(&files.cert).arg("--tls-key").arg(&files.key);
}

/// Where Debian's package `softhsm2` installs the module.
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const SOFTHSM_TOKEN: &str = "qupia-bench";

/// Initialises a SoftHSM2 token of the run's own in `dir/softhsm` and points the vault
/// at it: the KEKs are created in it and never leave it, as in production with an HSM.
fn softhsm_token(dir: &Path, vault: &mut Command) -> anyhow::Result<()> {
    anyhow::ensure!(
        Path::new(SOFTHSM_MODULE).is_file(),
        "--key-provider pkcs11 needs SoftHSM2 ({SOFTHSM_MODULE}): apt-get install softhsm2"
    );
    let hsm = dir.join("softhsm");
    let tokens = hsm.join("tokens");
    std::fs::create_dir_all(&tokens).context("create the SoftHSM2 token directory")?;
    let conf = hsm.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    )
    .context("write softhsm2.conf")?;
    // A fresh PIN per run, kept in a file only the run's user can read.
    let pin = uuid::Uuid::new_v4().simple().to_string();
    let so_pin = uuid::Uuid::new_v4().simple().to_string();
    let pin_file = hsm.join("pin");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&pin_file)?;
        file.write_all(pin.as_bytes())?;
    }
    let output = std::process::Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", SOFTHSM_TOKEN, "--pin", &pin, "--so-pin", &so_pin])
        .output()
        .context("run softhsm2-util (apt-get install softhsm2)")?;
    anyhow::ensure!(
        output.status.success(),
        "softhsm2-util --init-token failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    vault
        .env("SOFTHSM2_CONF", &conf)
        .args(["--key-provider", "pkcs11", "--pkcs11-module", SOFTHSM_MODULE, "--pkcs11-token-label", SOFTHSM_TOKEN])
        .arg("--pkcs11-pin-file")
        .arg(&pin_file)
        // With the keys in a token there is no keyring file to put the erasure ledger beside.
        .arg("--erasure-ledger-url")
        .arg(format!("sqlite://{}?mode=rwc", dir.join("erasure-ledger.db").display()));
    Ok(())
}

/// Starts `command` with its output in `dir/<name>.log`.
fn spawn(mut command: Command, dir: &Path, name: &str) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).context("create a log file")?;
    // The services also read settings from QUPIA_* variables (and a config file named
    // by one) and export traces when OTEL_* ask: none of the caller's may change what
    // is measured.
    for (variable, _) in std::env::vars_os() {
        let text = variable.to_string_lossy();
        if text.starts_with("QUPIA_") || text.starts_with("OTEL_") {
            command.env_remove(&variable);
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Warnings and errors only: a log line per request would cost CPU we measure.
        .env("RUST_LOG", "warn")
        // Nothing to wait for: no load balancer is draining this instance.
        .args(["--deregistration-delay-secs", "0", "--grace-period-secs", "5"])
        .args(["--ops-listen", "127.0.0.1:0"])
        .kill_on_drop(true);
    command.spawn().with_context(|| format!("start qupia-{name}"))
}

/// The last lines of a service's log, to say why it did not start. The services never
/// log personal data, and none has been sent yet.
fn log_tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

impl Suite {
    /// Creates the PKI and the keys (a keyring file or a SoftHSM2 token) in `dir` and
    /// starts the vault and the gateway on `databases`, as `plan` says.
    pub async fn start(
        dir: &Path,
        binaries: &(PathBuf, PathBuf),
        databases: &Databases,
        plan: &Plan,
    ) -> anyhow::Result<Suite> {
        issue_certificates(dir)?;
        let pool_size = plan.pool_size;

        let vault_port = free_port()?;
        let mut vault = Command::new(&binaries.0);
        vault
            .args(["--listen", &format!("127.0.0.1:{vault_port}")])
            .args(["--database-url", &databases.vault.url])
            .args(["--max-connections", &pool_size.to_string()])
            .args(["--dek-cache-capacity", &plan.dek_cache.to_string()])
            // The rewrap job's rate limit lifted: the run measures what the job can do.
            .args(["--rewrap-rate", "1000000000"]);
        match plan.key_provider {
            KeyProvider::Keyring => {
                let keyring = dir.join("keyring.json");
                // Created here (mode 0600, KEK version 1, blind-index key version 1) so
                // that the run owns its keys from the start; the vault loads it.
                qupia_crypto::Keyring::load_or_create(&keyring).context("create the keyring")?;
                vault.arg("--keyring").arg(&keyring);
            }
            KeyProvider::Pkcs11 => softhsm_token(dir, &mut vault)?,
        }
        tls_args(&mut vault, &tls_files(dir, "vault"));
        let vault = spawn(vault, dir, "vault")?;

        let gateway_port = free_port()?;
        let mut gateway = Command::new(&binaries.1);
        gateway
            .args(["--listen", &format!("127.0.0.1:{gateway_port}")])
            .args(["--database-url", &databases.gateway.url])
            .args(["--max-connections", &pool_size.to_string()])
            .args(["--vault-addr", &format!("127.0.0.1:{vault_port}")])
            // The benchmark is one caller doing the work of many: the per-caller rate
            // limit would measure itself.
            .args(["--rate-per-second", "1000000", "--rate-burst", "1000000"]);
        tls_args(&mut gateway, &tls_files(dir, "gateway"));
        let gateway = spawn(gateway, dir, "gateway")?;

        let vault_pid = vault.id().and_then(|id| i32::try_from(id).ok()).context("the vault has no pid")?;
        let gateway_pid = gateway.id().and_then(|id| i32::try_from(id).ok()).context("the gateway has no pid")?;
        let mut processes = Processes { vault, gateway, dir: dir.to_owned() };
        let accounts = processes.connect(gateway_port, "accounts").await?;
        let marketing = processes.connect(gateway_port, "marketing").await?;
        let qupiactl = processes.connect(gateway_port, "qupiactl").await?;
        Ok(Suite { processes, vault_pid, gateway_pid, accounts, marketing, qupiactl })
    }

    /// Fails, with the end of its log, if either service has stopped.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.processes.ensure_running()
    }

    /// Stops both services.
    pub async fn stop(mut self) {
        for child in [&mut self.processes.gateway, &mut self.processes.vault] {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

impl Processes {
    /// An mTLS channel to the gateway as `identity`, once the gateway (and so the vault
    /// behind it) accepts connections.
    async fn connect(&mut self, gateway_port: u16, identity: &str) -> anyhow::Result<Channel> {
        let tls = tls_files(&self.dir, identity).client_config("gateway")?;
        let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{gateway_port}"))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            self.ensure_running()?;
            match endpoint.connect().await {
                Ok(channel) => return Ok(channel),
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    return Err(err).context("the gateway did not accept connections in time");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Fails, with the end of its log, if either service has stopped.
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        for (child, name) in [(&mut self.vault, "vault"), (&mut self.gateway, "gateway")] {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("qupia-{name} stopped ({status}); the end of its log:\n{}", log_tail(&self.dir, name));
            }
        }
        Ok(())
    }
}
