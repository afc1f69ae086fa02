//! Mobula's compute side, without the sandbox (that is `mobula-sandbox`). [`schedule`]: the pure
//! state machine that decides where and when a job's tasks run; [`coordinator`]: drives jobs
//! (runs in a gateway); [`agent`] (feature `agent`): runs tasks in sandboxes on a storage node;
//! [`tools`] (feature `agent`): the in-task tools; [`spec`], [`status`] and [`api`]: the job spec, its status and
//! the coordinator–agent wire types; [`client`]: the agent's client.

#[cfg(feature = "agent")]
pub mod agent;
pub mod api;
pub mod client;
pub mod coordinator;
pub mod schedule;
pub mod spec;
pub mod status;
#[cfg(feature = "agent")]
pub mod tools;
