//! Helpers for the tests that prove key bytes never appear in printed output.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// Lowercase hex, written out here so tests don't need another dependency.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every base64 spelling of `bytes`, without the padding so a prefix match still counts.
pub(crate) fn base64_forms(bytes: &[u8]) -> Vec<String> {
    [STANDARD.encode(bytes), STANDARD_NO_PAD.encode(bytes), URL_SAFE.encode(bytes), URL_SAFE_NO_PAD.encode(bytes)]
        .into_iter()
        .map(|s| s.trim_end_matches('=').to_owned())
        .collect()
}

/// Asserts that `printed` contains neither the hex nor any base64 form of `key`.
pub(crate) fn assert_no_key_bytes(printed: &str, key: &[u8]) {
    assert!(
        !printed.contains(&hex(key)) && !printed.contains(&hex(key).to_uppercase()),
        "hex of the key leaked into {printed:?}"
    );
    for encoded in base64_forms(key) {
        assert!(!printed.contains(&encoded), "base64 of the key leaked into {printed:?}");
    }
}
