//! Qupia's gRPC API as generated Rust: messages, clients and servers for every
//! service, and the encoded descriptor set that server reflection serves.
//!
//! Generated code lives here, with the conversions between its enums and the
//! domain types. Validation of what a request carries happens in
//! each service, at the edge, into the domain types of `qupia-domain`.

pub mod convert;

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

/// The access log's API, served by the vault (to the gateway) and the gateway (to
/// the security team).
pub mod audit {
    #[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("qupia.audit.v1");
    }
}

/// Key administration, served by the vault (to the gateway) and the gateway (to the
/// security team).
pub mod keys {
    #[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("qupia.keys.v1");
    }
}

/// The gateway: the API internal services call.
pub mod gateway {
    #[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("qupia.gateway.v1");
    }
}

/// The accounts service: registration and the rights of the people registered.
pub mod accounts {
    #[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("qupia.accounts.v1");
    }
}

/// The marketing service: audiences, campaigns and statistics over tokens.
pub mod marketing {
    #[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("qupia.marketing.v1");
    }
}

/// The encoded `FileDescriptorSet` of every Qupia proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/qupia_descriptor.bin"));
