//! For `benches/volume.rs` only (hidden from the docs): a node's HTTP API on a store without
//! registering anywhere, and a scrub pass, to time them alone.

pub use crate::scrub::scrub;
pub use crate::server::{run, NodeState};
