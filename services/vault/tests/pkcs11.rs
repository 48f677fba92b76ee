//! The PKCS#11 key store against a real SoftHSM2 token: wrapping inside the token, the
//! associated data binding, lifecycle state that survives re-opening the token, a KEK
//! that cannot be read or wrapped out, and start-up errors that name the setting at
//! fault and never the PIN. Skipped, saying so, where SoftHSM2 is not installed.

use std::process::{Command, Stdio};
use std::time::Duration;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use qupia_api::types::v1::{Field, Purpose};
use qupia_api::vault::v1::*;
use qupia_crypto::{DataKey, Error, KeyProvider, KeyState, KeyStore, Pkcs11KeyStore, Token, TokenKind, slot_aad};
use qupia_test_support::ops::{http_get, parse_metrics};
use qupia_test_support::people::PEOPLE;
use qupia_test_support::softhsm_token::{TOKEN_LABEL, USER_PIN};
use qupia_test_support::{Backend, SoftHsm, TestKeys, VaultHarness, storage_test};
use secrecy::SecretString;

/// The SoftHSM2 of this test process, or `None` (and a note) where it is not installed.
fn softhsm() -> Option<&'static SoftHsm> {
    if !SoftHsm::available() {
        eprintln!("skipped: SoftHSM2 is not installed (apt-get install softhsm2)");
        return None;
    }
    Some(SoftHsm::shared())
}

/// Whether `unwrapped` is the same key as `original`: what one seals, the other opens.
fn same_key(original: &DataKey, unwrapped: &DataKey) -> bool {
    let aad = slot_aad(&[1; 16], "email", 1);
    unwrapped
        .open(&original.seal(b"aigerim@example.kz", &aad), &aad)
        .is_ok_and(|plain| plain.as_slice() == b"aigerim@example.kz")
}

#[test]
fn wrap_and_unwrap_happen_in_the_token_and_round_trip() {
    let Some(hsm) = softhsm() else { return };
    let store = Pkcs11KeyStore::open(&hsm.fresh_options()).expect("open a new key set");
    assert_eq!(store.name(), "pkcs11");
    assert_eq!(store.versions(), vec![(1, KeyState::Active)]);

    let dek = DataKey::generate();
    let wrapped = store.wrap(&dek, b"person-a").expect("wrap");
    assert_eq!(wrapped.kek_version, 1);
    // IV, the 32-byte key encrypted, tag: the keyring file's layout.
    assert_eq!(wrapped.bytes.len(), 12 + 32 + 16);
    let again = store.wrap(&dek, b"person-a").expect("wrap again");
    assert_ne!(wrapped.bytes[..12], again.bytes[..12], "every wrap draws a fresh IV");
    assert_ne!(wrapped.bytes, again.bytes);

    let unwrapped = store.unwrap(&wrapped, b"person-a").expect("unwrap");
    assert!(same_key(&dek, &unwrapped));
    assert!(same_key(&dek, &store.unwrap(&again, b"person-a").expect("unwrap the second wrap")));
}

#[test]
fn a_wrapped_key_opens_only_with_its_own_context_version_and_bytes() {
    let Some(hsm) = softhsm() else { return };
    let store = Pkcs11KeyStore::open(&hsm.fresh_options()).expect("open");
    let wrapped = store.wrap(&DataKey::generate(), b"person-a").expect("wrap");

    assert!(matches!(store.unwrap(&wrapped, b"person-b"), Err(Error::Decrypt)), "another person's context");
    for index in [0, 12, wrapped.bytes.len() - 1] {
        let mut tampered = wrapped.clone();
        tampered.bytes[index] ^= 1;
        assert!(matches!(store.unwrap(&tampered, b"person-a"), Err(Error::Decrypt)), "byte {index} flipped");
    }
    let mut short = wrapped.clone();
    short.bytes.truncate(20);
    assert!(matches!(store.unwrap(&short, b"person-a"), Err(Error::Malformed(_))));

    // Relabelled with another version: the version is in the associated data too.
    assert_eq!(store.rotate_kek().expect("rotate"), 2);
    let relabelled = qupia_crypto::WrappedKey { kek_version: 2, bytes: wrapped.bytes.clone() };
    assert!(matches!(store.unwrap(&relabelled, b"person-a"), Err(Error::Decrypt)));
    let unknown = qupia_crypto::WrappedKey { kek_version: 9, bytes: wrapped.bytes.clone() };
    assert!(matches!(store.unwrap(&unknown, b"person-a"), Err(Error::UnknownKeyVersion(9))));
    store.unwrap(&wrapped, b"person-a").expect("still opens with its own context and version");
}

#[test]
fn rotation_states_and_destruction_persist_across_reopening_the_token() {
    let Some(hsm) = softhsm() else { return };
    let options = hsm.fresh_options();
    let store = Pkcs11KeyStore::open(&options).expect("open");
    let dek = DataKey::generate();
    let under_v1 = store.wrap(&dek, b"p").expect("wrap under v1");
    let index_v1 = store.blind_index_key().digest("email", b"a@b.kz");
    let person = Token::generate(TokenKind::Person);
    let token_text = person.encode(store.token_key());

    assert_eq!(store.rotate_kek().expect("rotate"), 2);
    let under_v2 = store.wrap(&dek, b"p").expect("wrap under v2");
    assert_eq!(under_v2.kek_version, 2);
    assert_eq!(store.rotate_blind_index_key().expect("rotate index key"), 2);
    // The active version can't be retired, and only a rotation makes one active.
    assert!(matches!(store.set_kek_state(2, KeyState::Retired), Err(Error::KeyVersionNotUsable { version: 2, .. })));
    assert!(matches!(store.set_kek_state(1, KeyState::Active), Err(Error::KeyVersionNotUsable { version: 1, .. })));
    // Only a retired version can be destroyed.
    assert!(matches!(store.destroy_kek(1), Err(Error::KeyVersionNotUsable { version: 1, .. })));
    store.set_kek_state(1, KeyState::Retired).expect("retire v1");
    drop(store);

    let reopened = Pkcs11KeyStore::open(&options).expect("reopen");
    assert_eq!(reopened.versions(), vec![(2, KeyState::Active), (1, KeyState::Retired)]);
    assert_eq!(reopened.current_version(), 2);
    assert!(same_key(&dek, &reopened.unwrap(&under_v2, b"p").expect("v2 still unwraps")));
    assert!(matches!(
        reopened.unwrap(&under_v1, b"p"),
        Err(Error::KeyVersionNotUsable { version: 1, state: KeyState::Retired })
    ));
    let versions: Vec<u32> = reopened.blind_index_keys().iter().map(|key| key.version()).collect();
    assert_eq!(versions, vec![2, 1]);
    assert_eq!(reopened.blind_index_keys()[1].digest("email", b"a@b.kz"), index_v1, "index key v1 survived sealed");
    assert_eq!(Token::parse(&token_text, reopened.token_key()), Ok(person), "the token key survived sealed");
    assert_eq!(person.encode(reopened.token_key()), token_text);

    reopened.set_kek_state(1, KeyState::DecryptOnly).expect("un-retire v1");
    assert!(same_key(&dek, &reopened.unwrap(&under_v1, b"p").expect("v1 unwraps again")));
    reopened.set_kek_state(1, KeyState::Retired).expect("retire v1 again");
    reopened.destroy_kek(1).expect("destroy v1");
    reopened.remove_blind_index_key(1).expect("remove index key v1");
    assert!(reopened.remove_blind_index_key(2).is_err(), "the current index key stays");
    let label = reopened.kek_label(1);
    drop(reopened);

    let third = Pkcs11KeyStore::open(&options).expect("open a third time");
    assert_eq!(third.versions(), vec![(2, KeyState::Active)]);
    assert!(matches!(third.unwrap(&under_v1, b"p"), Err(Error::UnknownKeyVersion(1))));
    assert_eq!(third.blind_index_keys().len(), 1);
    let session = user_session(hsm);
    assert!(find_key(&session, &label).is_none(), "C_DestroyObject removed {label} from the token");
}

#[test]
fn a_change_made_by_another_store_on_the_token_is_seen_after_reload() {
    let Some(hsm) = softhsm() else { return };
    let options = hsm.fresh_options();
    let writer = Pkcs11KeyStore::open(&options).expect("open");
    let reader = Pkcs11KeyStore::open(&options).expect("open the same key set again");
    let wrapped = reader.wrap(&DataKey::generate(), b"p").expect("wrap");
    assert_eq!(writer.rotate_kek().expect("rotate"), 2);
    assert_eq!(reader.current_version(), 1, "not yet reloaded");
    let stale = reader.rotate_kek().expect_err("a change to a stale copy is refused");
    assert!(stale.to_string().contains("was changed by another process"), "{stale}");
    reader.reload().expect("reload");
    assert_eq!(reader.current_version(), 2);
    assert_eq!(reader.rotate_kek().expect("rotate after reloading"), 3);
    writer.reload().expect("reload the first store");
    assert_eq!(writer.versions(), vec![(3, KeyState::Active), (2, KeyState::DecryptOnly), (1, KeyState::DecryptOnly)]);
    writer.unwrap(&wrapped, b"p").expect("both stores hold the same keys");
}

#[test]
fn several_key_sets_share_one_token_without_sharing_keys() {
    let Some(hsm) = softhsm() else { return };
    let stores: Vec<Pkcs11KeyStore> =
        (0..3).map(|_| Pkcs11KeyStore::open(&hsm.fresh_options()).expect("open")).collect();
    std::thread::scope(|scope| {
        for store in &stores {
            scope.spawn(move || {
                for _ in 0..50 {
                    let dek = DataKey::generate();
                    let wrapped = store.wrap(&dek, b"p").expect("wrap");
                    assert!(same_key(&dek, &store.unwrap(&wrapped, b"p").expect("unwrap")));
                }
            });
        }
    });
    let wrapped = stores[0].wrap(&DataKey::generate(), b"p").expect("wrap");
    assert!(matches!(stores[1].unwrap(&wrapped, b"p"), Err(Error::Decrypt)), "another key set's kek v1 is another key");
}

#[test]
fn the_kek_cannot_be_read_or_wrapped_out_of_the_token() {
    let Some(hsm) = softhsm() else { return };
    let store = Pkcs11KeyStore::open(&hsm.fresh_options()).expect("open");
    store.rotate_kek().expect("rotate");
    let session = user_session(hsm);
    for version in [1, 2] {
        let label = store.kek_label(version);
        let kek = find_key(&session, &label).unwrap_or_else(|| panic!("{label} is in the token"));

        let info = session.get_attribute_info(kek, &[AttributeType::Value]).expect("attribute info");
        assert!(matches!(info[..], [AttributeInfo::Sensitive]), "{label}: CKA_VALUE is sensitive: {info:?}");
        let read = session.get_attributes(kek, &[AttributeType::Value]).expect("get attributes");
        assert!(read.iter().all(|attribute| !matches!(attribute, Attribute::Value(_))), "{label}: no value returned");

        let flags = session
            .get_attributes(
                kek,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Local,
                    AttributeType::Modifiable,
                ],
            )
            .expect("flags");
        for expected in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true),
            Attribute::Token(true),
            Attribute::Private(true),
            // Generated inside the token, never imported.
            Attribute::Local(true),
            Attribute::Modifiable(false),
        ] {
            assert!(flags.contains(&expected), "{label}: expected {expected:?} in {flags:?}");
        }

        // A session key that may wrap anything the token lets out.
        let wrapping_key = session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(false),
                    Attribute::Wrap(true),
                ],
            )
            .expect("a wrapping key");
        for mechanism in [Mechanism::AesKeyWrapPad, Mechanism::AesKeyWrap] {
            let refused = session.wrap_key(&mechanism, wrapping_key, kek).expect_err("the kek must not wrap out");
            assert!(
                matches!(refused, cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::KeyUnextractable, _)),
                "{label}: C_WrapKey refused as unextractable: {refused:?}"
            );
        }
        // Marking it extractable again is refused too.
        assert!(session.update_attributes(kek, &[Attribute::Extractable(true)]).is_err());
        session.destroy_object(wrapping_key).expect("drop the wrapping key");
    }
}

/// A session on the shared token, logged in (or already, through a store in this process).
fn user_session(hsm: &SoftHsm) -> Session {
    let pkcs11 = cryptoki::context::Pkcs11::new(hsm.module()).expect("module");
    let slot = pkcs11
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|slot| pkcs11.get_token_info(*slot).is_ok_and(|info| info.label() == TOKEN_LABEL))
        .expect("the shared token");
    let session = pkcs11.open_rw_session(slot).expect("session");
    match session.login(UserType::User, Some(&SecretString::from(USER_PIN))) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(err) => panic!("login: {err:?}"),
    }
    session
}

fn find_key(session: &Session, label: &str) -> Option<ObjectHandle> {
    let _turn = Pkcs11KeyStore::object_store_turn();
    let found = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(label.as_bytes().to_vec())])
        .expect("find objects");
    assert!(found.len() <= 1, "one object per label");
    found.first().copied()
}

/// Runs `qupia-vault` on SoftHSM2 with `args` and returns its stderr once it has exited.
/// It must fail before it serves anything: no database or TLS is reached.
fn vault_start_failure(hsm: &SoftHsm, args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_qupia-vault"));
    // Only what the test sets: an operator's QUPIA_VAULT_* must not leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("QUPIA_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
        .arg("--database-url")
        .arg(format!("sqlite://{}?mode=rwc", dir.path().join("vault.db").display()))
        .args(["--insecure-dev-caller", "spiffe://qupia/ns/default/sa/gateway"])
        .args(["--key-provider", "pkcs11"])
        .args(args)
        .env("SOFTHSM2_CONF", hsm.conf())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qupia-vault");
    for _ in 0..600 {
        if child.try_wait().expect("wait").is_some() {
            let output = child.wait_with_output().expect("output");
            assert!(!output.status.success(), "the vault must refuse to start");
            return String::from_utf8_lossy(&output.stderr).into_owned();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the vault did not exit");
}

#[test]
fn a_wrong_pin_stops_start_up_with_a_clear_error_that_does_not_contain_the_pin() {
    let Some(hsm) = softhsm() else { return };
    // A token of its own, so no store in this process is logged in to it already.
    let label = format!("pin-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    hsm.init_token(&label, "right-pin-4321");
    let dir = tempfile::tempdir().expect("temp dir");
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, "wrong-pin-8765\n").expect("write the PIN file");

    let stderr = vault_start_failure(
        hsm,
        &[
            "--pkcs11-module",
            hsm.module().to_str().expect("utf-8 path"),
            "--pkcs11-token-label",
            &label,
            "--pkcs11-pin-file",
            pin_file.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    assert!(stderr.contains(&format!("pkcs11_pin: token '{label}' refused the user PIN")), "{stderr}");
    assert!(!stderr.contains("wrong-pin-8765") && !stderr.contains("right-pin-4321"), "{stderr}");
}

#[test]
fn a_missing_module_token_or_setting_stops_start_up_naming_the_setting() {
    let Some(hsm) = softhsm() else { return };
    let module = hsm.module().to_str().expect("utf-8 path");
    let pin = [("QUPIA_VAULT_PKCS11_PIN", USER_PIN)];

    let stderr = vault_start_failure(
        hsm,
        &["--pkcs11-module", "/nonexistent/libpkcs11.so", "--pkcs11-token-label", TOKEN_LABEL],
        &pin,
    );
    assert!(stderr.contains("pkcs11_module: no PKCS#11 module at /nonexistent/libpkcs11.so"), "{stderr}");

    let stderr = vault_start_failure(
        hsm,
        &["--pkcs11-module", module, "--pkcs11-token-label", "no-such-token", "--key-provider-wait-secs", "1"],
        &pin,
    );
    assert!(stderr.contains("pkcs11_token_label: no token labelled 'no-such-token'"), "{stderr}");
    assert!(stderr.contains("still not ready after"), "start-up waited for the token: {stderr}");

    let stderr = vault_start_failure(hsm, &["--pkcs11-token-label", TOKEN_LABEL], &pin);
    assert!(stderr.contains("pkcs11_module: required when key_provider is pkcs11"), "{stderr}");
    let stderr = vault_start_failure(hsm, &["--pkcs11-module", module], &pin);
    assert!(stderr.contains("pkcs11_token_label: required"), "{stderr}");
    let stderr = vault_start_failure(hsm, &["--pkcs11-module", module, "--pkcs11-token-label", TOKEN_LABEL], &[]);
    assert!(stderr.contains("pkcs11_pin_file: required"), "{stderr}");
    assert!(!stderr.contains(USER_PIN), "{stderr}");
}

storage_test!(a_vault_on_softhsm_serves_and_names_its_key_provider, vault_on_softhsm);
async fn vault_on_softhsm(backend: Backend) {
    let Some(hsm) = softhsm() else { return };
    let vault = VaultHarness::start_with_keys(backend, TestKeys::Pkcs11(hsm.fresh_options())).await;
    let mut client = vault.gateway().await;
    let (surname, given_name, patronymic, email, phone) = PEOPLE[0];
    let tokens = client
        .tokenize(TokenizeRequest {
            person: Some(PersonInput {
                surname: surname.into(),
                given_name: given_name.into(),
                patronymic: patronymic.into(),
                email: email.into(),
                phone: phone.into(),
            }),
            idempotency_key: "softhsm-1".into(),
            ..Default::default()
        })
        .await
        .expect("tokenize")
        .into_inner()
        .tokens
        .expect("tokens");
    let revealed = client
        .reveal(RevealRequest {
            token: tokens.person_token.clone(),
            fields: vec![Field::Email as i32, Field::Phone as i32],
            access: Some(AccessContext {
                purpose: Purpose::ServiceDelivery as i32,
                decision_id: "t".into(),
                caller: "spiffe://qupia/ns/default/sa/accounts".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("reveal")
        .into_inner();
    let values: Vec<&str> = revealed.values.iter().map(|value| value.value.as_str()).collect();
    assert_eq!(values, vec![email, phone]);
    assert!(!vault.keyring_path.exists(), "no keyring file is written when the keys are in the token");

    let (status, body) = http_get(vault.ops_addr(), "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    let metrics = parse_metrics(&body).expect("a valid exposition");
    assert_eq!(metrics.value("qupia_key_provider", &[("provider", "pkcs11")]), 1.0);
    assert_eq!(metrics.value("qupia_key_versions", &[("state", "active")]), 1.0);
}

storage_test!(test_vaults_use_the_key_provider_the_environment_chooses, harness_provider);
async fn harness_provider(backend: Backend) {
    // CI runs the whole vault suite a second time with QUPIA_TEST_KEY_PROVIDER=pkcs11;
    // this proves that run really is on SoftHSM2.
    let expected = if TestKeys::pkcs11_selected() { "pkcs11" } else { "keyring-file" };
    let vault = VaultHarness::start(backend).await;
    let (_, body) = http_get(vault.ops_addr(), "/metrics").await.expect("GET /metrics");
    let metrics = parse_metrics(&body).expect("a valid exposition");
    assert_eq!(metrics.value("qupia_key_provider", &[("provider", expected)]), 1.0, "{body}");
    assert_eq!(vault.keyring_path.exists(), expected == "keyring-file");
}
