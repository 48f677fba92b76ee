//! The keyring's on-disk form: versioned JSON with base64 keys, read with the permission
//! checks a security team expects and written atomically.
//!
//! Key text is handled in zeroizing buffers sized up front, so no reallocation leaves a
//! stray copy of a key on the heap; parsed records borrow from the file text rather than
//! copying it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Kek, KeySet};
use crate::dek::KEY_LEN;
use crate::{BlindIndexKey, Error, KeyState, TokenKey};

const FORMAT: u32 = 1;
/// Far above any real keyring; stops a wrong path from reading a huge file into memory.
const MAX_FILE_LEN: u64 = 1 << 20;

#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFileV1<'a> {
    format: u32,
    #[serde(borrow)]
    keks: Vec<KekRecord<'a>>,
    #[serde(borrow)]
    index_keys: Vec<IndexKeyRecord<'a>>,
    token_key: &'a str,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KekRecord<'a> {
    version: u32,
    state: KeyState,
    key: &'a str,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexKeyRecord<'a> {
    version: u32,
    key: &'a str,
}

pub(super) fn io_error(action: &str, path: &Path, err: &io::Error) -> Error {
    Error::Keyring(format!("cannot {action} keyring {}: {err}", path.display()))
}

fn format_error(path: &Path, problem: impl std::fmt::Display) -> Error {
    Error::Keyring(format!("keyring {} {problem}", path.display()))
}

/// Reads and parses the keyring at `path`; the caller checks the lifecycle invariants.
pub(super) fn read(path: &Path) -> Result<(KeySet, TokenKey), Error> {
    let file = File::open(path).map_err(|err| io_error("open", path, &err))?;
    // Check the opened file itself, not the path, so it can't be swapped in between.
    let metadata = file.metadata().map_err(|err| io_error("inspect", path, &err))?;
    if !metadata.is_file() {
        return Err(format_error(path, "is not a regular file"));
    }
    check_private(path, &metadata)?;
    if metadata.len() > MAX_FILE_LEN {
        return Err(format_error(path, "is too large to be a keyring"));
    }

    let capacity = usize::try_from(metadata.len()).unwrap_or(0) + 1;
    let mut text = Zeroizing::new(String::with_capacity(capacity));
    file.take(MAX_FILE_LEN + 1).read_to_string(&mut text).map_err(|err| io_error("read", path, &err))?;
    parse(path, &text)
}

/// Refuses a keyring that group or others can access in any way, naming the mode.
#[cfg(unix)]
fn check_private(path: &Path, metadata: &fs::Metadata) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format_error(
            path,
            format_args!(
                "has mode {mode:04o}, which lets group or others access it; \
                 it must be readable by its owner only (chmod 600)"
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &fs::Metadata) -> Result<(), Error> {
    Ok(())
}

fn parse(path: &Path, text: &str) -> Result<(KeySet, TokenKey), Error> {
    // serde_json's messages can quote the offending value, which may be key text: report
    // only where the problem is.
    let json_error =
        |err: serde_json::Error| format_error(path, format_args!("is not valid keyring json ({})", where_in(&err)));
    let FormatOnly { format } = serde_json::from_str(text).map_err(json_error)?;
    if format != FORMAT {
        return Err(format_error(path, format_args!("has format {format}, but this build reads format {FORMAT} only")));
    }
    let file: KeyringFileV1<'_> = serde_json::from_str(text).map_err(json_error)?;

    let mut keks = std::collections::BTreeMap::new();
    for record in &file.keks {
        let key = decode_key(record.key).ok_or_else(|| {
            format_error(path, format_args!("has a kek version {} key that is not 32 bytes of base64", record.version))
        })?;
        let kek = Kek { state: record.state, key: Arc::new(key) };
        if keks.insert(record.version, kek).is_some() {
            return Err(format_error(path, format_args!("lists kek version {} twice", record.version)));
        }
    }

    let mut index_keys = Vec::with_capacity(file.index_keys.len());
    for record in &file.index_keys {
        let key = decode_key(record.key).ok_or_else(|| {
            format_error(
                path,
                format_args!("has a blind-index key version {} that is not 32 bytes of base64", record.version),
            )
        })?;
        index_keys.push(Arc::new(BlindIndexKey::from_bytes(record.version, key)));
    }
    index_keys.sort_by_key(|key| std::cmp::Reverse(key.version()));

    let token_key = decode_key(file.token_key)
        .ok_or_else(|| format_error(path, "has a token key that is not 32 bytes of base64"))?;
    Ok((KeySet { keks, index_keys }, TokenKey::from_bytes(token_key)))
}

fn where_in(err: &serde_json::Error) -> String {
    let kind = match err.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected field or value",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{kind} at line {} column {}", err.line(), err.column())
}

/// Decodes standard base64 of exactly 32 bytes straight into a zeroizing buffer.
fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    // Room for the decoder's conservative estimate; the exact length is checked below.
    let mut decoded = Zeroizing::new([0u8; KEY_LEN + 8]);
    let len = STANDARD.decode_slice(text, decoded.as_mut()).ok()?;
    if len != KEY_LEN {
        return None;
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&decoded[..KEY_LEN]);
    Some(key)
}

fn encode_key(key: &[u8; KEY_LEN]) -> Zeroizing<String> {
    // `encode` computes the exact length first and allocates once.
    Zeroizing::new(STANDARD.encode(key))
}

/// The file's bytes for `keys`, in a zeroizing buffer.
fn render(keys: &KeySet, token_key: &TokenKey) -> Zeroizing<Vec<u8>> {
    let kek_texts: Vec<(u32, KeyState, Zeroizing<String>)> =
        keys.keks.iter().map(|(version, kek)| (*version, kek.state, encode_key(&kek.key))).collect();
    // Oldest first, as a person reading the file expects a history.
    let index_texts: Vec<(u32, Zeroizing<String>)> =
        keys.index_keys.iter().rev().map(|key| (key.version(), encode_key(key.as_bytes()))).collect();
    let token_text = encode_key(token_key.as_bytes());

    let file = KeyringFileV1 {
        format: FORMAT,
        keks: kek_texts
            .iter()
            .map(|(version, state, key)| KekRecord { version: *version, state: *state, key })
            .collect(),
        index_keys: index_texts.iter().map(|(version, key)| IndexKeyRecord { version: *version, key }).collect(),
        token_key: &token_text,
    };

    // Reserve generously up front: a Vec that grows frees its old buffer unzeroized.
    let records = kek_texts.len() + index_texts.len() + 1;
    let mut bytes = Zeroizing::new(Vec::with_capacity(1024 + 256 * records));
    serde_json::to_writer_pretty(&mut *bytes, &file).expect("serializing strings and integers into memory cannot fail");
    bytes.push(b'\n');
    bytes
}

/// Creates the keyring at `path` unless something already exists there. Returns `false`
/// (and writes nothing) if it does, so the caller loads that file instead.
pub(super) fn create(path: &Path, keys: &KeySet, token_key: &TokenKey) -> Result<bool, Error> {
    let temp = write_temp(path, &render(keys, token_key))?;
    // A hard link, unlike a rename, fails if the target exists: no keyring another
    // process just created (and may already use) is ever overwritten.
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            sync_parent(path)?;
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(io_error("create", path, &err)),
    }
}

/// Replaces the keyring at `path` atomically: readers and a crash see either the old
/// file or the new one, never a mix.
pub(super) fn replace(path: &Path, keys: &KeySet, token_key: &TokenKey) -> Result<(), Error> {
    let temp = write_temp(path, &render(keys, token_key))?;
    if let Err(err) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(io_error("replace", path, &err));
    }
    sync_parent(path)
}

/// Writes `bytes` to a new owner-only file beside `path` and syncs it to disk.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, Error> {
    let name = path.file_name().ok_or_else(|| format_error(path, "is not a file path"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{:016x}.tmp", rand::random::<u64>()));
    let temp = path.with_file_name(temp_name);

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    // The mode is applied at creation, so the file is never readable by others, not
    // even between creating and writing it.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temp).map_err(|err| io_error("create a temporary file for", path, &err))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(err) = written {
        drop(file);
        let _ = fs::remove_file(&temp);
        return Err(io_error("write", path, &err));
    }
    Ok(temp)
}

/// Syncs the directory so the new name itself survives a crash.
fn sync_parent(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| io_error("sync the directory of", path, &err))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
