//! Mobula's metadata service: the namespace (accounts, directories, objects, snaplinks), the
//! storage-node registry, multipart uploads, jobs and the reclamation queue, kept in SQLite
//! (embedded: WAL, one writer, `synchronous=FULL`) or PostgreSQL (several metadata services
//! over one database) behind one seam ([`sql::Sql`]), and served over HTTP (`server.rs`) to the
//! gateway and the storage nodes through [`MetadataClient`].
//!
//! Libraries here never read configuration: the binary opens the [`Db`] and calls [`serve`].
//!
//! The surface: [`api`] (the wire types and what callers share with the service),
//! [`MetadataClient`] (its typed client), [`Db`] and [`serve`] (to run it), [`sql::Dialect`]
//! (which backend a `Db` is). The logic — namespace, buckets, uploads, jobs, registry — is
//! written once against [`sql::Sql`]; transactions and the RPC routes are private to this crate.

pub mod api;
#[doc(hidden)]
pub mod bench;
mod buckets;
mod cache;
pub mod client;
mod commit;
mod db;
mod error;
mod job_watch;
mod jobs;
mod keys;
mod local;
mod namespace;
mod paths;
mod pg;
mod registry;
mod repairs;
mod schema;
mod server;
pub mod sql;
mod sqlite;
#[doc(hidden)]
pub mod testing;
mod uploads;

pub use client::MetadataClient;
pub use db::Db;
pub use error::Error;
pub use pg::redact as redact_url;
pub use server::run as serve;

#[cfg(test)]
mod backend_tests;
#[cfg(test)]
mod bucket_tests;
#[cfg(test)]
mod testdb;
#[cfg(test)]
mod tests;
