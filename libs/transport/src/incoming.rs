//! The accepted connections a service serves gRPC on.

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// The connections accepted on `listener`, with Nagle's algorithm off.
///
/// A gRPC answer is several small writes (headers, data, trailers). With Nagle's
/// algorithm on, the second waits for the peer to acknowledge the first, and a peer
/// that delays its acknowledgement (40 ms on Linux) stalls every call that long. Every
/// Qupia server accepts through this; tonic's clients already set `TCP_NODELAY`.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
