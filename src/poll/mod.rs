//! Long polls: who waits on which app, and how they are woken.

mod hub;

pub use hub::{PollHub, Watch};
