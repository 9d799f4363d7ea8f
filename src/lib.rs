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
//!   start-up protection and peer liveness.
//! - [`http`]: the discovery API, the internal routes peers call, admin.
//! - [`clock`]: the wall clock proposers stamp commands with.
//! - [`config`]: the TOML file, flags and environment of a node.
//! - [`node`]: everything wired into one running node, with its shutdown.

// openraft's storage and RPC error types are large and required by its
// traits; boxing them at every call would only obscure the code.
#![allow(clippy::result_large_err)]

pub mod clock;
pub mod cluster;
pub mod config;
pub mod http;
pub mod local;
pub mod node;
pub mod poll;
pub mod raft;
pub mod registry;
pub mod self_discovery;
