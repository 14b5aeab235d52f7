//! LogMemcached: a memcached-compatible cache whose item memory is one log in
//! huge pages, registered once with the RDMA NIC and replicated to read-only
//! replicas by one-sided RDMA. See README.md and DESIGN notes in the modules.

pub mod auth;
pub mod bench;
pub mod client;
pub mod clock;
pub mod error;
/// Invariant checks shared by the fuzz targets and the corpus replay test
/// (in `bench/`: like the load generator, they drive the whole stack).
#[doc(hidden)]
pub use bench::fuzzing;
pub mod index;
pub mod latency;
pub mod log;
pub mod logging;
pub mod memory;
pub mod protocol;
pub mod rdma;
pub mod rdma_wire;
pub mod replication;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod store;
