use std::fs;
use std::os::unix::fs::PermissionsExt;

use tempfile::TempDir;

use super::*;
use crate::testing::assert_no_key_bytes;
use crate::{Token, TokenKind};

const PERSON: &[u8] = b"person-0001";

fn new_keyring() -> (TempDir, PathBuf, Keyring) {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("keyring.json");
    let keyring = Keyring::load_or_create(&path).expect("creates a keyring");
    (dir, path, keyring)
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

#[test]
fn new_keyring_has_kek_1_active_and_index_key_1() {
    let (_dir, _path, keyring) = new_keyring();
    assert_eq!(keyring.name(), "keyring-file");
    assert_eq!(keyring.current_version(), 1);
    assert_eq!(keyring.versions(), vec![(1, KeyState::Active)]);
    assert_eq!(keyring.blind_index_key().version(), 1);
    assert_eq!(keyring.blind_index_keys().len(), 1);
}

#[test]
fn wrapped_key_unwraps_to_the_same_key() {
    let (_dir, _path, keyring) = new_keyring();
    let dek = DataKey::generate();
    let wrapped = keyring.wrap(&dek, PERSON).expect("wraps");
    assert_eq!(wrapped.kek_version, 1);
    let unwrapped = keyring.unwrap(&wrapped, PERSON).expect("unwraps");
    assert_eq!(unwrapped.as_bytes(), dek.as_bytes());
}

#[test]
fn wrapped_key_moved_to_another_person_fails_to_unwrap() {
    let (_dir, _path, keyring) = new_keyring();
    let wrapped = keyring.wrap(&DataKey::generate(), PERSON).expect("wraps");
    assert!(matches!(keyring.unwrap(&wrapped, b"person-0002"), Err(Error::Decrypt)));
}

#[test]
fn tampered_or_relabelled_wrapped_key_fails_to_unwrap() {
    let (_dir, _path, keyring) = new_keyring();
    let wrapped = keyring.wrap(&DataKey::generate(), PERSON).expect("wraps");
    let mut flipped = wrapped.clone();
    flipped.bytes[20] ^= 0x01;
    assert!(matches!(keyring.unwrap(&flipped, PERSON), Err(Error::Decrypt)));
    let truncated = WrappedKey { kek_version: 1, bytes: wrapped.bytes[..10].to_vec() };
    assert!(keyring.unwrap(&truncated, PERSON).is_err());
    let unknown = WrappedKey { kek_version: 9, ..wrapped };
    assert!(matches!(keyring.unwrap(&unknown, PERSON), Err(Error::UnknownKeyVersion(9))));
}

#[test]
fn after_rotation_new_wraps_use_version_2_and_old_wraps_still_unwrap() {
    let (_dir, path, keyring) = new_keyring();
    let old_dek = DataKey::generate();
    let old = keyring.wrap(&old_dek, PERSON).expect("wraps");

    assert_eq!(keyring.rotate_kek().expect("rotates"), 2);
    assert_eq!(keyring.current_version(), 2);
    assert_eq!(keyring.versions(), vec![(2, KeyState::Active), (1, KeyState::DecryptOnly)]);

    let new = keyring.wrap(&DataKey::generate(), PERSON).expect("wraps");
    assert_eq!(new.kek_version, 2);
    let unwrapped = keyring.unwrap(&old, PERSON).expect("version 1 still unwraps");
    assert_eq!(unwrapped.as_bytes(), old_dek.as_bytes());

    // The rotation is on disk: a restarted vault sees the same versions.
    let reloaded = Keyring::load(&path).expect("reloads");
    assert_eq!(reloaded.versions(), keyring.versions());
    reloaded.unwrap(&new, PERSON).expect("new wrap unwraps after reload");
}

#[test]
fn retired_version_refuses_unwrap() {
    let (_dir, _path, keyring) = new_keyring();
    let old = keyring.wrap(&DataKey::generate(), PERSON).expect("wraps");
    keyring.rotate_kek().expect("rotates");
    keyring.set_kek_state(1, KeyState::Retired).expect("retires version 1");
    match keyring.unwrap(&old, PERSON) {
        Err(Error::KeyVersionNotUsable { version, state }) => {
            assert_eq!((version, state), (1, KeyState::Retired));
        }
        other => panic!("expected KeyVersionNotUsable, got {other:?}"),
    }
    // Un-retiring is possible while the key still exists.
    keyring.set_kek_state(1, KeyState::DecryptOnly).expect("back to decrypt-only");
    keyring.unwrap(&old, PERSON).expect("unwraps again");
}

#[test]
fn active_version_cannot_be_retired_or_another_activated() {
    let (_dir, path, keyring) = new_keyring();
    assert!(matches!(
        keyring.set_kek_state(1, KeyState::Retired),
        Err(Error::KeyVersionNotUsable { version: 1, state: KeyState::Active })
    ));
    keyring.rotate_kek().expect("rotates");
    assert!(matches!(
        keyring.set_kek_state(1, KeyState::Active),
        Err(Error::KeyVersionNotUsable { version: 1, state: KeyState::DecryptOnly })
    ));
    assert!(matches!(keyring.set_kek_state(7, KeyState::Retired), Err(Error::UnknownKeyVersion(7))));
    // Refused changes leave memory and disk as they were.
    assert_eq!(keyring.current_version(), 2);
    assert_eq!(Keyring::load(&path).expect("reloads").versions(), keyring.versions());
}

#[test]
fn destroyed_version_is_gone_and_only_retired_versions_can_be_destroyed() {
    let (_dir, path, keyring) = new_keyring();
    let old = keyring.wrap(&DataKey::generate(), PERSON).expect("wraps");
    keyring.rotate_kek().expect("rotates");
    assert!(matches!(
        keyring.destroy_kek(1),
        Err(Error::KeyVersionNotUsable { version: 1, state: KeyState::DecryptOnly })
    ));
    keyring.set_kek_state(1, KeyState::Retired).expect("retires");
    keyring.destroy_kek(1).expect("destroys");
    assert_eq!(keyring.versions(), vec![(2, KeyState::Active)]);
    assert!(matches!(keyring.unwrap(&old, PERSON), Err(Error::UnknownKeyVersion(1))));
    let reloaded = Keyring::load(&path).expect("reloads");
    assert_eq!(reloaded.versions(), vec![(2, KeyState::Active)]);
    // Version numbers are never reused after a destruction.
    assert_eq!(keyring.rotate_kek().expect("rotates"), 3);
}

#[test]
fn keyring_file_is_created_owner_only() {
    let (_dir, path, _keyring) = new_keyring();
    assert_eq!(mode_of(&path), 0o600);
    // Rewrites keep the mode too.
    let keyring = Keyring::load(&path).expect("loads");
    keyring.rotate_kek().expect("rotates");
    assert_eq!(mode_of(&path), 0o600);
    // No temporary files are left behind.
    let entries = fs::read_dir(path.parent().expect("has a parent")).expect("lists").count();
    assert_eq!(entries, 1);
}

#[test]
fn reloaded_keyring_has_the_same_keys() {
    let (_dir, path, keyring) = new_keyring();
    let dek = DataKey::generate();
    let wrapped = keyring.wrap(&dek, PERSON).expect("wraps");
    let token = Token::generate(TokenKind::Person);

    let reloaded = Keyring::load_or_create(&path).expect("loads the existing file");
    let unwrapped = reloaded.unwrap(&wrapped, PERSON).expect("unwraps");
    assert_eq!(unwrapped.as_bytes(), dek.as_bytes());
    assert_eq!(
        reloaded.blind_index_key().digest("email", b"a@b.kz"),
        keyring.blind_index_key().digest("email", b"a@b.kz")
    );
    let text = token.encode(keyring.token_key());
    assert_eq!(Token::parse(&text, reloaded.token_key()), Ok(token));
}

#[test]
fn group_or_world_accessible_file_is_refused_naming_path_and_mode() {
    let (_dir, path, _keyring) = new_keyring();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        let error = Keyring::load(&path).expect_err("must refuse");
        let message = error.to_string();
        assert!(matches!(error, Error::Keyring(_)));
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(&format!("{mode:04o}")), "{message}");
        assert!(Keyring::load_or_create(&path).is_err());
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
    Keyring::load(&path).expect("a read-only owner file is fine");
}

#[test]
fn malformed_files_are_refused_without_echoing_key_text() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("keyring.json");
    let key = "c2VjcmV0LWtleS1ieXRlcy1zZWNyZXQta2V5LWJ5dGU=";
    let cases = [
        String::new(),
        "not json".to_owned(),
        format!(r#"{{"format":2,"keks":[],"index_keys":[],"token_key":"{key}"}}"#),
        // Key text where a number belongs: serde would quote it in its message.
        format!(
            r#"{{"format":1,"keks":[{{"version":"{key}","state":"active","key":"{key}"}}],"index_keys":[{{"version":1,"key":"{key}"}}],"token_key":"{key}"}}"#
        ),
        format!(
            r#"{{"format":1,"keks":[{{"version":1,"state":"{key}","key":"{key}"}}],"index_keys":[{{"version":1,"key":"{key}"}}],"token_key":"{key}"}}"#
        ),
        // Too short, and far too long, to be a key.
        format!(
            r#"{{"format":1,"keks":[{{"version":1,"state":"active","key":"AAAA"}}],"index_keys":[{{"version":1,"key":"{key}"}}],"token_key":"{key}"}}"#
        ),
        format!(
            r#"{{"format":1,"keks":[{{"version":1,"state":"active","key":"{}"}}],"index_keys":[{{"version":1,"key":"{key}"}}],"token_key":"{key}"}}"#,
            "A".repeat(4000)
        ),
        // Lifecycle violations.
        format!(
            r#"{{"format":1,"keks":[{{"version":1,"state":"active","key":"{key}"}},{{"version":2,"state":"active","key":"{key}"}}],"index_keys":[{{"version":1,"key":"{key}"}}],"token_key":"{key}"}}"#
        ),
        format!(
            r#"{{"format":1,"keks":[{{"version":1,"state":"active","key":"{key}"}},{{"version":2,"state":"decrypt_only","key":"{key}"}}],"index_keys":[{{"version":1,"key":"{key}"}}],"token_key":"{key}"}}"#
        ),
        format!(
            r#"{{"format":1,"keks":[{{"version":1,"state":"active","key":"{key}"}},{{"version":1,"state":"retired","key":"{key}"}}],"index_keys":[{{"version":1,"key":"{key}"}}],"token_key":"{key}"}}"#
        ),
        format!(
            r#"{{"format":1,"keks":[{{"version":1,"state":"active","key":"{key}"}}],"index_keys":[],"token_key":"{key}"}}"#
        ),
    ];
    for contents in &cases {
        write_private(&path, contents);
        let error = Keyring::load(&path).expect_err("must refuse");
        let message = error.to_string();
        assert!(matches!(error, Error::Keyring(_)), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains(&key[..20]), "key text leaked: {message}");
    }

    // The same key text in a well-formed file loads, proving the cases above fail for
    // the reason they test.
    write_private(
        &path,
        &format!(
            r#"{{"format":1,"keks":[{{"version":1,"state":"active","key":"{key}"}}],"index_keys":[{{"version":1,"key":"{key}"}}],"token_key":"{key}"}}"#
        ),
    );
    Keyring::load(&path).expect("well-formed file loads");
}

fn write_private(path: &Path, contents: &str) {
    fs::write(path, contents).expect("writes");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn file_is_versioned_json_with_base64_keys() {
    let (_dir, path, _keyring) = new_keyring();
    let text = fs::read_to_string(&path).expect("reads");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(json["format"], 1);
    assert_eq!(json["keks"][0]["version"], 1);
    assert_eq!(json["keks"][0]["state"], "active");
    assert_eq!(json["keks"][0]["key"].as_str().map(str::len), Some(44));
    assert_eq!(json["index_keys"][0]["version"], 1);
    assert_eq!(json["token_key"].as_str().map(str::len), Some(44));
}

#[test]
fn load_of_a_missing_file_fails_and_load_or_create_does_not_overwrite() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("keyring.json");
    assert!(matches!(Keyring::load(&path), Err(Error::Keyring(_))));
    let first = Keyring::load_or_create(&path).expect("creates");
    let wrapped = first.wrap(&DataKey::generate(), PERSON).expect("wraps");
    let second = Keyring::load_or_create(&path).expect("loads");
    second.unwrap(&wrapped, PERSON).expect("same keys, not a new keyring");
}

#[test]
fn blind_index_rotation_keeps_old_versions_newest_first() {
    let (_dir, path, keyring) = new_keyring();
    let old = keyring.blind_index_key();
    assert_eq!(keyring.rotate_blind_index_key().expect("rotates"), 2);
    assert_eq!(keyring.blind_index_key().version(), 2);
    let versions: Vec<u32> = keyring.blind_index_keys().iter().map(|key| key.version()).collect();
    assert_eq!(versions, vec![2, 1]);
    // An index computed before the rotation is still found through the old key.
    assert_eq!(keyring.blind_index_keys()[1].digest("email", b"a@b.kz"), old.digest("email", b"a@b.kz"));
    let reloaded = Keyring::load(&path).expect("reloads");
    assert_eq!(reloaded.blind_index_keys().len(), 2);

    assert!(matches!(keyring.remove_blind_index_key(2), Err(Error::Keyring(_))));
    assert!(matches!(keyring.remove_blind_index_key(5), Err(Error::UnknownKeyVersion(5))));
    keyring.remove_blind_index_key(1).expect("removes the old key");
    assert_eq!(keyring.blind_index_keys().len(), 1);
}

#[test]
fn shared_keyring_rotates_while_other_threads_wrap_and_unwrap() {
    let (_dir, _path, keyring) = new_keyring();
    let keyring = Arc::new(keyring);
    // The vault holds the provider as a trait object; the operator rotates through the
    // same keyring at the same time. No wrap or unwrap may fail because of it.
    let provider: Arc<dyn KeyProvider> = keyring.clone();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let provider = Arc::clone(&provider);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let dek = DataKey::generate();
                    let wrapped = provider.wrap(&dek, PERSON).expect("wraps");
                    let unwrapped = provider.unwrap(&wrapped, PERSON).expect("unwraps");
                    assert_eq!(unwrapped.as_bytes(), dek.as_bytes());
                }
            })
        })
        .collect();
    for _ in 0..3 {
        keyring.rotate_kek().expect("rotates while shared");
    }
    for worker in workers {
        worker.join().expect("no worker failed");
    }
    assert_eq!(provider.current_version(), 4);
}

#[test]
fn debug_output_contains_no_key_bytes() {
    let (_dir, path, keyring) = new_keyring();
    keyring.rotate_kek().expect("rotates");
    let printed = format!("{keyring:?} {keyring:#?}");
    assert!(printed.contains("keyring-file") || printed.contains("Keyring"));
    let text = fs::read_to_string(&path).expect("reads");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let mut keys = vec![json["token_key"].clone()];
    keys.extend(json["keks"].as_array().expect("array").iter().map(|kek| kek["key"].clone()));
    keys.extend(json["index_keys"].as_array().expect("array").iter().map(|key| key["key"].clone()));
    assert_eq!(keys.len(), 4);
    for key in keys {
        let encoded = key.as_str().expect("string");
        let bytes = decode_key(encoded);
        assert_no_key_bytes(&printed, bytes.as_ref());
    }
}

fn decode_key(encoded: &str) -> [u8; KEY_LEN] {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64");
    bytes.try_into().expect("32 bytes")
}
