//! Long polls: who waits on which app, and how they are woken.

mod feed;
mod hub;

pub use feed::{Change, ChangeFeed};
pub use hub::{PollHub, Watch};
