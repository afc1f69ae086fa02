//! Mobula's metadata service: the namespace (accounts, directories, objects, snaplinks), the
//! storage-node registry, multipart uploads and the reclamation queue, kept in SQLite (WAL, one
//! writer, `synchronous=FULL`) and served over HTTP (`server.rs`) to the gateway and the storage
//! nodes through [`MetadataClient`].
//!
//! Libraries here never read configuration: the binary opens the [`Db`] and calls [`serve`].
//!
//! The surface: [`api`] (the wire types and what callers share with the service),
//! [`MetadataClient`] (its typed client), [`Db`] and [`serve`] (to run it). Everything else —
//! SQL, transactions, the RPC routes — is private to this crate.

pub mod api;
#[doc(hidden)]
pub mod bench;
mod buckets;
pub mod client;
mod commit;
mod db;
mod error;
mod jobs;
mod keys;
mod local;
mod namespace;
mod paths;
mod registry;
mod server;
mod uploads;

pub use client::MetadataClient;
pub use db::Db;
pub use error::Error;
pub use server::run as serve;

#[cfg(test)]
mod bucket_tests;
#[cfg(test)]
mod tests;
