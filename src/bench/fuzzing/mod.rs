//! Invariant checks the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the
//! corpus replay (`tests/fuzz_corpora.rs`) share: each target is one
//! `fn(&[u8])` here that panics when an invariant breaks, so a corpus file is
//! an ordinary test input and a libFuzzer finding is a failing `cargo test`.
//!
//! | target          | what it drives                                                  |
//! |-----------------|-----------------------------------------------------------------|
//! | `text`          | arbitrary bytes through [`crate::protocol::step`] on a real store |
//! | `binary`        | binary frames built from the input (header fields, lies, bodies) |
//! | `meta`          | meta command lines: flag soup, base64 keys, data blocks          |
//! | `ud_request`    | one request datagram through the server's datagram path          |
//! | `client_reply`  | the client's response decoders and reply assembly                |
//! | `replica_apply` | the replica's record validation and apply (`replication::fuzzing`) |
//!
//! What every protocol run checks ([`conn`]): each step consumes at least one
//! byte and no more than it was given; `NeedMore` and `Discarded` write
//! nothing; a step's output is bounded by what it consumed; its output is
//! whole replies of its protocol; feeding the input in pieces gives the same
//! requests and the same replies as feeding it whole; the store's counters
//! stay within the log. Each target adds its own (see its file).
//!
//! Adding a target: its `fn(&[u8])` here, one line in [`TARGETS`], a file in
//! `fuzz/fuzz_targets/` calling it, a `[[bin]]` in `fuzz/Cargo.toml`, and its
//! corpus under `fuzz/corpus/<name>/`.

mod binary;
mod client;
mod conn;
mod input;
mod meta;
mod text;
mod ud;

pub use binary::binary;
pub use client::client_reply;
pub use meta::meta;
pub use text::text;
pub use ud::ud_request;

/// A fuzz target: panics when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by its cargo-fuzz name; `tests/fuzz_corpora.rs` replays
/// `fuzz/corpus/<name>/*` through each. One line per target.
#[rustfmt::skip]
pub const TARGETS: &[(&str, Target)] = &[
    ("text", text),
    ("binary", binary),
    ("meta", meta),
    ("ud_request", ud_request),
    ("client_reply", client_reply),
    ("replica_apply", crate::replication::fuzzing::replica_apply),
];
