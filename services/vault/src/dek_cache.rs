//! Unwrapped data keys, kept for a short while so that a person read again soon costs no
//! second unwrap. With a PKCS#11 provider an unwrap is a call into the HSM; with the
//! keyring file it is one AES-GCM decryption.
//!
//! What the cache may never do is answer for a key the provider would now refuse, or
//! keep an erased person's key. So:
//! - an entry is used only for the very wrapped key it was unwrapped from (same KEK
//!   version, same bytes, same person), so a rewrap or a rectification that changes the
//!   stored key simply misses;
//! - every key change (rotation, retirement, destruction) starts a new generation, and
//!   entries of an older one are never used; an unwrap that raced with the change is
//!   tagged with the generation read before it began, so it cannot slip into the new one;
//! - an erasure forgets the person at once (a read that fetched the person just before
//!   the erasure may put the key back, where nothing can use it: its wrapped form is
//!   gone from the database); entries also expire after a time to live, so an
//!   unwrapped key stays in memory at most that long after its unwrap;
//! - the minimum decryption version is checked before the cache is asked.
//!
//! Keys are held as `Arc<DataKey>`: the bytes are zeroized when the last holder (the
//! cache or a request still using the key) drops it. A capacity of 0 turns it off.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use qupia_crypto::{DataKey, WrappedKey};

/// One unwrapped key and what it was unwrapped from.
struct Cached {
    kek_version: u32,
    wrapped: Vec<u8>,
    generation: u64,
    unwrapped_at: Instant,
    key: Arc<DataKey>,
}

/// A bounded, expiring map from person id to that person's unwrapped data key.
pub struct DekCache {
    /// `None` when turned off.
    entries: Option<Cache<[u8; 16], Arc<Cached>>>,
    ttl: Duration,
    generation: AtomicU64,
}

impl DekCache {
    /// Keys remembered by default.
    pub const DEFAULT_CAPACITY: usize = 10_000;
    /// How long an unwrapped key is kept by default.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

    /// A cache of at most `capacity` keys, each used for at most `ttl` after its unwrap;
    /// `capacity` 0 or a zero `ttl` keeps nothing.
    pub fn new(capacity: usize, ttl: Duration) -> DekCache {
        let entries = (capacity > 0 && !ttl.is_zero()).then(|| Cache::new(capacity));
        DekCache { entries, ttl, generation: AtomicU64::new(0) }
    }

    /// Whether the cache keeps anything at all.
    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The generation an unwrap about to start belongs to; pass it to [`DekCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The key unwrapped from exactly `wrapped` for `person_id`, if it is remembered,
    /// of the current generation and not expired.
    pub fn get(&self, person_id: &[u8; 16], wrapped: &WrappedKey) -> Option<Arc<DataKey>> {
        let entries = self.entries.as_ref()?;
        let cached = entries.get(person_id)?;
        if cached.generation != self.generation() || cached.unwrapped_at.elapsed() >= self.ttl {
            entries.remove(person_id);
            return None;
        }
        (cached.kek_version == wrapped.kek_version && cached.wrapped == wrapped.bytes).then(|| Arc::clone(&cached.key))
    }

    /// Remembers `key`, unwrapped from `wrapped` for `person_id` by an unwrap that began
    /// in `generation`. Nothing is kept if the keys changed since.
    pub fn insert(&self, person_id: &[u8; 16], wrapped: WrappedKey, generation: u64, key: Arc<DataKey>) {
        let Some(entries) = &self.entries else { return };
        if generation != self.generation() {
            return;
        }
        let cached = Cached {
            kek_version: wrapped.kek_version,
            wrapped: wrapped.bytes,
            generation,
            unwrapped_at: Instant::now(),
            key,
        };
        entries.insert(*person_id, Arc::new(cached));
        // A key change between the check above and the insert is caught by `get`, which
        // compares the entry's generation again.
    }

    /// Forgets a person's key (on erasure).
    pub fn forget(&self, person_id: &[u8; 16]) {
        if let Some(entries) = &self.entries {
            entries.remove(person_id);
        }
    }

    /// Forgets every key and starts a new generation (on any key change).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = &self.entries {
            entries.clear();
        }
    }

    /// Keys held now (expired ones included until they are next asked for or evicted).
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |entries| entries.len())
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for DekCache {
    fn default() -> DekCache {
        DekCache::new(DekCache::DEFAULT_CAPACITY, DekCache::DEFAULT_TTL)
    }
}

impl std::fmt::Debug for DekCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: only how many there are.
        f.debug_struct("DekCache")
            .field("enabled", &self.enabled())
            .field("len", &self.len())
            .field("ttl", &self.ttl)
            .field("generation", &self.generation())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(version: u32, byte: u8) -> WrappedKey {
        WrappedKey { kek_version: version, bytes: vec![byte; 60] }
    }

    fn remember(cache: &DekCache, person: [u8; 16], key: &WrappedKey) -> Arc<DataKey> {
        let dek = Arc::new(DataKey::generate());
        cache.insert(&person, key.clone(), cache.generation(), Arc::clone(&dek));
        dek
    }

    #[test]
    fn a_key_is_given_back_only_for_the_wrapped_key_it_came_from() {
        let cache = DekCache::default();
        let person = [1; 16];
        let dek = remember(&cache, person, &wrapped(1, 7));
        assert!(Arc::ptr_eq(&cache.get(&person, &wrapped(1, 7)).expect("remembered"), &dek));
        // Rewrapped (another version) or changed (other bytes): not this entry.
        assert!(cache.get(&person, &wrapped(2, 7)).is_none());
        assert!(cache.get(&person, &wrapped(1, 8)).is_none());
        assert!(cache.get(&[2; 16], &wrapped(1, 7)).is_none());
    }

    #[test]
    fn a_key_change_makes_every_remembered_key_unusable() {
        let cache = DekCache::default();
        let person = [1; 16];
        remember(&cache, person, &wrapped(1, 7));
        cache.invalidate();
        assert!(cache.get(&person, &wrapped(1, 7)).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn an_unwrap_that_began_before_a_key_change_is_not_remembered() {
        let cache = DekCache::default();
        let person = [1; 16];
        let began = cache.generation();
        cache.invalidate();
        cache.insert(&person, wrapped(1, 7), began, Arc::new(DataKey::generate()));
        assert!(cache.get(&person, &wrapped(1, 7)).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn forgetting_a_person_drops_their_key() {
        let cache = DekCache::default();
        remember(&cache, [1; 16], &wrapped(1, 7));
        remember(&cache, [2; 16], &wrapped(1, 9));
        cache.forget(&[1; 16]);
        assert!(cache.get(&[1; 16], &wrapped(1, 7)).is_none());
        assert!(cache.get(&[2; 16], &wrapped(1, 9)).is_some(), "only that person is forgotten");
    }

    #[test]
    fn keys_expire_after_their_time_to_live() {
        let cache = DekCache::new(10, Duration::from_millis(30));
        remember(&cache, [1; 16], &wrapped(1, 7));
        assert!(cache.get(&[1; 16], &wrapped(1, 7)).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&[1; 16], &wrapped(1, 7)).is_none());
        assert!(cache.is_empty(), "an expired key is dropped when found");
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity_and_nothing_when_off() {
        let cache = DekCache::new(100, Duration::from_secs(60));
        for i in 0..1000u32 {
            let mut person = [0u8; 16];
            person[..4].copy_from_slice(&i.to_be_bytes());
            remember(&cache, person, &wrapped(1, 7));
        }
        assert!(cache.len() <= 100, "held {}", cache.len());

        for off in [DekCache::new(0, Duration::from_secs(60)), DekCache::new(10, Duration::ZERO)] {
            remember(&off, [1; 16], &wrapped(1, 7));
            assert!(!off.enabled());
            assert!(off.get(&[1; 16], &wrapped(1, 7)).is_none());
        }
    }

    #[test]
    fn debug_shows_no_key() {
        let cache = DekCache::default();
        remember(&cache, [1; 16], &wrapped(1, 7));
        let shown = format!("{cache:?}");
        assert!(shown.contains("len: 1"), "{shown}");
        assert!(!shown.contains("DataKey"), "{shown}");
    }
}
