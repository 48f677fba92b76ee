//! The PKCS#11 key store: key-encryption keys that never leave an HSM token.
//!
//! Each KEK version is an AES-256 secret-key object generated inside the token,
//! `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`, labelled `<prefix>-kek-v<version>`. Wrapping
//! and unwrapping a DEK are `C_Encrypt`/`C_Decrypt` with `CKM_AES_GCM` under that object
//! (a fresh random 96-bit IV per wrap, the same associated data as the keyring file), so
//! the KEK bytes never enter this process. Destroying a version is `C_DestroyObject`.
//!
//! **Lifecycle state** lives in one data object in the token, `<prefix>-keyset` (see
//! `state.rs`), rather than spread over the key objects' attributes: a rotation changes
//! two versions at once (new active, old decrypt-only), and creating one new state object
//! is the single commit point that makes both changes durable together, the way the
//! keyring file is replaced whole. Key objects that the state does not list are leftovers
//! of a change that never committed; they never wrapped anything.
//!
//! **The HMAC keys** (blind-index keys and the token key) are used on every request:
//! every token the vault parses or issues, every index entry it computes. Keeping them
//! in the token as `CKM_SHA256_HMAC` keys would put a token round trip, serialised on a
//! few sessions, into each of those (milliseconds each on a network HSM, many per
//! request), and would make infallible operations fail whenever the HSM blinks. So they
//! are random keys sealed (AES-GCM) under a non-extractable seal key in the token,
//! `<prefix>-seal`, stored sealed in the state object, and unsealed into zeroizing memory
//! when the store opens. The exposure is the vault's own memory, which already holds
//! unwrapped DEKs and plaintext while it serves; at rest, and in any copy of the token's
//! storage, they are ciphertext that only the token can open. The KEKs, which protect
//! every DEK at rest and whose destruction is what makes erased data unreadable in old
//! copies, stay inside the token.

mod state;
mod token;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use secrecy::SecretString;
use zeroize::Zeroizing;

use self::state::State;
use self::token::{FindError, OpenError, Token};
use crate::dek::KEY_LEN;
use crate::provider::{check_lifecycle, dek_aad};
use crate::{BlindIndexKey, DataKey, Error, KeyProvider, KeyState, KeyStore, TokenKey, WrappedKey};

/// The application tag on the state object, so other software's data objects never match.
const APPLICATION: &[u8] = b"qupia";

/// Where the keys are and how to log in.
#[derive(Debug, Clone)]
pub struct Pkcs11Options {
    /// The PKCS#11 module (a shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The label of the token that holds the keys.
    pub token_label: String,
    /// The token's user PIN. Never logged; `Debug` prints it redacted.
    pub pin: SecretString,
    /// The start of every object label of this key set (`qupia` gives `qupia-kek-v3`),
    /// so several key sets (say staging and production) can share one token.
    pub key_label_prefix: String,
}

impl Pkcs11Options {
    /// The default [`Pkcs11Options::key_label_prefix`].
    pub const DEFAULT_KEY_LABEL_PREFIX: &'static str = "qupia";
}

/// The object labels of one key set.
#[derive(Debug, Clone)]
struct Labels {
    prefix: String,
}

impl Labels {
    /// Up to 64 ASCII letters, digits, `.`, `_` or `-`: labels are also what an operator
    /// types into the HSM's own tools.
    fn new(prefix: &str) -> Result<Labels, Error> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(Error::Pkcs11(
                "pkcs11_key_label_prefix: must be 1 to 64 ASCII letters, digits, '.', '_' or '-'".to_owned(),
            ));
        }
        Ok(Labels { prefix: prefix.to_owned() })
    }

    fn kek(&self, version: u32) -> String {
        format!("{}-kek-v{version}", self.prefix)
    }

    fn seal(&self) -> String {
        format!("{}-seal", self.prefix)
    }

    fn state(&self) -> String {
        format!("{}-keyset", self.prefix)
    }
}

/// A key set in a PKCS#11 token. Implements [`KeyStore`].
///
/// Like the keyring file, it has one writer at a time. Another process sharing the key
/// set sees changes after [`Pkcs11KeyStore::reload`], and a change it attempts on a stale
/// copy is refused.
pub struct Pkcs11KeyStore {
    token: Token,
    labels: Labels,
    /// The key that seals the HMAC keys; it never rotates (the token key never does).
    seal_key: ObjectHandle,
    keys: RwLock<KeySet>,
    token_key: TokenKey,
    sealed_token_key: Vec<u8>,
    /// Serialises administrative changes, as in the keyring.
    admin: Mutex<()>,
}

/// The rotatable part, swapped in whole once the state object says so.
#[derive(Clone)]
struct KeySet {
    keks: BTreeMap<u32, TokenKek>,
    /// Newest first; the first is current.
    index_keys: Vec<IndexKey>,
    /// The state object this set was read from or saved as, and its generation.
    state_object: ObjectHandle,
    generation: u64,
}

#[derive(Clone, Copy)]
struct TokenKek {
    state: KeyState,
    handle: ObjectHandle,
}

#[derive(Clone)]
struct IndexKey {
    key: Arc<BlindIndexKey>,
    sealed: Vec<u8>,
}

impl KeySet {
    fn check(&self) -> Result<(), &'static str> {
        let keks: Vec<(u32, KeyState)> = self.keks.iter().map(|(version, kek)| (*version, kek.state)).collect();
        let index_versions: Vec<u32> = self.index_keys.iter().map(|index| index.key.version()).collect();
        check_lifecycle(&keks, &index_versions)
    }

    fn active(&self) -> (u32, TokenKek) {
        self.keks
            .iter()
            .rev()
            .find(|(_, kek)| kek.state == KeyState::Active)
            .map(|(version, kek)| (*version, *kek))
            .expect("a checked key set has exactly one active kek version")
    }

    fn current_index_key(&self) -> &IndexKey {
        self.index_keys.first().expect("a checked key set has a blind-index key")
    }

    fn state(&self, generation: u64, token_key: &[u8]) -> State {
        State {
            generation,
            keks: self.keks.iter().map(|(version, kek)| (*version, kek.state)).collect(),
            index_keys: self.index_keys.iter().map(|index| (index.key.version(), index.sealed.clone())).collect(),
            token_key: token_key.to_vec(),
        }
    }
}

impl Pkcs11KeyStore {
    /// Opens the key set in the token, or creates it there (KEK version 1 active,
    /// blind-index key version 1, a token key) if the token has none under this prefix.
    ///
    /// Errors name the setting at fault (`pkcs11_module`, `pkcs11_token_label`,
    /// `pkcs11_pin`), never the PIN. A token that is not there (yet) is
    /// [`Error::Unavailable`], so start-up can wait for it.
    pub fn open(options: &Pkcs11Options) -> Result<Pkcs11KeyStore, Error> {
        let labels = Labels::new(&options.key_label_prefix)?;
        let token = Token::open(options)?;
        let _turn = token::object_store_turn();
        let opened = token.with_session(|session| match load(&token, &labels, session)? {
            Some(opened) => Ok(opened),
            None => create(&token, &labels, session),
        })?;
        let Opened { seal_key, keys, token_key, sealed_token_key } = opened;
        Ok(Pkcs11KeyStore {
            token,
            labels,
            seal_key,
            keys: RwLock::new(keys),
            token_key,
            sealed_token_key,
            admin: Mutex::new(()),
        })
    }

    /// Reads the key set's state from the token again, picking up changes another
    /// process made (rotations, retirements). The token key never changes.
    pub fn reload(&self) -> Result<(), Error> {
        let _admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        let _turn = token::object_store_turn();
        let opened = self.token.with_session(|session| load(&self.token, &self.labels, session))?;
        let opened = opened.ok_or_else(|| self.state_error("has no state object any more"))?;
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = opened.keys;
        Ok(())
    }

    /// This process's turn at searching, creating and destroying token objects, which
    /// the key store takes whenever it does so. Other code of the same process that
    /// searches or changes the token's objects directly takes it too: SoftHSM2 2.6 fails
    /// an object creation that a concurrent search of the same process runs into.
    pub fn object_store_turn() -> std::sync::MutexGuard<'static, ()> {
        token::object_store_turn()
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token.label
    }

    /// The label of the key object of a KEK version, as the HSM's own tools show it.
    pub fn kek_label(&self, version: u32) -> String {
        self.labels.kek(version)
    }

    /// Applies `edit` to a copy of the key set, saves the copy as a new state object (the
    /// commit point), and only then lets wraps and lookups see it. The old state object
    /// is destroyed after; if that fails, the next open still reads the newer one.
    fn change<T>(&self, edit: impl FnOnce(&mut KeySet, &Session) -> Result<T, Error>) -> Result<T, Error> {
        let _admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        let _turn = token::object_store_turn();
        let mut next = self.read_keys().clone();
        let outcome = self.token.with_session(|session| {
            self.check_not_changed_elsewhere(session, next.generation)?;
            let outcome = edit(&mut next, session)?;
            next.check().map_err(|problem| self.state_error(problem))?;
            let previous = next.state_object;
            next.generation += 1;
            next.state_object = create_state_object(
                &self.token,
                &self.labels,
                session,
                &next.state(next.generation, &self.sealed_token_key),
            )?;
            if let Err(err) = session.destroy_object(previous) {
                tracing::warn!(
                    token = %self.token.label,
                    error = %token::describe(&err),
                    "could not remove the previous key set state object; the newer one is in force"
                );
            }
            Ok(outcome)
        })?;
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(outcome)
    }

    /// Refuses to change a key set that another process changed since this one read it:
    /// the change would be made to a stale copy, and a rotation would take leftovers of
    /// the other's for its own.
    fn check_not_changed_elsewhere(&self, session: &Session, generation: u64) -> Result<(), Error> {
        let objects = session
            .find_objects(&state_template(&self.labels))
            .map_err(|err| self.token.error("look up the key set state", &err))?;
        for object in objects {
            let value =
                token::read_value(session, object).map_err(|err| self.token.error("read the key set state", &err))?;
            let newest =
                State::decode(&value).map_err(|problem| self.state_error(format!("state object {problem}")))?;
            if newest.generation > generation {
                return Err(self.state_error(format!(
                    "was changed by another process (state generation {} after this process's {generation}): reload and retry",
                    newest.generation
                )));
            }
        }
        Ok(())
    }

    fn state_error(&self, problem: impl fmt::Display) -> Error {
        Error::Pkcs11(format!("key set '{}' in token '{}' {problem}", self.labels.prefix, self.token.label))
    }

    /// A poisoned lock still guards a consistent key set: it is only ever replaced whole.
    fn read_keys(&self) -> RwLockReadGuard<'_, KeySet> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What opening or creating a key set yields.
struct Opened {
    seal_key: ObjectHandle,
    keys: KeySet,
    token_key: TokenKey,
    sealed_token_key: Vec<u8>,
}

fn state_template(labels: &Labels) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(APPLICATION.to_vec()),
        Attribute::Label(labels.state().into_bytes()),
    ]
}

fn find_error(token: &Token, label: &str, err: FindError) -> Error {
    match err {
        FindError::Pkcs11(err) => token.error(&format!("look up '{label}'"), &err),
        FindError::Duplicate(count) => Error::Pkcs11(format!(
            "token '{}' holds {count} objects labelled '{label}'; a key set needs exactly one",
            token.label
        )),
    }
}

/// Creates a key set: seal key, KEK version 1, the HMAC keys sealed, and last the state
/// object, whose creation is the commit point.
fn create(token: &Token, labels: &Labels, session: &Session) -> Result<Opened, Error> {
    // Without a state object the store never opened, so no key under these labels ever
    // wrapped anything: whatever an interrupted first start left behind goes.
    for label in [labels.seal(), labels.kek(1)] {
        for leftover in token::find_all(session, &label).map_err(|err| token.error("look up leftovers", &err))? {
            session.destroy_object(leftover).map_err(|err| token.error("remove a leftover object", &err))?;
        }
    }
    let seal_key =
        token::generate_key(session, &labels.seal()).map_err(|err| token.error("generate the seal key", &err))?;
    let kek =
        token::generate_key(session, &labels.kek(1)).map_err(|err| token.error("generate kek version 1", &err))?;
    let index_key = BlindIndexKey::generate(1);
    let token_key = TokenKey::generate();
    let sealed_index = seal(token, session, seal_key, index_key.as_bytes(), &state::index_key_aad(1))?;
    let sealed_token_key = seal(token, session, seal_key, token_key.as_bytes(), &state::token_key_aad())?;
    let state = State {
        generation: 1,
        keks: vec![(1, KeyState::Active)],
        index_keys: vec![(1, sealed_index.clone())],
        token_key: sealed_token_key.clone(),
    };
    let state_object = create_state_object(token, labels, session, &state)?;
    let keys = KeySet {
        keks: BTreeMap::from([(1, TokenKek { state: KeyState::Active, handle: kek })]),
        index_keys: vec![IndexKey { key: Arc::new(index_key), sealed: sealed_index }],
        state_object,
        generation: 1,
    };
    tracing::info!(token = %token.label, prefix = %labels.prefix, "created a key set in the PKCS#11 token");
    Ok(Opened { seal_key, keys, token_key, sealed_token_key })
}

/// Saves `state` as a new state object: token, private, readable only once logged in.
fn create_state_object(
    token: &Token,
    labels: &Labels,
    session: &Session,
    state: &State,
) -> Result<ObjectHandle, Error> {
    let mut template = state_template(labels);
    template.extend([Attribute::Token(true), Attribute::Private(true), Attribute::Value(state.encode())]);
    session.create_object(&template).map_err(|err| token.error("save the key set state", &err))
}

/// Reads the newest state object, finds every key object it lists and unseals the HMAC
/// keys. `None` when the token has no state object for this key set.
fn load(token: &Token, labels: &Labels, session: &Session) -> Result<Option<Opened>, Error> {
    let problem = |problem: String| {
        Error::Pkcs11(format!("key set state object '{}' in token '{}' {problem}", labels.state(), token.label))
    };
    let objects =
        session.find_objects(&state_template(labels)).map_err(|err| token.error("look up the key set state", &err))?;
    let mut newest: Option<(ObjectHandle, State)> = None;
    for object in objects {
        let value = token::read_value(session, object).map_err(|err| token.error("read the key set state", &err))?;
        let state = State::decode(&value).map_err(&problem)?;
        match &newest {
            Some((_, current)) if current.generation == state.generation => {
                return Err(problem(format!("exists twice with generation {}", state.generation)));
            }
            Some((_, current)) if current.generation > state.generation => {}
            _ => newest = Some((object, state)),
        }
    }
    let Some((state_object, state)) = newest else { return Ok(None) };
    let seal_key = find_key(token, session, &labels.seal())?
        .ok_or_else(|| problem(format!("exists, but its seal key '{}' does not", labels.seal())))?;

    let mut keks = BTreeMap::new();
    for (version, kek_state) in &state.keks {
        match find_key(token, session, &labels.kek(*version))? {
            Some(handle) => {
                keks.insert(*version, TokenKek { state: *kek_state, handle });
            }
            // A destroy removes the key object before it saves the state: a retired
            // version without its object was destroyed, and is dropped here.
            None if *kek_state == KeyState::Retired => {
                tracing::warn!(version, token = %token.label, "retired kek version has no key object: it was destroyed");
            }
            None => {
                return Err(problem(format!("lists kek version {version}, but '{}' is missing", labels.kek(*version))));
            }
        }
    }
    let mut index_keys = Vec::with_capacity(state.index_keys.len());
    for (version, sealed) in state.index_keys {
        let bytes = unseal(token, session, seal_key, &sealed, &state::index_key_aad(version), "blind-index key")?;
        index_keys.push(IndexKey { key: Arc::new(BlindIndexKey::from_bytes(version, bytes)), sealed });
    }
    let token_key =
        TokenKey::from_bytes(unseal(token, session, seal_key, &state.token_key, &state::token_key_aad(), "token key")?);
    let keys = KeySet { keks, index_keys, state_object, generation: state.generation };
    keys.check().map_err(|p| problem(p.to_owned()))?;
    Ok(Some(Opened { seal_key, keys, token_key, sealed_token_key: state.token_key }))
}

fn find_key(token: &Token, session: &Session, label: &str) -> Result<Option<ObjectHandle>, Error> {
    token::find_key(session, label).map_err(|err| find_error(token, label, err))
}

fn seal(token: &Token, session: &Session, seal_key: ObjectHandle, key: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
    token::gcm_encrypt(session, seal_key, key, aad).map_err(|err| token.error("seal a key", &err))
}

fn unseal(
    token: &Token,
    session: &Session,
    seal_key: ObjectHandle,
    sealed: &[u8],
    aad: &[u8],
    what: &str,
) -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
    let bytes = token::gcm_decrypt(session, seal_key, sealed, aad).map_err(|err| match err {
        OpenError::Pkcs11(err) => token.error(&format!("unseal the {what}"), &err),
        OpenError::Malformed | OpenError::Authentication => {
            Error::Pkcs11(format!("token '{}': the sealed {what} does not open under its seal key", token.label))
        }
    })?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(Error::Pkcs11(format!("token '{}': the sealed {what} has the wrong length", token.label)));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

impl KeyProvider for Pkcs11KeyStore {
    fn name(&self) -> &'static str {
        "pkcs11"
    }

    fn current_version(&self) -> u32 {
        self.read_keys().active().0
    }

    fn versions(&self) -> Vec<(u32, KeyState)> {
        self.read_keys().keks.iter().rev().map(|(version, kek)| (*version, kek.state)).collect()
    }

    fn wrap(&self, dek: &DataKey, context: &[u8]) -> Result<WrappedKey, Error> {
        let (kek_version, kek) = self.read_keys().active();
        let bytes = self.token.with_session(|session| {
            token::gcm_encrypt(session, kek.handle, dek.as_bytes(), &dek_aad(kek_version, context))
                .map_err(|err| self.token.error("wrap a data key", &err))
        })?;
        Ok(WrappedKey { kek_version, bytes })
    }

    fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<DataKey, Error> {
        let version = wrapped.kek_version;
        let kek = {
            let keys = self.read_keys();
            let kek = *keys.keks.get(&version).ok_or(Error::UnknownKeyVersion(version))?;
            if !kek.state.can_unwrap() {
                return Err(Error::KeyVersionNotUsable { version, state: kek.state });
            }
            kek
        };
        let dek = self.token.with_session(|session| {
            token::gcm_decrypt(session, kek.handle, &wrapped.bytes, &dek_aad(version, context)).map_err(|err| match err
            {
                OpenError::Malformed => Error::Malformed("sealed value is shorter than its nonce and tag"),
                OpenError::Authentication => Error::Decrypt,
                OpenError::Pkcs11(err) => self.token.error("unwrap a data key", &err),
            })
        })?;
        DataKey::from_slice(&dek)
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn rotate_kek(&self) -> Result<u32, Error> {
        self.change(|keys, session| {
            let (active, _) = keys.active();
            let version = active.checked_add(1).ok_or_else(|| self.state_error("has no kek version left"))?;
            let label = self.labels.kek(version);
            // Objects under the new label are leftovers of a rotation that never
            // committed: no state listed them, so nothing was ever wrapped under them.
            for leftover in
                token::find_all(session, &label).map_err(|err| self.token.error("look up leftovers", &err))?
            {
                session.destroy_object(leftover).map_err(|err| self.token.error("remove a leftover object", &err))?;
            }
            let handle = token::generate_key(session, &label)
                .map_err(|err| self.token.error(&format!("generate kek version {version}"), &err))?;
            for kek in keys.keks.values_mut() {
                if kek.state == KeyState::Active {
                    kek.state = KeyState::DecryptOnly;
                }
            }
            keys.keks.insert(version, TokenKek { state: KeyState::Active, handle });
            Ok(version)
        })
    }

    fn set_kek_state(&self, version: u32, state: KeyState) -> Result<(), Error> {
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

    /// Destroys the key object first and saves the state after: if saving fails, the
    /// version is gone from the token all the same (the next open drops it), whereas the
    /// other order could leave a "destroyed" key alive in the token.
    fn destroy_kek(&self, version: u32) -> Result<(), Error> {
        self.change(|keys, session| {
            let kek = *keys.keks.get(&version).ok_or(Error::UnknownKeyVersion(version))?;
            if kek.state != KeyState::Retired {
                return Err(Error::KeyVersionNotUsable { version, state: kek.state });
            }
            session
                .destroy_object(kek.handle)
                .map_err(|err| self.token.error(&format!("destroy kek version {version}"), &err))?;
            keys.keks.remove(&version);
            Ok(())
        })
    }

    fn blind_index_key(&self) -> Arc<BlindIndexKey> {
        Arc::clone(&self.read_keys().current_index_key().key)
    }

    fn blind_index_keys(&self) -> Vec<Arc<BlindIndexKey>> {
        self.read_keys().index_keys.iter().map(|index| Arc::clone(&index.key)).collect()
    }

    fn rotate_blind_index_key(&self) -> Result<u32, Error> {
        self.change(|keys, session| {
            let version = keys
                .current_index_key()
                .key
                .version()
                .checked_add(1)
                .ok_or_else(|| self.state_error("has no blind-index key version left"))?;
            let key = BlindIndexKey::generate(version);
            let sealed = seal(&self.token, session, self.seal_key, key.as_bytes(), &state::index_key_aad(version))?;
            keys.index_keys.insert(0, IndexKey { key: Arc::new(key), sealed });
            Ok(version)
        })
    }

    fn remove_blind_index_key(&self, version: u32) -> Result<(), Error> {
        self.change(|keys, _| {
            if keys.current_index_key().key.version() == version {
                return Err(
                    self.state_error(format!(": blind-index key version {version} is current and cannot be removed"))
                );
            }
            let before = keys.index_keys.len();
            keys.index_keys.retain(|index| index.key.version() != version);
            if keys.index_keys.len() == before {
                return Err(Error::UnknownKeyVersion(version));
            }
            Ok(())
        })
    }

    fn token_key(&self) -> &TokenKey {
        &self.token_key
    }
}

impl fmt::Debug for Pkcs11KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.read_keys();
        let keks: Vec<(u32, KeyState)> = keys.keks.iter().rev().map(|(version, kek)| (*version, kek.state)).collect();
        let index_keys: Vec<u32> = keys.index_keys.iter().map(|index| index.key.version()).collect();
        f.debug_struct("Pkcs11KeyStore")
            .field("module", &self.token.module)
            .field("token", &self.token.label)
            .field("prefix", &self.labels.prefix)
            .field("keks", &keks)
            .field("index_keys", &index_keys)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_prefix() {
        let labels = Labels::new("qupia").expect("valid");
        assert_eq!(labels.kek(3), "qupia-kek-v3");
        assert_eq!(labels.seal(), "qupia-seal");
        assert_eq!(labels.state(), "qupia-keyset");
    }

    #[test]
    fn prefixes_outside_the_label_alphabet_are_refused_naming_the_setting() {
        for prefix in ["", "has space", "ünï", &"x".repeat(65)] {
            let error = Labels::new(prefix).expect_err("invalid prefix");
            assert!(error.to_string().starts_with("pkcs11_key_label_prefix: "), "{error}");
        }
    }

    #[test]
    fn a_missing_module_is_named_with_its_setting() {
        let options = Pkcs11Options {
            module: PathBuf::from("/nonexistent/libpkcs11.so"),
            token_label: "qupia".to_owned(),
            pin: SecretString::from("1234"),
            key_label_prefix: "qupia".to_owned(),
        };
        let error = Pkcs11KeyStore::open(&options).expect_err("no module");
        let message = error.to_string();
        assert!(message.starts_with("pkcs11_module: "), "{message}");
        assert!(message.contains("/nonexistent/libpkcs11.so"), "{message}");
        assert!(!message.contains("1234"), "{message}");
        assert!(!format!("{options:?}").contains("1234"));
    }
}
