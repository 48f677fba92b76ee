//! The keyring file: the first [`KeyProvider`], for development and small installations.
//!
//! It holds the key-encryption keys with their lifecycle states, the blind-index keys and
//! the token key in one JSON file readable by its owner only. The vault shares one
//! `Keyring` across all its tasks while an operator rotates keys through it, so the key
//! set sits behind a lock and every change is saved to disk before it takes effect: a
//! version that ever wrapped a DEK is always in the file.

mod file;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::dek::{KEY_LEN, open_with_key, seal_with_key};
use crate::provider::{check_lifecycle, dek_aad};
use crate::{BlindIndexKey, DataKey, Error, KeyProvider, KeyState, KeyStore, TokenKey, WrappedKey};

/// A keyring file and the keys loaded from it. Implements [`KeyProvider`].
///
/// The file has one writer: the process that loaded it. Administrative changes
/// ([`Keyring::rotate_kek`] and the rest) take `&self`, so they work on a keyring shared
/// as `Arc<Keyring>` or `Arc<dyn KeyProvider>` while wraps and unwraps go on.
pub struct Keyring {
    path: PathBuf,
    keys: RwLock<KeySet>,
    /// The token key never changes: every token ever issued depends on it.
    token_key: TokenKey,
    /// Serialises administrative changes, so two rotations never race to save the file;
    /// wraps and unwraps only take the read lock and are never held up by disk writes.
    admin: Mutex<()>,
}

/// The rotatable part of a keyring. Cloned, changed, saved, then swapped in whole, so
/// readers only ever see a set that is also on disk.
#[derive(Clone)]
struct KeySet {
    keks: BTreeMap<u32, Kek>,
    /// Newest first; the first is current.
    index_keys: Vec<Arc<BlindIndexKey>>,
}

#[derive(Clone)]
struct Kek {
    state: KeyState,
    key: Arc<Zeroizing<[u8; KEY_LEN]>>,
}

impl Kek {
    fn generate(state: KeyState) -> Kek {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(key.as_mut());
        Kek { state, key: Arc::new(key) }
    }
}

impl KeySet {
    fn initial() -> KeySet {
        KeySet {
            keks: BTreeMap::from([(1, Kek::generate(KeyState::Active))]),
            index_keys: vec![Arc::new(BlindIndexKey::generate(1))],
        }
    }

    /// The invariants every loaded or changed key set keeps.
    fn check(&self) -> Result<(), &'static str> {
        let keks: Vec<(u32, KeyState)> = self.keks.iter().map(|(version, kek)| (*version, kek.state)).collect();
        let index_versions: Vec<u32> = self.index_keys.iter().map(|key| key.version()).collect();
        check_lifecycle(&keks, &index_versions)
    }

    fn active(&self) -> (u32, &Kek) {
        self.keks
            .iter()
            .rev()
            .find(|(_, kek)| kek.state == KeyState::Active)
            .map(|(version, kek)| (*version, kek))
            .expect("a checked key set has exactly one active kek version")
    }

    fn current_index_key(&self) -> &Arc<BlindIndexKey> {
        self.index_keys.first().expect("a checked key set has a blind-index key")
    }
}

impl Keyring {
    /// Loads the keyring at `path`, or creates it with KEK version 1 active, blind-index
    /// key version 1 and a token key.
    ///
    /// A new file is created with mode 0600 from the start (never world-readable, even
    /// briefly), written completely and synced under a temporary name, then linked into
    /// place only if `path` still does not exist; if another process created it first,
    /// its keys are loaded instead, so two processes never end up with different keys.
    pub fn load_or_create(path: &Path) -> Result<Keyring, Error> {
        let exists = path.try_exists().map_err(|err| file::io_error("check", path, &err))?;
        if exists {
            return Keyring::load(path);
        }
        let keys = KeySet::initial();
        let token_key = TokenKey::generate();
        if file::create(path, &keys, &token_key)? {
            Ok(Keyring::from_parts(path, keys, token_key))
        } else {
            Keyring::load(path)
        }
    }

    /// Loads an existing keyring.
    ///
    /// Refuses a file that group or others may access (as ssh does for private keys), a
    /// format other than 1, and a key set that breaks the lifecycle rules (for example
    /// two active versions). Messages name the path, never a key.
    pub fn load(path: &Path) -> Result<Keyring, Error> {
        let (keys, token_key) = file::read(path)?;
        keys.check().map_err(|problem| Error::Keyring(format!("keyring {} {problem}", path.display())))?;
        Ok(Keyring::from_parts(path, keys, token_key))
    }

    fn from_parts(path: &Path, keys: KeySet, token_key: TokenKey) -> Keyring {
        Keyring { path: path.to_owned(), keys: RwLock::new(keys), token_key, admin: Mutex::new(()) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current blind-index key, for computing the index of a new value.
    pub fn blind_index_key(&self) -> Arc<BlindIndexKey> {
        Arc::clone(self.read_keys().current_index_key())
    }

    /// Every blind-index key, newest first: during an index-key rotation a lookup must
    /// consult all of them until every row is reindexed.
    pub fn blind_index_keys(&self) -> Vec<Arc<BlindIndexKey>> {
        self.read_keys().index_keys.clone()
    }

    pub fn token_key(&self) -> &TokenKey {
        &self.token_key
    }

    /// Adds a new KEK version, makes it active and the previous active one decrypt-only,
    /// and saves atomically. New wraps use the new version as soon as this returns; DEKs
    /// wrapped under older versions keep unwrapping. Returns the new version.
    pub fn rotate_kek(&self) -> Result<u32, Error> {
        self.change(|keys, path| {
            let (active, _) = keys.active();
            let version = active
                .checked_add(1)
                .ok_or_else(|| Error::Keyring(format!("keyring {} has no kek version left", path.display())))?;
            for kek in keys.keks.values_mut() {
                if kek.state == KeyState::Active {
                    kek.state = KeyState::DecryptOnly;
                }
            }
            keys.keks.insert(version, Kek::generate(KeyState::Active));
            Ok(version)
        })
    }

    /// Moves a non-active KEK version between decrypt-only and retired, and saves.
    ///
    /// Only [`Keyring::rotate_kek`] makes a version active (activating an older one would
    /// undo a rotation), and the active version can't be retired (new wraps would have no
    /// key; rotate first). Both refusals are [`Error::KeyVersionNotUsable`] naming the version's present state.
    pub fn set_kek_state(&self, version: u32, state: KeyState) -> Result<(), Error> {
        self.change(|keys, _| {
            let kek = keys.keks.get_mut(&version).ok_or(Error::UnknownKeyVersion(version))?;
            if kek.state == state {
                return Ok(());
            }
            if kek.state == KeyState::Active || state == KeyState::Active {
                return Err(Error::KeyVersionNotUsable { version, state: kek.state });
            }
            kek.state = state;
            Ok(())
        })
    }

    /// Removes a retired KEK version from the keyring for good (design invariant 7: DEKs
    /// wrapped only under it become unreadable). Refuses any version that is not retired,
    /// so destruction always follows a period in which unwraps under it were refused.
    pub fn destroy_kek(&self, version: u32) -> Result<(), Error> {
        self.change(|keys, _| {
            let kek = keys.keks.get(&version).ok_or(Error::UnknownKeyVersion(version))?;
            if kek.state != KeyState::Retired {
                return Err(Error::KeyVersionNotUsable { version, state: kek.state });
            }
            keys.keks.remove(&version);
            Ok(())
        })
    }

    /// Adds a new blind-index key version and makes it current, and saves. Returns the
    /// new version. Older versions stay until removed, so lookups keep finding rows that
    /// are not reindexed yet.
    pub fn rotate_blind_index_key(&self) -> Result<u32, Error> {
        self.change(|keys, path| {
            let version = keys.current_index_key().version().checked_add(1).ok_or_else(|| {
                Error::Keyring(format!("keyring {} has no blind-index key version left", path.display()))
            })?;
            keys.index_keys.insert(0, Arc::new(BlindIndexKey::generate(version)));
            Ok(version)
        })
    }

    /// Removes an old blind-index key version once every row is reindexed, and saves.
    /// The current version can't be removed.
    pub fn remove_blind_index_key(&self, version: u32) -> Result<(), Error> {
        self.change(|keys, path| {
            if keys.current_index_key().version() == version {
                return Err(Error::Keyring(format!(
                    "keyring {}: blind-index key version {version} is current and cannot be removed",
                    path.display()
                )));
            }
            let before = keys.index_keys.len();
            keys.index_keys.retain(|key| key.version() != version);
            if keys.index_keys.len() == before {
                return Err(Error::UnknownKeyVersion(version));
            }
            Ok(())
        })
    }

    /// Applies `edit` to a copy of the key set, saves the copy, and only then lets wraps
    /// and lookups see it. On any error the keyring in memory and on disk is unchanged.
    fn change<T>(&self, edit: impl FnOnce(&mut KeySet, &Path) -> Result<T, Error>) -> Result<T, Error> {
        let _admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = self.read_keys().clone();
        let outcome = edit(&mut next, &self.path)?;
        next.check().map_err(|problem| Error::Keyring(format!("keyring {} {problem}", self.path.display())))?;
        file::replace(&self.path, &next, &self.token_key)?;
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(outcome)
    }

    /// A poisoned lock still guards a consistent key set: it is only ever replaced whole.
    fn read_keys(&self) -> RwLockReadGuard<'_, KeySet> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyProvider for Keyring {
    fn name(&self) -> &'static str {
        "keyring-file"
    }

    fn current_version(&self) -> u32 {
        self.read_keys().active().0
    }

    fn versions(&self) -> Vec<(u32, KeyState)> {
        self.read_keys().keks.iter().rev().map(|(version, kek)| (*version, kek.state)).collect()
    }

    fn wrap(&self, dek: &DataKey, context: &[u8]) -> Result<WrappedKey, Error> {
        // Take what is needed and drop the lock before encrypting.
        let (kek_version, key) = {
            let keys = self.read_keys();
            let (version, kek) = keys.active();
            (version, Arc::clone(&kek.key))
        };
        let bytes = seal_with_key(&key, dek.as_bytes(), &dek_aad(kek_version, context));
        Ok(WrappedKey { kek_version, bytes })
    }

    fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<DataKey, Error> {
        let version = wrapped.kek_version;
        let key = {
            let keys = self.read_keys();
            let kek = keys.keks.get(&version).ok_or(Error::UnknownKeyVersion(version))?;
            if !kek.state.can_unwrap() {
                return Err(Error::KeyVersionNotUsable { version, state: kek.state });
            }
            Arc::clone(&kek.key)
        };
        let dek = open_with_key(&key, &wrapped.bytes, &dek_aad(version, context))?;
        DataKey::from_slice(&dek)
    }
}

/// Delegates to the inherent methods above, which callers holding a `Keyring` (the tests,
/// `qupiactl dev`) keep using directly.
impl KeyStore for Keyring {
    fn rotate_kek(&self) -> Result<u32, Error> {
        Keyring::rotate_kek(self)
    }

    fn set_kek_state(&self, version: u32, state: KeyState) -> Result<(), Error> {
        Keyring::set_kek_state(self, version, state)
    }

    fn destroy_kek(&self, version: u32) -> Result<(), Error> {
        Keyring::destroy_kek(self, version)
    }

    fn blind_index_key(&self) -> Arc<BlindIndexKey> {
        Keyring::blind_index_key(self)
    }

    fn blind_index_keys(&self) -> Vec<Arc<BlindIndexKey>> {
        Keyring::blind_index_keys(self)
    }

    fn rotate_blind_index_key(&self) -> Result<u32, Error> {
        Keyring::rotate_blind_index_key(self)
    }

    fn remove_blind_index_key(&self, version: u32) -> Result<(), Error> {
        Keyring::remove_blind_index_key(self, version)
    }

    fn token_key(&self) -> &TokenKey {
        Keyring::token_key(self)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.read_keys();
        let keks: Vec<(u32, KeyState)> = keys.keks.iter().rev().map(|(version, kek)| (*version, kek.state)).collect();
        let index_keys: Vec<u32> = keys.index_keys.iter().map(|key| key.version()).collect();
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("keks", &keks)
            .field("index_keys", &index_keys)
            .field("token_key", &self.token_key)
            .finish_non_exhaustive()
    }
}

// The tests check Unix file modes.
#[cfg(all(test, unix))]
mod tests;
