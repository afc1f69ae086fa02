//! The `mobula` binary's library half: starting roles and clusters ([`cluster`]) and the
//! command-line client ([`client`]). `main.rs` only parses arguments and calls into these.

pub mod admin;
pub mod client;
pub mod cluster;
pub mod compute;
pub mod jobcli;
pub mod keyfile;
pub mod nodecli;
pub mod sign;
pub mod ssh_agent;
pub mod status;
pub mod upkey;
pub mod ups3;
pub mod upvolume;
