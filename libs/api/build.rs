//! Compiles the protos under the repository's `proto/` with protox (pure Rust),
//! so building needs no system `protoc`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "qupia/types/v1/types.proto",
    "qupia/vault/v1/vault.proto",
    "qupia/vault/v1/documents.proto",
    "qupia/vault/v1/statistics.proto",
    "qupia/audit/v1/audit.proto",
    "qupia/keys/v1/keys.proto",
    "qupia/gateway/v1/gateway.proto",
    "qupia/gateway/v1/documents.proto",
    "qupia/gateway/v1/statistics.proto",
    "qupia/gateway/v1/access_history.proto",
    "qupia/gateway/v1/disclosure.proto",
    "qupia/gateway/v1/subject_requests.proto",
    "qupia/accounts/v1/accounts.proto",
    "qupia/marketing/v1/marketing.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let descriptors = protox::compile(&files, [&root])?;

    // Reflection serves this set; compile_fds does not write it by itself.
    std::fs::write(out.join("qupia_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
