//! Running the registry as a cluster member: forming the cluster, the write
//! and renew paths, eviction, start-up protection, membership changes, repairing a replica that
//! diverged, a node that learns it was removed, and the node's view of its
//! peers, and handing leadership over. What nodes say to each other (the
//! requests and answers the link carries) lives in [`messages`], which
//! imports none of the modules that make and take them.

pub mod appender;
pub mod batches;
pub mod bootstrap;
pub mod catch_up;
pub mod consistency;
pub mod evictor;
pub mod founding;
pub mod handover;
pub mod identity;
pub mod leader_watch;
pub mod link;
pub mod membership;
pub mod messages;
pub mod peers;
pub mod protection;
pub mod quorum;
pub mod removal;
pub mod renewer;
pub mod repair;
pub mod replica;
pub mod scrub;
pub mod writer;
