//! Key administration in the vault: the lifecycle of KEK versions (rotate, minimum
//! decryption version, retire, destroy), of blind-index keys (rotate, remove), the
//! encryption counter, and the cryptographic steps of the rewrap and reindex jobs.
//!
//! Every call this code makes to the key provider is in this module, behind [`Keys`].
//! Every key operation is written to the access log, naming the identity that asked,
//! before the change is made (fail-closed: no change without its entry); a refusal is
//! recorded as a denied entry.
//!
//! Consistency with concurrent writes: tokenize and rectify hold the read side of
//! [`KeyLifecycle::write_gate`] from the moment they take a key snapshot until they
//! commit. Retiring a KEK version and removing a blind-index key take the write side
//! for their final check, so no write still holding an old key can commit after the
//! check found nothing depending on it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use qupia_audit::{NewEntry, Operation, Outcome};
use qupia_crypto::{BlindIndexKey, DataKey, KeyState, WrappedKey, slot_aad};
use qupia_domain::{Email, Field};
use tokio::sync::{RwLock, watch};

use crate::Error;
use crate::dek_cache::DekCache;
use crate::key_jobs::Jobs;
use crate::key_store::{DekRow, JobKind, JobRecord, ReindexEntry, ReindexRow, Rewrapped};
use crate::store::Store;

/// The key store as the vault holds it: the keyring file or a PKCS#11 token.
pub type Keys = dyn qupia_crypto::KeyStore;

/// The tunables of key administration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLifecycleOptions {
    /// Data keys rewrapped per second at most; a request may lower it.
    pub rewrap_rate_per_second: u32,
    /// People reindexed per second at most; a request may lower it.
    pub reindex_rate_per_second: u32,
    /// People per job transaction.
    pub job_batch_size: u32,
    /// Encryptions under one KEK version at which the alarm is raised (NIST SP 800-38D
    /// allows 2^32 with random 96-bit nonces; the default, 2^30, leaves room to rotate).
    pub encryption_alarm_threshold: u64,
    /// How often counted encryptions are written to the database; a crash loses at most
    /// this long's counts.
    pub encryption_flush_interval: Duration,
    /// Unwrapped data keys remembered (0: none); see `dek_cache.rs`.
    pub dek_cache_capacity: usize,
    /// How long an unwrapped data key is remembered after its unwrap.
    pub dek_cache_ttl: Duration,
}

impl Default for KeyLifecycleOptions {
    fn default() -> KeyLifecycleOptions {
        KeyLifecycleOptions {
            rewrap_rate_per_second: 50_000,
            reindex_rate_per_second: 20_000,
            job_batch_size: 500,
            encryption_alarm_threshold: 1 << 30,
            encryption_flush_interval: Duration::from_secs(5),
            dek_cache_capacity: DekCache::DEFAULT_CAPACITY,
            dek_cache_ttl: DekCache::DEFAULT_TTL,
        }
    }
}

/// What the request paths and key administration share.
#[derive(Debug)]
pub struct KeyLifecycle {
    /// Writes hold the read side from key snapshot to commit; see the module doc.
    pub write_gate: RwLock<()>,
    /// Data keys under older KEK versions are refused (except by the rewrap job).
    pub min_decrypt_version: AtomicU32,
    pub counter: EncryptionCounter,
    /// Unwrapped data keys of the request paths; every key change invalidates them.
    pub deks: DekCache,
}

impl KeyLifecycle {
    pub fn new(min_decrypt_version: u32, counter: EncryptionCounter, deks: DekCache) -> KeyLifecycle {
        KeyLifecycle {
            write_gate: RwLock::new(()),
            min_decrypt_version: AtomicU32::new(min_decrypt_version),
            counter,
            deks,
        }
    }

    pub fn min_decrypt_version(&self) -> u32 {
        self.min_decrypt_version.load(Ordering::Acquire)
    }
}

impl Default for KeyLifecycle {
    fn default() -> KeyLifecycle {
        KeyLifecycle::new(
            0,
            EncryptionCounter::new(BTreeMap::new(), 1 << 30, qupia_ops::Metrics::default()),
            DekCache::default(),
        )
    }
}

/// Wraps per KEK version: counted in memory on every wrap, added to the database by
/// [`EncryptionCounter::flush`] (periodically and at shutdown), so that no request
/// updates a hot row. A crash loses the counts since the last flush: at most one flush
/// interval of wraps, far below the margin between the alarm and the 2^32 limit.
#[derive(Debug)]
pub struct EncryptionCounter {
    counts: Mutex<Counts>,
    threshold: u64,
    metrics: qupia_ops::Metrics,
}

#[derive(Debug, Default)]
struct Counts {
    /// In the database as of the last flush.
    flushed: BTreeMap<u32, u64>,
    /// Since the last flush.
    pending: BTreeMap<u32, u64>,
    /// Versions whose alarm has been raised (and logged) by this process.
    alarmed: BTreeSet<u32>,
}

impl EncryptionCounter {
    pub fn new(flushed: BTreeMap<u32, u64>, threshold: u64, metrics: qupia_ops::Metrics) -> EncryptionCounter {
        let counter = EncryptionCounter {
            counts: Mutex::new(Counts { flushed, ..Counts::default() }),
            threshold: threshold.max(1),
            metrics,
        };
        let totals = counter.totals();
        for (version, total) in totals {
            counter.observe(version, total);
        }
        counter
    }

    /// Counts one wrap under `version`.
    pub fn count(&self, version: u32) {
        let total = {
            let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
            let pending = counts.pending.entry(version).or_default();
            *pending += 1;
            let pending = *pending;
            pending + counts.flushed.get(&version).copied().unwrap_or(0)
        };
        if total >= self.threshold {
            self.observe(version, total);
        }
    }

    /// Raises the alarm of `version` once `total` reaches the threshold, and updates the
    /// metrics.
    fn observe(&self, version: u32, total: u64) {
        self.metrics.set_kek_encryptions(version, total);
        if total < self.threshold {
            return;
        }
        let first = self.counts.lock().unwrap_or_else(PoisonError::into_inner).alarmed.insert(version);
        if first {
            self.metrics.set_kek_encryption_alarm(version, true);
            tracing::warn!(
                kek_version = version,
                encryptions = total,
                threshold = self.threshold,
                "kek version reached its encryption alarm threshold: rotate the kek"
            );
        }
    }

    /// Flushed plus pending encryptions per version.
    pub fn totals(&self) -> BTreeMap<u32, u64> {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut totals = counts.flushed.clone();
        for (version, pending) in &counts.pending {
            *totals.entry(*version).or_default() += pending;
        }
        totals
    }

    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    pub fn alarmed(&self, total: u64) -> bool {
        total >= self.threshold
    }

    /// Adds the pending counts to the database. On failure they stay pending for the
    /// next flush.
    pub async fn flush(&self, store: &Store) -> Result<(), sqlx::Error> {
        let pending = std::mem::take(&mut self.counts.lock().unwrap_or_else(PoisonError::into_inner).pending);
        if pending.is_empty() {
            return Ok(());
        }
        match store.add_encryptions(&pending).await {
            Ok(()) => {
                let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
                for (version, added) in &pending {
                    *counts.flushed.entry(*version).or_default() += added;
                }
                drop(counts);
                for (version, total) in self.totals() {
                    self.metrics.set_kek_encryptions(version, total);
                }
                Ok(())
            }
            Err(err) => {
                let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
                for (version, added) in pending {
                    *counts.pending.entry(version).or_default() += added;
                }
                Err(err)
            }
        }
    }
}

/// One KEK version in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekStatus {
    pub version: u32,
    /// `None` for a version that data keys name but the provider no longer holds
    /// (destroyed, seen in a database restored from an older backup).
    pub state: Option<KeyState>,
    pub wrapped_deks: u64,
    pub encryptions: u64,
    pub alarm: bool,
}

/// One blind-index key version in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKeyStatus {
    pub version: u32,
    pub current: bool,
    pub entries: u64,
}

/// What `GetKeyStatus` reports.
#[derive(Debug, Clone)]
pub struct KeyStatus {
    pub provider: &'static str,
    pub keks: Vec<KekStatus>,
    pub min_decrypt_version: u32,
    pub deks_below_min: u64,
    pub index_keys: Vec<IndexKeyStatus>,
    pub jobs: Vec<JobRecord>,
    pub alarm_threshold: u64,
}

/// Key administration: the provider, the store and the shared lifecycle state.
#[derive(Debug, Clone)]
pub struct KeyAdmin {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    keys: Arc<Keys>,
    pub(crate) store: Store,
    pub(crate) lifecycle: Arc<KeyLifecycle>,
    pub(crate) options: KeyLifecycleOptions,
    pub(crate) metrics: qupia_ops::Metrics,
    /// One key change at a time: checks and the change they guard never interleave.
    admin: tokio::sync::Mutex<()>,
    pub(crate) jobs: Jobs,
    /// Set at shutdown: jobs stop between batches and resume at the next start.
    pub(crate) stopping: watch::Sender<bool>,
}

/// The access-log entry of a key operation.
fn key_entry(requester: &str, operation: Operation, outcome: Outcome, reason: String) -> NewEntry {
    NewEntry {
        caller: requester.to_owned(),
        operation: operation.as_str().to_owned(),
        outcome,
        reason,
        trace_id: qupia_telemetry::current_trace_id(),
        ..NewEntry::default()
    }
}

/// A provider error of an administrative call, as the caller should read it.
fn admin_error(err: qupia_crypto::Error) -> Error {
    match err {
        qupia_crypto::Error::UnknownKeyVersion(_) => Error::NotFound("key version"),
        qupia_crypto::Error::KeyVersionNotUsable { version, state } => {
            Error::KeyLifecycle(format!("key version {version} is {state}, which does not allow this"))
        }
        other => Error::from(other),
    }
}

impl KeyAdmin {
    pub fn new(
        keys: Arc<Keys>,
        store: Store,
        lifecycle: Arc<KeyLifecycle>,
        options: KeyLifecycleOptions,
        metrics: qupia_ops::Metrics,
    ) -> KeyAdmin {
        let admin = KeyAdmin {
            inner: Arc::new(Inner {
                keys,
                store,
                lifecycle,
                options,
                metrics,
                admin: tokio::sync::Mutex::new(()),
                jobs: Jobs::default(),
                stopping: watch::Sender::new(false),
            }),
        };
        admin.publish_key_versions();
        admin
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Runs a key change off the async runtime: the keyring file is written and synced.
    async fn change<T: Send + 'static>(
        &self,
        edit: impl FnOnce(&Keys) -> Result<T, qupia_crypto::Error> + Send + 'static,
    ) -> Result<T, Error> {
        let keys = Arc::clone(&self.inner.keys);
        let outcome = tokio::task::spawn_blocking(move || edit(keys.as_ref()))
            .await
            .map_err(|_| Error::Keys(qupia_crypto::Error::Keyring("the key change did not complete".into())))?;
        // Whatever changed, no key unwrapped before it is used after it.
        self.inner.lifecycle.deks.invalidate();
        self.publish_key_versions();
        outcome.map_err(admin_error)
    }

    fn publish_key_versions(&self) {
        let states = self.inner.keys.versions().into_iter().map(|(_, state)| key_state_label(state));
        self.inner.metrics.set_key_versions(states);
    }

    /// Appends a key operation's entry; refusals are recorded on a best-effort basis
    /// (the refusal stands whether or not it was recorded).
    async fn record(&self, entry: NewEntry) -> Result<(), Error> {
        let outcome = entry.outcome;
        match self.inner.store.audit_ledger().append(std::slice::from_ref(&entry)).await {
            Ok(_) => Ok(()),
            Err(err) if outcome == Outcome::Denied => {
                tracing::warn!(error = %err, operation = %entry.operation, "could not record a refused key operation");
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Records a refusal and returns it.
    async fn refuse(&self, requester: &str, operation: Operation, reason: String) -> Error {
        let _ = self.record(key_entry(requester, operation, Outcome::Denied, format!("refused: {reason}"))).await;
        Error::KeyLifecycle(reason)
    }

    pub async fn status(&self) -> Result<KeyStatus, Error> {
        let store = &self.inner.store;
        let deks = store.deks_per_version().await?;
        let encryptions = self.inner.lifecycle.counter.totals();
        let threshold = self.inner.lifecycle.counter.threshold();
        let mut keks: Vec<KekStatus> = self
            .inner
            .keys
            .versions()
            .into_iter()
            .map(|(version, state)| {
                let encryptions = encryptions.get(&version).copied().unwrap_or(0);
                KekStatus {
                    version,
                    state: Some(state),
                    wrapped_deks: deks.get(&version).copied().unwrap_or(0),
                    encryptions,
                    alarm: encryptions >= threshold,
                }
            })
            .collect();
        for (version, count) in &deks {
            if !keks.iter().any(|k| k.version == *version) {
                keks.push(KekStatus {
                    version: *version,
                    state: None,
                    wrapped_deks: *count,
                    encryptions: 0,
                    alarm: false,
                });
            }
        }
        keks.sort_by_key(|k| std::cmp::Reverse(k.version));
        let min = self.inner.lifecycle.min_decrypt_version();
        let deks_below_min = deks.range(..min).map(|(_, n)| n).sum();
        let entries = store.index_entries_per_version().await?;
        let index_keys: Vec<BlindIndexKeyVersion> =
            self.inner.keys.blind_index_keys().iter().map(|key| key.version()).collect();
        let current = index_keys.first().copied().unwrap_or(0);
        let index_keys = index_keys
            .into_iter()
            .map(|version| IndexKeyStatus {
                version,
                current: version == current,
                entries: entries.get(&version).copied().unwrap_or(0),
            })
            .collect();
        let mut jobs = Vec::new();
        for kind in JobKind::ALL {
            if let Some(job) = self.job_progress(kind).await? {
                jobs.push(job);
            }
        }
        Ok(KeyStatus {
            provider: self.inner.keys.name(),
            keks,
            min_decrypt_version: min,
            deks_below_min,
            index_keys,
            jobs,
            alarm_threshold: threshold,
        })
    }

    /// A job's live progress, or its stored record when it is not running here.
    async fn job_progress(&self, kind: JobKind) -> Result<Option<JobRecord>, Error> {
        if let Some(live) = self.inner.jobs.slot(kind).latest() {
            return Ok(Some(live));
        }
        Ok(self.inner.store.job(kind).await?)
    }

    /// Makes a new KEK version active. Returns (new active, previous active).
    pub async fn rotate_kek(&self, requester: &str) -> Result<(u32, u32), Error> {
        let _admin = self.inner.admin.lock().await;
        let previous = self.inner.keys.current_version();
        self.record(key_entry(
            requester,
            Operation::KeyRotate,
            Outcome::Allowed,
            format!("rotating the kek: version {previous} becomes decrypt-only, a new version takes every new wrap"),
        ))
        .await?;
        let active = self.change(|keys| keys.rotate_kek()).await?;
        tracing::info!(kek_version = active, previous, "kek rotated");
        Ok((active, previous))
    }

    /// Sets the minimum decryption version. Returns how many data keys it refuses.
    pub async fn set_min_decrypt_version(&self, requester: &str, version: u32) -> Result<u64, Error> {
        let _admin = self.inner.admin.lock().await;
        let active = self.inner.keys.current_version();
        if version > active {
            return Err(Error::invalid("version", format!("is newer than the active kek version {active}")));
        }
        let below: u64 = self.inner.store.deks_per_version().await?.range(..version).map(|(_, n)| n).sum();
        let previous = self.inner.lifecycle.min_decrypt_version();
        let entry = key_entry(
            requester,
            Operation::KeyMinDecryptVersion,
            Outcome::Allowed,
            format!(
                "minimum decryption version {previous} -> {version}; {below} data keys under older versions \
                 are refused until rewrapped"
            ),
        );
        self.inner.store.set_min_decrypt_version(version, &entry).await?;
        self.inner.lifecycle.min_decrypt_version.store(version, Ordering::Release);
        tracing::info!(min_decrypt_version = version, refused_deks = below, "minimum decryption version set");
        Ok(below)
    }

    /// Retires a KEK version once no data key depends on it.
    pub async fn retire_kek(&self, requester: &str, version: u32) -> Result<(), Error> {
        let _admin = self.inner.admin.lock().await;
        let state = self.kek_state(version)?;
        match state {
            KeyState::Retired => return Ok(()),
            KeyState::Active => {
                let reason = format!("kek version {version} is active: rotate the kek before retiring it");
                return Err(self.refuse(requester, Operation::KeyRetire, reason).await);
            }
            KeyState::DecryptOnly => {}
        }
        // No write holding a data key wrapped under an older version may commit after
        // this count: retiring would strand it.
        let _gate = self.inner.lifecycle.write_gate.write().await;
        let depending = self.inner.store.deks_under(version).await?;
        if depending > 0 {
            let reason =
                format!("{depending} data keys still depend on kek version {version}: rewrap them before retiring it");
            return Err(self.refuse(requester, Operation::KeyRetire, reason).await);
        }
        self.record(key_entry(
            requester,
            Operation::KeyRetire,
            Outcome::Allowed,
            format!("retiring kek version {version}: no data key depends on it"),
        ))
        .await?;
        self.change(move |keys| keys.set_kek_state(version, KeyState::Retired)).await?;
        tracing::info!(kek_version = version, "kek version retired");
        Ok(())
    }

    /// Destroys a retired KEK version.
    pub async fn destroy_kek(&self, requester: &str, version: u32) -> Result<(), Error> {
        let _admin = self.inner.admin.lock().await;
        let state = self.kek_state(version)?;
        if state != KeyState::Retired {
            let reason = format!("kek version {version} is {state}: retire it before destroying it");
            return Err(self.refuse(requester, Operation::KeyDestroy, reason).await);
        }
        let depending = self.inner.store.deks_under(version).await?;
        if depending > 0 {
            let reason = format!(
                "{depending} data keys in this database are wrapped under retired kek version {version}; \
                 destroying it would make them unreadable"
            );
            return Err(self.refuse(requester, Operation::KeyDestroy, reason).await);
        }
        self.record(key_entry(
            requester,
            Operation::KeyDestroy,
            Outcome::Allowed,
            format!("destroying retired kek version {version}: copies of data keys wrapped under it become unreadable"),
        ))
        .await?;
        self.change(move |keys| keys.destroy_kek(version)).await?;
        tracing::info!(kek_version = version, "kek version destroyed");
        Ok(())
    }

    fn kek_state(&self, version: u32) -> Result<KeyState, Error> {
        self.inner
            .keys
            .versions()
            .into_iter()
            .find(|(v, _)| *v == version)
            .map(|(_, state)| state)
            .ok_or(Error::NotFound("kek version"))
    }

    /// Makes a new blind-index key version current. Only one older version may be in
    /// use at a time, so a lookup consults at most two.
    pub async fn rotate_index_key(&self, requester: &str) -> Result<u32, Error> {
        let _admin = self.inner.admin.lock().await;
        let versions: Vec<u32> = self.inner.keys.blind_index_keys().iter().map(|k| k.version()).collect();
        if let Some(old) = versions.get(1) {
            let reason =
                format!("blind-index key version {old} is still in use: reindex and remove it before rotating again");
            return Err(self.refuse(requester, Operation::IndexKeyRotate, reason).await);
        }
        let previous = versions.first().copied().unwrap_or(0);
        self.record(key_entry(
            requester,
            Operation::IndexKeyRotate,
            Outcome::Allowed,
            format!("rotating the blind-index key: version {previous} stays for lookups until reindexed"),
        ))
        .await?;
        let current = self.change(|keys| keys.rotate_blind_index_key()).await?;
        tracing::info!(index_key_version = current, "blind-index key rotated");
        Ok(current)
    }

    /// Removes an old blind-index key version and its entries, once every entry under
    /// it has a counterpart under the current version. Returns the entries deleted.
    pub async fn remove_index_key(&self, requester: &str, version: u32) -> Result<u64, Error> {
        let _admin = self.inner.admin.lock().await;
        let held: Vec<u32> = self.inner.keys.blind_index_keys().iter().map(|k| k.version()).collect();
        let current = held.first().copied().unwrap_or(0);
        if version == current {
            let reason = format!("blind-index key version {version} is current and cannot be removed");
            return Err(self.refuse(requester, Operation::IndexKeyRemove, reason).await);
        }
        let entries = self.inner.store.index_entries_per_version().await?;
        if !held.contains(&version) && !entries.contains_key(&version) {
            return Err(Error::NotFound("blind-index key version"));
        }
        if self.inner.jobs.slot(JobKind::Reindex).is_running() {
            let reason = "a reindex job is running: wait for it to finish".to_owned();
            return Err(self.refuse(requester, Operation::IndexKeyRemove, reason).await);
        }
        {
            // No write holding the old key may commit after this check.
            let _gate = self.inner.lifecycle.write_gate.write().await;
            let missing = self.inner.store.index_entries_not_reindexed(version, current).await?;
            if missing > 0 {
                let reason = format!(
                    "{missing} blind-index entries under version {version} have none under version {current} yet: \
                     run reindex first"
                );
                return Err(self.refuse(requester, Operation::IndexKeyRemove, reason).await);
            }
            self.record(key_entry(
                requester,
                Operation::IndexKeyRemove,
                Outcome::Allowed,
                format!("removing blind-index key version {version}; version {current} holds every entry"),
            ))
            .await?;
            if held.contains(&version) {
                self.change(move |keys| keys.remove_blind_index_key(version)).await?;
            }
        }
        // Nothing reads or writes entries under the removed version any more.
        let deleted = self.inner.store.delete_index_version(version).await?;
        tracing::info!(index_key_version = version, entries_deleted = deleted, "blind-index key removed");
        Ok(deleted)
    }

    /// The access-log entry of a job event.
    pub(crate) fn job_entry(&self, job: &JobRecord, operation: Operation, reason: String) -> NewEntry {
        key_entry(&job.requested_by, operation, Outcome::Allowed, reason)
    }

    /// What a new job of `kind` moves to: the active KEK version, or the current
    /// blind-index key version.
    pub(crate) fn job_target(&self, kind: JobKind) -> u32 {
        match kind {
            JobKind::Rewrap => self.inner.keys.current_version(),
            JobKind::Reindex => self.inner.keys.blind_index_key().version(),
        }
    }

    /// Unwraps each data key under its version and wraps it under the active one,
    /// inside the vault. The rewrap job may unwrap below the minimum decryption version:
    /// it is the way out. Returns the rewrapped keys and how many could not be.
    pub(crate) fn rewrap(&self, rows: Vec<DekRow>) -> (Vec<Rewrapped>, u64) {
        let mut rewrapped = Vec::with_capacity(rows.len());
        let mut skipped = 0;
        for row in rows {
            let wrapped = WrappedKey { kek_version: row.kek_version, bytes: row.dek_wrapped };
            let dek = match self.inner.keys.unwrap(&wrapped, &row.person_id) {
                Ok(dek) => dek,
                Err(_) => {
                    skipped += 1;
                    continue;
                }
            };
            match self.inner.keys.wrap(&dek, &row.person_id) {
                Ok(new) => {
                    self.inner.lifecycle.counter.count(new.kek_version);
                    rewrapped.push(Rewrapped {
                        person_id: row.person_id,
                        old_version: row.kek_version,
                        old_wrapped: wrapped.bytes,
                        new_version: new.kek_version,
                        new_wrapped: new.bytes,
                    });
                }
                Err(_) => skipped += 1,
            }
        }
        (rewrapped, skipped)
    }

    /// The blind-index entries of each person under the current index key (if it is
    /// still `target`), computed from their decrypted e-mail and phone inside the
    /// vault. Returns the entries, the people done and the people that could not be.
    pub(crate) fn reindex(&self, rows: Vec<ReindexRow>, target: u32) -> (Vec<ReindexEntry>, u64, u64) {
        let key = self.inner.keys.blind_index_keys().into_iter().find(|k| k.version() == target);
        let Some(key) = key else { return (Vec::new(), 0, 0) };
        let mut entries = Vec::with_capacity(rows.len() * 2);
        let (mut done, mut skipped) = (0, 0);
        for row in rows {
            let wrapped = WrappedKey { kek_version: row.kek_version, bytes: row.dek_wrapped };
            let Ok(dek) = self.inner.keys.unwrap(&wrapped, &row.person_id) else {
                skipped += 1;
                continue;
            };
            let mut person_entries = Vec::with_capacity(2);
            let mut failed = false;
            for (field, ciphertext) in [(Field::Email, row.email), (Field::Phone, row.phone)] {
                let Some(ciphertext) = ciphertext else { continue };
                match index_digest(&dek, &key, &row.person_id, row.dek_version, field, &ciphertext) {
                    Some(digest) => {
                        person_entries.push(ReindexEntry { person_id: row.person_id, field, digest, ciphertext })
                    }
                    None => failed = true,
                }
            }
            if failed {
                skipped += 1;
            } else {
                done += 1;
                entries.extend(person_entries);
            }
        }
        (entries, done, skipped)
    }

    /// Becomes true at shutdown.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }

    /// Stops the jobs between batches; they resume at the next start.
    pub fn stop_jobs(&self) {
        self.inner.stopping.send_replace(true);
    }
}

/// A blind-index key version number, for the status.
type BlindIndexKeyVersion = u32;

/// The digest of one stored field under `key`, decrypted inside the vault; `None`
/// when the ciphertext fails its integrity check or does not hold a valid value.
fn index_digest(
    dek: &DataKey,
    key: &BlindIndexKey,
    person_id: &[u8; 16],
    dek_version: u32,
    field: Field,
    ciphertext: &[u8],
) -> Option<[u8; 32]> {
    let plaintext = dek.open(ciphertext, &slot_aad(person_id, field.as_str(), dek_version)).ok()?;
    let text = std::str::from_utf8(&plaintext).ok()?;
    match field {
        Field::Email => {
            let email = Email::parse(text).ok()?;
            Some(key.digest(field.as_str(), email.lookup_key().as_bytes()))
        }
        // Phones are stored in E.164, the form the index is computed from.
        _ => Some(key.digest(field.as_str(), text.as_bytes())),
    }
}

/// A key state as a metric label, spelled as in the keyring file.
pub fn key_state_label(state: KeyState) -> &'static str {
    match state {
        KeyState::Active => "active",
        KeyState::DecryptOnly => "decrypt_only",
        KeyState::Retired => "retired",
    }
}
