//! Mobula's metadata service: the namespace (accounts, directories, objects, snaplinks), the
//! storage-node registry, multipart uploads and the reclamation queue, kept in SQLite (WAL, one
//! writer, `synchronous=FULL`) and served over HTTP ([`server`]) to the gateway and the storage
//! nodes through [`MetadataClient`].
//!
//! Libraries here never read configuration: the binary opens the [`Db`] and calls [`server::run`].

pub mod client;
pub mod db;
pub mod jobs;
pub mod keys;
pub mod namespace;
pub mod registry;
pub mod server;
pub mod types;
pub mod uploads;

pub use client::MetadataClient;
pub use db::Db;

#[cfg(test)]
mod tests;
