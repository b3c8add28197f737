//! ipclass answers one question for other programs: is this client IP
//! address internal? Named sets of IPv4 and IPv6 prefixes are loaded from a
//! config file into a longest-prefix-match table and served over gRPC and
//! HTTP/JSON on one listener.
//!
//! # Layout
//!
//! - [`address`]: address text to the address that is looked up.
//! - [`table`]: the immutable longest-prefix-match table; no I/O.
//! - [`config`]: the TOML config and list files to a validated table spec.
//! - [`classify`]: the one classification function that every API shares.
//! - [`state`]: the table in use, swapped whole on reload.
//! - [`reload`]: follows the config files and swaps in a new table.
//! - [`grpc`], [`http`]: the two encodings of the same API.
//! - [`metrics`]: Prometheus metrics and the `/metrics` route.
//! - [`server`]: one listener for both, with graceful shutdown.
//! - [`cli`]: the `serve`, `check` and `lookup` commands.

pub mod activity;
pub mod address;
pub mod classify;
pub mod cli;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod reload;
pub mod response;
pub mod sched;
pub mod server;
pub mod state;
pub mod table;

/// Code generated from `proto/ipclass/v1/ipclass.proto`.
pub mod proto {
    tonic::include_proto!("ipclass.v1");

    /// Encoded descriptors of the proto files, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("ipclass_descriptor");
}
