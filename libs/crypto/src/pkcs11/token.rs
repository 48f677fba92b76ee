//! The PKCS#11 plumbing under [`super::Pkcs11KeyStore`]: loading and initialising a
//! module once per process, finding the token by label, logging in, a small pool of
//! sessions, and the few object and AES-GCM operations the key store performs inside the
//! token. Messages name the configuration key at fault, the module and the token, never
//! the PIN or any key byte.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::Pkcs11Options;
use crate::Error;
use crate::dek::KEY_LEN;

/// Sessions kept open per key store. Wraps and unwraps each hold one for a few
/// microseconds on SoftHSM (a network HSM round trip on real hardware), so a handful
/// lets concurrent requests proceed without one global lock.
const SESSIONS: usize = 4;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Modules loaded and initialised in this process, by the path they were configured with.
///
/// `C_Initialize` may run only once per process (a second call answers
/// CKR_CRYPTOKI_ALREADY_INITIALIZED), and `C_Finalize` would pull the module out from
/// under every other store in the process (tests run several vaults in one), so each
/// module is initialised on first use and never finalised: it lives as long as the process.
static MODULES: LazyLock<Mutex<HashMap<PathBuf, Pkcs11>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The process's handle to the module at `path`, loaded and initialised if needed.
pub(super) fn module(path: &Path) -> Result<Pkcs11, Error> {
    let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pkcs11) = modules.get(path) {
        return Ok(pkcs11.clone());
    }
    if !path.is_file() {
        return Err(Error::Pkcs11(format!("pkcs11_module: no PKCS#11 module at {}", path.display())));
    }
    let pkcs11 = Pkcs11::new(path).map_err(|err| {
        Error::Pkcs11(format!("pkcs11_module: cannot load the PKCS#11 module {}: {err}", path.display()))
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in this process (another path to the same library) initialised it.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(err) => {
            return Err(Error::Pkcs11(format!(
                "pkcs11_module: the PKCS#11 module {} failed to initialise: {}",
                path.display(),
                describe(&err)
            )));
        }
    }
    modules.insert(path.to_owned(), pkcs11.clone());
    Ok(pkcs11)
}

/// `Function: CKR name` for a PKCS#11 error; cryptoki's own text quotes the standard at
/// length.
pub(super) fn describe(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, function) => format!("C_{function:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

/// A logged-in token: its label, the module it is in, and a pool of read-write sessions.
pub(super) struct Token {
    pub(super) module: PathBuf,
    pub(super) label: String,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl Token {
    /// Loads the module, finds the token by label and logs in as its user.
    pub(super) fn open(options: &Pkcs11Options) -> Result<Token, Error> {
        let pkcs11 = module(&options.module)?;
        let slot = find_slot(&pkcs11, options)?;
        let mut sessions = Vec::with_capacity(SESSIONS);
        for _ in 0..SESSIONS {
            let session = pkcs11.open_rw_session(slot).map_err(|err| {
                classify(
                    &err,
                    format!("cannot open a session with token '{}': {}", options.token_label, describe(&err)),
                )
            })?;
            sessions.push(Mutex::new(session));
        }
        let token = Token {
            module: options.module.clone(),
            label: options.token_label.clone(),
            sessions,
            next: AtomicUsize::new(0),
        };
        token.login(options)?;
        Ok(token)
    }

    /// Logs in as the token's user. Login state belongs to the application, not the
    /// session: every session of this process with the token is logged in once one is,
    /// and a second store on the same token finds it already logged in.
    fn login(&self, options: &Pkcs11Options) -> Result<(), Error> {
        let label = &self.label;
        let session = self.session(0);
        match session.login(UserType::User, Some(&options.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => {
                Err(Error::Pkcs11(format!("pkcs11_pin: token '{label}' refused the user PIN (wrong PIN)")))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                Err(Error::Pkcs11(format!("pkcs11_pin: token '{label}' has locked its user PIN after failed logins")))
            }
            Err(CkError::Pkcs11(RvError::PinExpired, _)) => {
                Err(Error::Pkcs11(format!("pkcs11_pin: the user PIN of token '{label}' has expired")))
            }
            Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) => {
                Err(Error::Pkcs11(format!("pkcs11_token_label: token '{label}' has no user PIN set")))
            }
            Err(err) => Err(classify(&err, format!("cannot log in to token '{label}': {}", describe(&err)))),
        }
    }

    fn session(&self, index: usize) -> MutexGuard<'_, Session> {
        self.sessions[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` on a free session, or waits for the next one in turn when all are busy.
    pub(super) fn with_session<T>(&self, work: impl FnOnce(&Session) -> Result<T, Error>) -> Result<T, Error> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.sessions.len() {
            if let Ok(session) = self.sessions[(start + offset) % self.sessions.len()].try_lock() {
                return work(&session);
            }
        }
        work(&self.session(start % self.sessions.len()))
    }

    /// A PKCS#11 failure during `action`, as an error naming the token.
    pub(super) fn error(&self, action: &str, err: &CkError) -> Error {
        classify(err, format!("PKCS#11 token '{}' failed to {action}: {}", self.label, describe(err)))
    }
}

/// A device that is gone or not answering is [`Error::Unavailable`] (it may come back);
/// anything else is [`Error::Pkcs11`].
fn classify(err: &CkError, message: String) -> Error {
    match err {
        CkError::Pkcs11(
            RvError::DeviceError
            | RvError::DeviceRemoved
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionClosed
            | RvError::SessionHandleInvalid
            | RvError::SessionCount
            | RvError::FunctionCanceled,
            _,
        ) => Error::Unavailable(message),
        _ => Error::Pkcs11(message),
    }
}

/// The one slot whose token carries the configured label. A missing token is
/// [`Error::Unavailable`]: a network HSM may not have connected yet.
fn find_slot(pkcs11: &Pkcs11, options: &Pkcs11Options) -> Result<Slot, Error> {
    let module = options.module.display();
    let label = &options.token_label;
    let slots = pkcs11.get_slots_with_token().map_err(|err| {
        classify(&err, format!("pkcs11_module: cannot list the slots of {module}: {}", describe(&err)))
    })?;
    let mut found = Vec::new();
    for slot in slots {
        let info = pkcs11.get_token_info(slot).map_err(|err| {
            classify(&err, format!("pkcs11_module: cannot read a token's information in {module}: {}", describe(&err)))
        })?;
        if info.label().trim_end() == label {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(Error::Unavailable(format!("pkcs11_token_label: no token labelled '{label}' in {module}"))),
        _ => Err(Error::Pkcs11(format!(
            "pkcs11_token_label: {} tokens are labelled '{label}' in {module}; labels must be unique",
            found.len()
        ))),
    }
}

/// The attributes of an AES-256 key that never leaves the token: generated inside it,
/// sensitive (its value can't be read) and not extractable (it can't be wrapped out),
/// usable only to encrypt and decrypt, and not modifiable, so none of that can be undone.
pub(super) fn non_extractable_aes_key(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen((KEY_LEN as u64).into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// The process's turn at the token's object store: held while a key set is opened,
/// created, reloaded or changed, i.e. around every search for, creation and destruction
/// of token objects.
///
/// SoftHSM2 2.6 fails a key generation or object creation (CKR_GENERAL_ERROR) when
/// another session of the same process searches the object store at that moment: the
/// search reads the new object's file half-written (SoftHSMv2 issue 573, fixed after
/// 2.6.1, the version Debian 12 ships). Those operations happen at start-up and on key
/// changes only, so taking turns costs nothing; wraps and unwraps never take it.
pub(super) fn object_store_turn() -> MutexGuard<'static, ()> {
    static OBJECT_STORE: Mutex<()> = Mutex::new(());
    OBJECT_STORE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Generates a non-extractable AES-256 key labelled `label` inside the token. Callers
/// hold [`object_store_turn`].
pub(super) fn generate_key(session: &Session, label: &str) -> Result<ObjectHandle, CkError> {
    session.generate_key(&Mechanism::AesKeyGen, &non_extractable_aes_key(label))
}

/// The secret key labelled `label`, if there is exactly one; more than one is an error
/// (the token would be ambiguous about which key wraps what).
pub(super) fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, FindError> {
    find_one(session, &[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(label.as_bytes().to_vec())])
}

/// Every object labelled `label`, of any class.
pub(super) fn find_all(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, CkError> {
    session.find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
}

/// Why a lookup by label failed.
#[derive(Debug)]
pub(super) enum FindError {
    Pkcs11(CkError),
    Duplicate(usize),
}

pub(super) fn find_one(session: &Session, template: &[Attribute]) -> Result<Option<ObjectHandle>, FindError> {
    let found = session.find_objects(template).map_err(FindError::Pkcs11)?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        more => Err(FindError::Duplicate(more.len())),
    }
}

/// AES-256-GCM inside the token under `key`, with a fresh random 96-bit IV and `aad`
/// bound. The output is `iv || ciphertext || tag`, the layout the keyring file uses.
pub(super) fn gcm_encrypt(
    session: &Session,
    key: ObjectHandle,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CkError> {
    let mut iv = [0u8; IV_LEN];
    OsRng.fill_bytes(&mut iv);
    let mut iv_param = iv;
    let params = GcmParams::new(&mut iv_param, aad, ((TAG_LEN * 8) as u64).into())?;
    let sealed = session.encrypt(&Mechanism::AesGcm(params), key, plaintext)?;
    let mut out = Vec::with_capacity(IV_LEN + sealed.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Why a decryption inside the token failed.
#[derive(Debug)]
pub(super) enum OpenError {
    /// Too short to hold an IV and a tag: nothing was sent to the token.
    Malformed,
    /// The token refused the ciphertext: wrong key, altered bytes or different AAD.
    Authentication,
    Pkcs11(CkError),
}

/// Inverse of [`gcm_encrypt`]; the plaintext comes back in a buffer that zeroizes itself.
pub(super) fn gcm_decrypt(
    session: &Session,
    key: ObjectHandle,
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    if sealed.len() < IV_LEN + TAG_LEN {
        return Err(OpenError::Malformed);
    }
    let (iv, ciphertext) = sealed.split_at(IV_LEN);
    let mut iv: [u8; IV_LEN] = iv.try_into().map_err(|_| OpenError::Malformed)?;
    let params = GcmParams::new(&mut iv, aad, ((TAG_LEN * 8) as u64).into()).map_err(OpenError::Pkcs11)?;
    match session.decrypt(&Mechanism::AesGcm(params), key, ciphertext) {
        Ok(plaintext) => Ok(Zeroizing::new(plaintext)),
        // PKCS#11 says CKR_ENCRYPTED_DATA_INVALID for a tag that does not verify;
        // SoftHSM2 answers CKR_GENERAL_ERROR for the same thing after C_Decrypt.
        Err(CkError::Pkcs11(
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::GeneralError,
            Function::Decrypt,
        )) => Err(OpenError::Authentication),
        Err(err) => Err(OpenError::Pkcs11(err)),
    }
}

/// The value of a data object.
pub(super) fn read_value(session: &Session, object: ObjectHandle) -> Result<Vec<u8>, CkError> {
    let attributes = session.get_attributes(object, &[AttributeType::Value])?;
    Ok(attributes
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::Value(value) => Some(value),
            _ => None,
        })
        .unwrap_or_default())
}
