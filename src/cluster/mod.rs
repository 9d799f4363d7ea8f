//! Running the registry as a cluster member: the write path, start-up
//! protection and the node's view of its peers.

pub mod peers;
pub mod protection;
pub mod writer;
