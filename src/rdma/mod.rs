//! Safe wrapper over `rdma-sys` (libibverbs): the only place in the crate with
//! verbs `unsafe`. Everything else (replication, the UD/RC client endpoint,
//! `logmemcached rdma-devices`) goes through the types here.
//!
//! Two compositions on top, without `unsafe` of their own, are what both the
//! server's RDMA endpoint and the client are built on: [`UdEndpoint`] (a UD QP
//! with its CQs and posted buffer slots, from [`UdEndpoint::builder`]) and
//! [`RcMessenger`] (an RC QP with one send and one receive message buffer).
//!
//! # Objects and who keeps whom alive
//!
//! Verbs objects have parents that must outlive them: a PD and its CQs must
//! outlive a QP, a PD must outlive an MR, the context must outlive everything,
//! and the memory behind an MR must stay mapped while the MR exists. Here:
//!
//! * parents are reference counted: [`ProtectionDomain`], [`CompletionQueue`],
//!   [`QueuePair`](RcQp)s and [`AddressHandle`]s hold an `Arc` of their parent's
//!   inner object, so dropping the caller's handle to a PD or CQ while a QP uses
//!   it does not destroy it; the verbs object is destroyed when its last user is
//!   gone, children first. There is no way to name a QP whose CQ was destroyed.
//! * memory is owned or borrowed by its MR: [`MemoryRegion<M>`] keeps `M`
//!   (an owned [`Buffer`], an `Arc<Region>`, or a borrowed `&'r Region`). With a
//!   borrowed region the MR carries the borrow's lifetime, so dropping (or moving)
//!   the region while its MR lives is a compile error:
//!
//! ```compile_fail
//! use logmemcached::memory::region::{Region, HugePages};
//! use logmemcached::rdma::{Context, Access};
//! let ctx = Context::open(None).unwrap();
//! let pd = ctx.alloc_pd().unwrap();
//! let region = Region::anonymous(1 << 20, HugePages::Off).unwrap();
//! let mr = pd.register(&region, Access::REMOTE_READ).unwrap();
//! drop(region); // error[E0505]: cannot move out of `region` because it is borrowed
//! let _ = mr.rkey();
//! ```
//!
//! The same code with the region outliving its MR compiles; this is also the
//! shape of a replica pulling from a primary (the primary runs
//! `handshake_rc(.., Some(log_mr.remote()), ..)` on its side of the stream):
//!
//! ```no_run
//! use std::time::Duration;
//! use logmemcached::memory::region::{Region, HugePages};
//! use logmemcached::rdma::{connect, Access, Context, QpCaps, RcOptions};
//! # fn main() -> logmemcached::error::Result<()> {
//! let ctx = Context::open(None)?;                        // first device, e.g. rxe0
//! let pd = ctx.alloc_pd()?;
//! let staging = Region::anonymous(4 << 20, HugePages::Auto)?;
//! let mr = pd.register(&staging, Access::LOCAL_WRITE)?;   // registered once
//! let cq = ctx.create_cq(256, true)?;                     // with a completion channel
//! let qp = pd.create_rc_qp(&cq, &cq, &QpCaps::default(), &RcOptions::default())?;
//! let mut side = std::net::TcpStream::connect("10.0.2.15:11311")?;
//! let qp = connect::handshake_rc(&mut side, qp, None, Duration::from_secs(10))?;
//! let log = qp.remote().mem;                              // the primary's advertised region
//! qp.post_read(1, mr.slice(0, 4096)?, log.slice(0, 4096)?, true)?;
//! cq.wait_one(Duration::from_secs(5))?.ok()?;             // typed error on failure
//! let mut head = [0u8; 64];
//! mr.read(0, &mut head);
//! # Ok(()) }
//! ```
//!
//! * the MR is deregistered (in `Drop`) before its memory is released, and a
//!   work request still in flight against a deregistered MR completes with a
//!   protection error instead of touching freed memory (the NIC checks keys).
//! * no references into registered memory are handed out: the NIC may write it
//!   at any moment, so bytes move in and out by copy: `read` on any MR, and
//!   `write` only on an MR over a [`Buffer`] (a registered
//!   [`Region`](crate::memory::region::Region) is written only through its
//!   single `RegionWriter`, which the log owns). Whether the bytes are
//!   *complete* is the caller's protocol (wait for the signaled completion).
//!
//! Work requests name memory through bounds-checked [`LocalSlice`] (from an MR)
//! and [`RemoteSlice`] (from a [`RemoteMemory`] a peer advertised; a wrong rkey or
//! range is the peer's problem and comes back as a `REM_ACCESS_ERR` completion).
//!
//! # Errors
//!
//! Every verb failure is a [`crate::error::Error`] with context. Failed work
//! completions are typed: [`Wc::ok`] returns a [`WcError`] carrying the
//! [`WcStatus`] (its `IBV_WC_*` name and `ibv_wc_status_str` text), the wr_id
//! and the vendor error; it converts into the crate error with `?`.
//!
//! # Connection setup: a TCP side channel, not rdma_cm
//!
//! [`connect`] exchanges a fixed 64-byte record (GID, LID, QPN, PSN, MTU, qkey,
//! rkey, address, length) over a TCP stream the caller opened, then drives the
//! QP through INIT, RTR, RTS itself. Why not the RDMA connection manager:
//! * the replication layer already needs a TCP control connection to the primary
//!   (admin, epoch, reconnect with backoff); the side channel rides on it;
//! * rdma_cm adds an event channel, its own thread-unsafe state machine and
//!   address resolution (ARP over the RDMA netdev), none of which helps a pull
//!   replica that only needs the primary's QPN, GID and one rkey;
//! * the same code sets up RC and UD and is easy to test against a peer that
//!   dies (a TCP error is a plain `io::Error`);
//! * the endpoint record also carries the region's rkey/address/length, which
//!   rdma_cm would need private data for anyway.
//!
//! # RoCE specifics
//!
//! On Ethernet link layers (RoCE, and Soft-RoCE `rxe`) every QP and address
//! handle needs the GRH with a source GID index. [`Context::default_gid_index`]
//! picks one automatically (an IPv4-mapped RoCE v2 GID: index 1 on `rxe`), and
//! every option struct lets the caller override it. `retry_cnt` must be < 7:
//! `rxe` (like the spec) treats 7 as "retry forever", and then a dead peer never
//! produces an error completion.

pub mod connect;
mod cq;
pub mod cycles;
mod device;
pub mod devinfo;
mod mr;
mod qp;
mod rc_messenger;
mod ud_endpoint;

pub use connect::{RcEndpointInfo, UdEndpointInfo};
pub use cq::{CompletionQueue, Wc, WcError, WcOpcode, WcStatus};
pub use device::{devices, Context, DeviceAttr, DeviceInfo, Gid, LinkLayer, Mtu, PortAttr};
pub use devinfo::print_devices;
pub use mr::{
    memlock_plan, Access, Buffer, LocalSlice, MemlockPlan, MemoryRegion, ProtectionDomain, RegionRange,
    RegisterableMemory, RemoteMemory, RemoteSlice,
};
pub use qp::{
    AddressHandle, PreparedRcQp, QpCaps, QpState, RcOptions, RcQp, ReplyRoute, UdDest, UdOptions, UdQp, GRH_SIZE,
};
pub use rc_messenger::{PreparedRcMessenger, RcMessenger};
pub use ud_endpoint::{UdEndpoint, UdEndpointBuilder};
