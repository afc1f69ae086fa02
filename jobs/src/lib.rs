//! Mobula's compute side. [`sandbox`]: the ephemeral container every task runs in (namespaces,
//! cgroups, copy-on-write root, seccomp) and its helper process. [`image`]: the node's image
//! store (the host userland and imported Docker/OCI/rootfs images). [`schedule`]: the pure state
//! machine that decides where and when a job's tasks run.

pub mod agent;
pub mod coordinator;
pub mod image;
pub mod sandbox;
pub mod schedule;
pub mod spec;
pub mod status;
pub mod tools;
pub mod wire;
