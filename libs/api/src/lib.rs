//! Qupia's gRPC API as generated Rust: messages, clients and servers for every
//! service, and the encoded descriptor set that server reflection serves.
//!
//! Only generated code lives here. Validation of what a request carries happens in
//! each service, at the edge, into the domain types of `qupia-domain`.

/// Shared types: fields, purposes, per-item errors.
pub mod types {
    #[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("qupia.types.v1");
    }
}

/// The vault: the only process that holds plaintext personal data or keys.
pub mod vault {
    #[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("qupia.vault.v1");
    }
}

/// The encoded `FileDescriptorSet` of every Qupia proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/qupia_descriptor.bin"));
