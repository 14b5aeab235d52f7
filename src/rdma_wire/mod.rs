//! The RDMA client protocol: what the RDMA client (`src/client/`) and the
//! server's RDMA endpoint (`src/server/rdma/`) agree on, so neither names the
//! other. The requests and replies themselves are the binary memcached
//! protocol; this module holds what RDMA adds around them.
//!
//! * [`handshake`]: the TCP side channel (greeting, commands, endpoint list,
//!   RC capacity).
//! * [`frames`]: framing of whole datagrams and RC messages, splitting replies
//!   into datagrams, the [`NEEDS_RC`] frame.
//! * [`peer`]: who sent a datagram, as the server keys its per-client state.
//!
//! # Side channel (TCP at ADDR:PORT)
//!
//! ```text
//! client -> server  "LMCL" version(1) command(u8)
//! command 'U'  server -> client  count(u8), then count 64-byte UdEndpointInfo
//!              records (rdma::connect wire format), one per worker; closes.
//! command 'R'  server -> client  capacity(u32 BE): largest message either way
//!              then rdma::connect::exchange of RcEndpointInfo, both connect,
//!              barrier 'R'. The stream stays open; closing it ends the RC QP.
//! ```
//!
//! A capacity of 0 is a refusal (the server has no room for another RC
//! connection).
//!
//! # Datagrams
//!
//! A request datagram holds one or more whole binary-protocol requests; the
//! framing of the whole datagram is checked before any of it runs
//! ([`frames::split_frames`]), and a malformed datagram (bad magic, lengths
//! that disagree, a truncated frame, trailing bytes) is dropped without a
//! reply. The replies go back in as many datagrams as needed, each holding
//! whole frames (at most the path MTU, [`frames::reply_chunks`]). A reply
//! frame larger than a datagram (a big value) is replaced by a [`NEEDS_RC`]
//! frame carrying the request's opcode, opaque and key; the client then
//! repeats that request over RC.
//!
//! # RC messages
//!
//! Over RC a client SENDs the same binary requests (up to the capacity the
//! side channel announced) and the reply comes back as one SEND, one request
//! at a time per connection. A reply that does not fit the capacity (only a
//! multi-get of several huge values) is one empty `E2BIG` reply per request
//! ([`frames::write_status_each`]).
//!
//! # Retries apply writes once
//!
//! Over UD a request or its reply can be lost. The client retries by sending
//! the very same datagram (same request id in the `opaque` field) to the same
//! server QP it sent the original to. The server remembers, per client
//! ([`peer::peer_key`]), the replies to that client's last few writes and
//! answers a repeated id from there without running it again, so an `incr`
//! whose reply was lost counts once. Reads simply run again.

pub mod frames;
pub mod handshake;
pub mod peer;

pub use frames::NEEDS_RC;
pub use handshake::{CMD_RC, CMD_UD, HELLO, VERSION};
