//! raft-discovery: a registry that speaks the HTTP API of Bilibili's
//! `discovery`, whose nodes agree on every change through Raft.
//!
//! A map of the crate, from the inside out:
//! - [`registry`]: apps, instances and the commands that change them; plain
//!   logic with no I/O, applied identically on every replica.
pub mod registry;
