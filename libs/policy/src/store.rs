//! The live policy of a running gateway, reloadable without a restart.
//!
//! A new policy replaces the old one only once it has parsed and validated; until then
//! every decision is made by the previous version. A gateway therefore never runs
//! without a valid policy, and a bad edit to the ConfigMap is logged, not enforced.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::{Policy, PolicyError};

/// The current [`Policy`], swapped atomically on reload.
pub struct PolicyStore {
    path: Option<PathBuf>,
    /// Readers clone the `Arc` and let go of the lock at once; a reload parses outside
    /// the lock and holds it only to swap the pointer, so readers never wait on a parse.
    current: RwLock<Arc<Policy>>,
    /// Serialises reloads, so that a slow reload of older contents can't overwrite a
    /// newer policy swapped in meanwhile.
    reloading: Mutex<()>,
}

impl PolicyStore {
    /// Loads the policy file at `path`, or the embedded default policy for `None`. A
    /// file that can't be read or doesn't validate is an error, so that the gateway
    /// refuses to start rather than run with a policy nobody wrote.
    pub fn load(path: Option<&Path>) -> Result<PolicyStore, PolicyError> {
        let policy = match path {
            None => Policy::default_policy(),
            Some(path) => Policy::parse(&read(path)?, &path.display().to_string())?,
        };
        tracing::info!(
            origin = %origin(path),
            hash = %policy.hash_hex(),
            "purpose policy loaded"
        );
        Ok(PolicyStore {
            path: path.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(policy)),
            reloading: Mutex::new(()),
        })
    }

    /// The policy in force. Cheap: one `Arc` clone.
    pub fn current(&self) -> Arc<Policy> {
        // A poisoned lock still holds a valid policy: the only writer assigns an `Arc`,
        // which can't leave it half-written.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Re-reads the file. On success the new policy takes over and the result says
    /// whether the text changed; on error the previous policy stays in force and the
    /// error is logged and returned. Without a file (the default policy) there is
    /// nothing to reload.
    pub fn reload(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(PoisonError::into_inner);
        let text = read(path).map_err(refused)?;
        if self.current().text() == text {
            return Ok(false);
        }
        let policy = Policy::parse(&text, &path.display().to_string()).map_err(refused)?;
        tracing::info!(
            origin = %path.display(),
            hash = %policy.hash_hex(),
            "purpose policy reloaded"
        );
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
        Ok(true)
    }

    /// Spawns a task that reloads on SIGHUP (on unix) and whenever the file's contents
    /// change, polling every `interval`. Contents are compared by hash rather than by
    /// modification time, which is what survives a Kubernetes ConfigMap update (an
    /// atomic symlink swap that leaves the old file's timestamps in place).
    ///
    /// The task stops when the handle is aborted or when the store is dropped (it holds
    /// the store only weakly). Dropping the handle alone detaches the task, as with any
    /// tokio task.
    pub fn spawn_reloader(self: Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let store = Arc::downgrade(&self);
        let seen = self.current().hash_hex();
        drop(self);
        tokio::spawn(watch(store, interval, seen))
    }
}

impl fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyStore").field("path", &self.path).field("current", &self.current()).finish()
    }
}

/// The reloader's loop. `seen` is the hash of the contents last acted on, valid or not,
/// so that a broken file is reported once rather than on every poll.
async fn watch(store: Weak<PolicyStore>, interval: Duration, mut seen: String) {
    let mut hangup = Hangup::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut read_failed = false;
    loop {
        let signalled = tokio::select! {
            _ = ticker.tick() => false,
            () = hangup.recv() => true,
        };
        let Some(store) = store.upgrade() else {
            return;
        };
        let Some(path) = store.path.clone() else {
            // The embedded default can't change; only a SIGHUP log line is useful.
            if signalled {
                tracing::info!("SIGHUP received; the embedded default policy has no file to reload");
            }
            continue;
        };
        if signalled {
            // An explicit request: re-read now, whatever the last poll saw.
            let _ = store.reload();
            continue;
        }
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(source) => {
                // During a ConfigMap swap the file can vanish briefly; say so once.
                if !read_failed {
                    tracing::warn!(
                        path = %path.display(),
                        error = %source,
                        "purpose policy file unreadable; keeping the current policy"
                    );
                }
                read_failed = true;
                continue;
            }
        };
        read_failed = false;
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        if hash != seen {
            seen = hash;
            // Reload re-reads the file under its lock; should it have changed again in
            // between, the next poll sees a new hash and reloads once more. Errors are
            // logged inside, and the previous policy stays in force.
            let _ = store.reload();
        }
    }
}

/// Logs a refused reload; this is where the error is handled, since the gateway goes on
/// with the previous policy.
fn refused(err: PolicyError) -> PolicyError {
    tracing::error!(error = %err, "purpose policy not reloaded; the previous version stays in force");
    err
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: path.to_path_buf(), source })
}

fn origin(path: Option<&Path>) -> String {
    path.map_or_else(|| "default".to_owned(), |path| path.display().to_string())
}

/// SIGHUP as a stream, where the platform has it.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Hangup {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|err| {
                    tracing::warn!(error = %err, "cannot listen for SIGHUP; reloading on file changes only");
                })
                .ok();
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    /// Resolves on the next SIGHUP; never, where there is none.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            // The signal stream ended; stop listening rather than spin.
            self.signal = None;
        }
        std::future::pending::<()>().await
    }
}
