//! raft-discovery: a registry that speaks the HTTP API of Bilibili's
//! `discovery`, whose nodes agree on every change through Raft.
//!
//! A map of the crate, from the inside out (dependencies point inward):
//! - [`registry`]: apps, instances and the commands that change them; plain
//!   logic with no I/O, applied identically on every replica.
//! - [`poll`]: the hub where held long polls wait for the apps they watch.
//! - [`local`]: the registry as applied on this node, shared by the state
//!   machine (writer) and the handlers (readers), waking polls on change.
//! - [`self_discovery`]: the cluster's own members published as the app
//!   `infra.discovery`.
//! - [`raft`]: the openraft glue: sled log store, state machine with
//!   snapshots, and the Raft RPC client.
//! - [`cluster`]: the write path (batching, forwarding to the leader),
//!   start-up protection and peer liveness; it reaches peers through the
//!   [`cluster::link::PeerLink`] it defines.
//! - [`peer`]: the peer surface on its own listener, mutual TLS: Raft RPCs,
//!   forwarded writes and renews, both the serving and the calling side.
//! - [`http`]: the client listener: the discovery API, status, and
//!   membership changes behind the admin token and write allow-list.
//! - [`server`]: the accept loop both listeners run (TCP or TLS).
//! - [`shutdown`]: the signal every long-lived task stops on.
//! - [`fair`]: what one client may take of what all share (held polls,
//!   connections, new instances) and how often a warning is logged.
//! - [`auth`]: the admin token operators' changes are checked against.
//! - [`clock`]: the wall clock proposers stamp commands with.
//! - [`wire`]: the binary frames peers exchange on the hot paths (Raft
//!   appends and votes, forwarded writes and renews), versioned.
//! - [`config`]: the TOML file, flags and environment of a node.
//! - [`upstream`]: following an original discovery cluster both ways while
//!   a fleet moves over.
//! - [`node`]: everything wired into one running node, with its shutdown.

// openraft's storage and RPC error types are large and required by its
// traits; boxing them at every call would only obscure the code.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod fair;
pub mod http;
pub mod local;
pub mod node;
pub mod overrides;
pub mod peer;
pub mod poll;
pub mod raft;
pub mod registry;
pub mod self_discovery;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod upstream;
pub mod wire;
pub mod zones;
