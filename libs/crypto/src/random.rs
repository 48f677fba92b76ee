//! Where the per-request randomness comes from: data keys, AES-GCM nonces and token ids.
//!
//! These are drawn from `rand`'s thread-local generator: ChaCha12, seeded from the
//! operating system's CSPRNG and reseeded from it after every 64 KiB of output and after
//! a `fork`. A request takes a data key, a nonce per field and a token id or two; asking
//! the kernel for each (one `getrandom` system call apiece) cost more than generating
//! them in user space. Long-lived keys (KEKs, the token key, blind-index keys) are drawn
//! from the operating system directly, as before: they are rare and worth the call.

use rand::RngCore;

/// Fills `bytes` from the thread's CSPRNG.
pub(crate) fn fill(bytes: &mut [u8]) {
    rand::thread_rng().fill_bytes(bytes);
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn draws_do_not_repeat_across_threads() {
        // Each thread's generator has its own seed: ids drawn at once on many threads
        // never collide (a shared or unseeded state would repeat them).
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..1000)
                        .map(|_| {
                            let mut id = [0u8; 16];
                            super::fill(&mut id);
                            id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for handle in handles {
            for id in handle.join().expect("thread") {
                assert!(seen.insert(id), "an id repeated");
            }
        }
        assert_eq!(seen.len(), 8000);
    }
}
