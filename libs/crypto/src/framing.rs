//! Unambiguous byte encodings for MAC and AEAD inputs.
//!
//! Every variable-length part is preceded by its length, so no two different lists of
//! parts encode to the same bytes ("ab" + "c" never collides with "a" + "bc").

/// Appends `part` preceded by its length as a big-endian u64.
///
/// A u64 prefix (rather than u32) means no length can overflow the prefix, so encoding
/// never fails.
pub(crate) fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u64).to_be_bytes());
    out.extend_from_slice(part);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_splits_of_the_same_bytes_encode_differently() {
        let mut a = Vec::new();
        push_part(&mut a, b"ab");
        push_part(&mut a, b"c");
        let mut b = Vec::new();
        push_part(&mut b, b"a");
        push_part(&mut b, b"bc");
        assert_ne!(a, b);
    }
}
