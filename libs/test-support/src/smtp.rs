//! A real SMTP server for tests: `aiosmtpd` (PyPI) as a child process on a free
//! loopback port, writing each message it receives as a JSON file the test reads.
//!
//! Only python3 and pip need be installed: when `python3 -c "import aiosmtpd"` fails,
//! a virtualenv under the cargo target directory gets the pinned version, once (a lock
//! file keeps parallel tests from installing it twice); without the `venv` module,
//! `pip install --target` into the same place does.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The aiosmtpd release the tests run against.
pub const AIOSMTPD_VERSION: &str = "1.4.6";

/// The server: accepts every message, parses it with Python's `email` package, and
/// writes `<n>.json` (envelope, headers, decoded body, raw text) atomically.
const SERVER: &str = r#"
import asyncio, email, email.policy, json, os, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
import logging
# aiosmtpd itself still sets the deprecated Session.login_data on every login, and
# warns about it in its own log.
logging.getLogger("mail.log").setLevel(logging.ERROR)

class Handler:
    def __init__(self, out):
        self.out = out
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        record = {
            "tls": session.ssl is not None,
            "login": session.auth_data.login.decode("utf-8", errors="replace")
                if isinstance(session.auth_data, LoginPassword) else "",
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message.get("From", "")),
            "to": str(message.get("To", "")),
            "subject": str(message.get("Subject", "")),
            # Line ends as written, not as SMTP carries them.
            "body": body.get_content().replace("\r\n", "\n") if body is not None else "",
            "raw": raw.decode("utf-8", errors="replace"),
        }
        tmp = os.path.join(self.out, ".%06d.tmp" % self.count)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out, "%06d.json" % self.count))
        return "250 Message accepted for delivery"

def authenticator(login, password):
    def check(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and data.login.decode() == login \
            and data.password.decode() == password
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)
    return check

async def main():
    handler = Handler(sys.argv[1])
    options = {"enable_SMTPUTF8": True}
    # argv: out-dir [cert key login password]: STARTTLS and AUTH both required.
    if len(sys.argv) > 2:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        options.update(tls_context=context, require_starttls=True, auth_required=True,
                       authenticator=authenticator(sys.argv[4], sys.argv[5]))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, **options), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Stop when the test closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"#;

/// One message the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Whether the session had switched to TLS (STARTTLS) before the message.
    pub tls: bool,
    /// The login the client authenticated with; empty without AUTH.
    pub login: String,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    /// The message as it came over the wire.
    pub raw: String,
}

/// A running aiosmtpd; stopped when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    /// Starts a plaintext server on a free port of 127.0.0.1.
    pub fn start() -> SmtpServer {
        Self::spawn(None)
    }

    /// Starts a server that requires STARTTLS, presenting `tls`'s certificate, and
    /// then AUTH with `login` and `password`.
    pub fn start_tls(tls: &qupia_transport::TlsFiles, login: &str, password: &str) -> SmtpServer {
        Self::spawn(Some((tls, login, password)))
    }

    fn spawn(secured: Option<(&qupia_transport::TlsFiles, &str, &str)>) -> SmtpServer {
        let python = python_with_aiosmtpd();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(&python.interpreter);
        command.arg("-c").arg(SERVER).arg(dir.path());
        if let Some((tls, login, password)) = secured {
            command.arg(&tls.cert).arg(&tls.key).arg(login).arg(password);
        }
        if let Some(path) = &python.pythonpath {
            command.env("PYTHONPATH", path);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the aiosmtpd server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the SMTP server's port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the SMTP server did not start (it printed {line:?})")
        });
        SmtpServer { port, dir, child }
    }

    /// Every message received so far, in the order received.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read the mail directory")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).expect("read a received message");
                let value: serde_json::Value = serde_json::from_str(&text).expect("a JSON message record");
                let text_of = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
                ReceivedMail {
                    tls: value["tls"].as_bool().unwrap_or(false),
                    login: text_of("login"),
                    mail_from: text_of("mail_from"),
                    rcpt_tos: value["rcpt_tos"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default(),
                    from: text_of("from"),
                    to: text_of("to"),
                    subject: text_of("subject"),
                    body: text_of("body"),
                    raw: text_of("raw"),
                }
            })
            .collect()
    }

    /// Waits until at least `n` messages have arrived or `timeout` passes; returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || tokio::time::Instant::now() >= deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python that can import aiosmtpd.
#[derive(Debug, Clone)]
struct Python {
    interpreter: PathBuf,
    pythonpath: Option<PathBuf>,
}

fn imports_aiosmtpd(interpreter: &Path, pythonpath: Option<&Path>) -> bool {
    let mut command = Command::new(interpreter);
    command.args(["-c", "import aiosmtpd"]).stdout(Stdio::null()).stderr(Stdio::null());
    if let Some(path) = pythonpath {
        command.env("PYTHONPATH", path);
    }
    command.status().is_ok_and(|status| status.success())
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else the workspace's `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

fn python_with_aiosmtpd() -> Python {
    static FOUND: std::sync::OnceLock<Python> = std::sync::OnceLock::new();
    FOUND.get_or_init(find_or_install).clone()
}

fn find_or_install() -> Python {
    let system = PathBuf::from("python3");
    if imports_aiosmtpd(&system, None) {
        return Python { interpreter: system, pythonpath: None };
    }
    let root = target_dir();
    std::fs::create_dir_all(&root).expect("create the target directory");
    let venv = root.join("test-venv");
    let packages = root.join("test-pylib");
    let candidates = || {
        [
            Python { interpreter: venv.join("bin/python3"), pythonpath: None },
            Python { interpreter: system.clone(), pythonpath: Some(packages.clone()) },
        ]
    };
    let usable = |python: &Python| imports_aiosmtpd(&python.interpreter, python.pythonpath.as_deref());
    // One installer at a time across test processes; the others wait, then find it.
    let _lock = InstallLock::acquire(&root.join("test-venv.lock"));
    if let Some(python) = candidates().into_iter().find(usable) {
        return python;
    }
    let requirement = format!("aiosmtpd=={AIOSMTPD_VERSION}");
    let created = Command::new(&system).args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
    if created {
        let installed = Command::new(venv.join("bin/python3"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", &requirement])
            .status()
            .is_ok_and(|s| s.success());
        assert!(installed, "pip install {requirement} into {} failed", venv.display());
    } else {
        // No venv module (Debian without python3-venv): a plain package directory.
        let installed = Command::new(&system)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
            .arg(&packages)
            .arg(&requirement)
            .status()
            .is_ok_and(|s| s.success());
        assert!(installed, "pip install --target {} {requirement} failed", packages.display());
    }
    candidates().into_iter().find(usable).expect("aiosmtpd imports after installing it")
}

/// An exclusive lock held by creating a file no one else may create; removed on drop.
/// A lock older than ten minutes is taken to be left by a killed process.
struct InstallLock(PathBuf);

impl InstallLock {
    fn acquire(path: &Path) -> InstallLock {
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut file) => {
                    let _ = writeln!(file, "{}", std::process::id());
                    return InstallLock(path.to_owned());
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = File::open(path)
                        .and_then(|f| f.metadata())
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(600)));
                    if stale {
                        let _ = std::fs::remove_file(path);
                    } else {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                Err(err) => panic!("create the install lock {}: {err}", path.display()),
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
