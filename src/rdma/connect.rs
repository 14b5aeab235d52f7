//! Connection setup over a TCP side channel (see the module doc of
//! [`crate::rdma`] for why not rdma_cm).
//!
//! Each side writes one fixed 64-byte record and reads the peer's:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..4   | magic `LMRV` |
//! | 4      | version (1) |
//! | 5      | kind: 1 = RC, 2 = UD |
//! | 6      | MTU (verbs enum, 1..=5) |
//! | 7      | reserved (0) |
//! | 8..24  | GID |
//! | 24..26 | LID (big-endian, as all integers) |
//! | 26..28 | reserved |
//! | 28..32 | QPN |
//! | 32..36 | PSN (RC) |
//! | 36..40 | qkey (UD) |
//! | 40..44 | rkey of the advertised memory (RC; 0 = none) |
//! | 44..48 | reserved |
//! | 48..56 | address of the advertised memory |
//! | 56..64 | length of the advertised memory |
//!
//! Everything read is peer-controlled and validated; a short read, a bad magic
//! or an out-of-range field is an error, never a panic.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::bail;
use crate::error::{Context as _, Result};

use super::device::{Gid, Mtu};
use super::mr::RemoteMemory;
use super::qp::{PreparedRcQp, RcQp};

pub const WIRE_LEN: usize = 64;
const MAGIC: &[u8; 4] = b"LMRV";
const VERSION: u8 = 1;
const KIND_RC: u8 = 1;
const KIND_UD: u8 = 2;

/// What a peer needs to connect an RC QP to ours, plus the memory we let it
/// READ/WRITE (zero when none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RcEndpointInfo {
    pub gid: Gid,
    pub lid: u16,
    pub qpn: u32,
    pub psn: u32,
    pub mtu: Mtu,
    pub mem: RemoteMemory,
}

impl RcEndpointInfo {
    pub fn with_memory(mut self, mem: RemoteMemory) -> RcEndpointInfo {
        self.mem = mem;
        self
    }
}

/// What a peer needs to send datagrams to our UD QP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdEndpointInfo {
    pub gid: Gid,
    pub lid: u16,
    pub qpn: u32,
    pub qkey: u32,
    pub mtu: Mtu,
}

/// An endpoint record with a fixed wire encoding.
pub trait WireInfo: Sized {
    fn encode(&self) -> [u8; WIRE_LEN];
    fn decode(b: &[u8; WIRE_LEN]) -> Result<Self>;
}

struct Raw {
    kind: u8,
    mtu: u8,
    gid: [u8; 16],
    lid: u16,
    qpn: u32,
    psn: u32,
    qkey: u32,
    rkey: u32,
    addr: u64,
    len: u64,
}

impl Raw {
    fn encode(&self) -> [u8; WIRE_LEN] {
        let mut b = [0u8; WIRE_LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = self.kind;
        b[6] = self.mtu;
        b[8..24].copy_from_slice(&self.gid);
        b[24..26].copy_from_slice(&self.lid.to_be_bytes());
        b[28..32].copy_from_slice(&self.qpn.to_be_bytes());
        b[32..36].copy_from_slice(&self.psn.to_be_bytes());
        b[36..40].copy_from_slice(&self.qkey.to_be_bytes());
        b[40..44].copy_from_slice(&self.rkey.to_be_bytes());
        b[48..56].copy_from_slice(&self.addr.to_be_bytes());
        b[56..64].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    fn decode(b: &[u8; WIRE_LEN], want_kind: u8) -> Result<Raw> {
        if &b[0..4] != MAGIC {
            bail!("peer sent no LogMemcached RDMA endpoint record (bad magic {:02x?})", &b[0..4]);
        }
        if b[4] != VERSION {
            bail!("peer speaks endpoint record version {}, we speak {VERSION}", b[4]);
        }
        if b[5] != want_kind {
            bail!("peer sent a {} endpoint, expected {}", kind_name(b[5]), kind_name(want_kind));
        }
        let u32at = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_be_bytes(x)
        };
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[8..24]);
        let r = Raw {
            kind: b[5],
            mtu: b[6],
            gid,
            lid: u16::from_be_bytes([b[24], b[25]]),
            qpn: u32at(28),
            psn: u32at(32),
            qkey: u32at(36),
            rkey: u32at(40),
            addr: u64at(48),
            len: u64at(56),
        };
        if Mtu(u32::from(r.mtu)).bytes().is_none() {
            bail!("peer sent MTU code {} (valid: 1..=5)", r.mtu);
        }
        if r.qpn == 0 || r.qpn > 0x00ff_ffff {
            bail!("peer sent QPN {:#x} (must be 1..2^24)", r.qpn);
        }
        if r.psn > 0x00ff_ffff {
            bail!("peer sent PSN {:#x} (must be < 2^24)", r.psn);
        }
        if r.addr.checked_add(r.len).is_none() {
            bail!("peer advertised memory {:#x}+{} that wraps around", r.addr, r.len);
        }
        Ok(r)
    }
}

fn kind_name(k: u8) -> &'static str {
    match k {
        KIND_RC => "RC",
        KIND_UD => "UD",
        _ => "unknown",
    }
}

impl WireInfo for RcEndpointInfo {
    fn encode(&self) -> [u8; WIRE_LEN] {
        Raw {
            kind: KIND_RC,
            mtu: self.mtu.0 as u8,
            gid: self.gid.0,
            lid: self.lid,
            qpn: self.qpn,
            psn: self.psn,
            qkey: 0,
            rkey: self.mem.rkey,
            addr: self.mem.addr,
            len: self.mem.len,
        }
        .encode()
    }
    fn decode(b: &[u8; WIRE_LEN]) -> Result<Self> {
        let r = Raw::decode(b, KIND_RC)?;
        Ok(RcEndpointInfo {
            gid: Gid(r.gid),
            lid: r.lid,
            qpn: r.qpn,
            psn: r.psn,
            mtu: Mtu(u32::from(r.mtu)),
            mem: RemoteMemory { addr: r.addr, rkey: r.rkey, len: r.len },
        })
    }
}

impl WireInfo for UdEndpointInfo {
    fn encode(&self) -> [u8; WIRE_LEN] {
        Raw {
            kind: KIND_UD,
            mtu: self.mtu.0 as u8,
            gid: self.gid.0,
            lid: self.lid,
            qpn: self.qpn,
            psn: 0,
            qkey: self.qkey,
            rkey: 0,
            addr: 0,
            len: 0,
        }
        .encode()
    }
    fn decode(b: &[u8; WIRE_LEN]) -> Result<Self> {
        let r = Raw::decode(b, KIND_UD)?;
        Ok(UdEndpointInfo { gid: Gid(r.gid), lid: r.lid, qpn: r.qpn, qkey: r.qkey, mtu: Mtu(u32::from(r.mtu)) })
    }
}

/// Send `local`, receive the peer's record. Both sides call this (the record
/// is small, so writing first never deadlocks).
pub fn exchange<S: Read + Write, T: WireInfo>(stream: &mut S, local: &T) -> Result<T> {
    stream.write_all(&local.encode()).context("sending our RDMA endpoint record")?;
    stream.flush().context("sending our RDMA endpoint record")?;
    let mut b = [0u8; WIRE_LEN];
    stream.read_exact(&mut b).context("reading the peer's RDMA endpoint record")?;
    T::decode(&b)
}

/// Both sides send `tag` and expect the peer's to match: "I am ready".
pub fn barrier<S: Read + Write>(stream: &mut S, tag: u8) -> Result<()> {
    stream.write_all(&[tag]).context("side-channel barrier: sending")?;
    stream.flush().context("side-channel barrier: sending")?;
    let mut b = [0u8; 1];
    stream.read_exact(&mut b).context("side-channel barrier: waiting for the peer")?;
    if b[0] != tag {
        bail!("side-channel barrier: peer sent {:#x}, expected {tag:#x}", b[0]);
    }
    Ok(())
}

/// The whole RC handshake on a connected TCP stream: exchange endpoint records
/// (advertising `mem`, if any), connect the QP, then a barrier so that when
/// this returns both QPs are in RTS. `timeout` bounds every side-channel read
/// and write (a dead peer is an error, not a hang). Returns the connected QP;
/// the peer's advertised memory is `qp.remote().mem`.
pub fn handshake_rc(
    stream: &mut TcpStream,
    qp: PreparedRcQp,
    mem: Option<RemoteMemory>,
    timeout: Duration,
) -> Result<RcQp> {
    stream.set_read_timeout(Some(timeout)).context("side channel: setting a read timeout")?;
    stream.set_write_timeout(Some(timeout)).context("side channel: setting a write timeout")?;
    let _ = stream.set_nodelay(true);
    handshake_rc_over(stream, qp, mem)
}

/// [`handshake_rc`] over any stream whose reads and writes the caller has
/// bounded already (e.g. `auth::Bounded`, under a handshake deadline).
pub fn handshake_rc_over<S: Read + Write>(stream: &mut S, qp: PreparedRcQp, mem: Option<RemoteMemory>) -> Result<RcQp> {
    let local = qp.endpoint().with_memory(mem.unwrap_or_default());
    let remote: RcEndpointInfo = exchange(stream, &local)?;
    let qp = qp.connect(&remote)?;
    barrier(stream, b'R')?;
    Ok(qp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc() -> RcEndpointInfo {
        let mut g = [0u8; 16];
        g[10] = 0xff;
        g[11] = 0xff;
        g[12..].copy_from_slice(&[10, 0, 2, 15]);
        RcEndpointInfo {
            gid: Gid(g),
            lid: 0,
            qpn: 0x11,
            psn: 0xabcdef,
            mtu: Mtu::MTU_1024,
            mem: RemoteMemory { addr: 0x7f00_0000_0000, rkey: 0x1234, len: 4 << 20 },
        }
    }

    #[test]
    fn rc_record_round_trips() {
        let a = rc();
        assert_eq!(RcEndpointInfo::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn ud_record_round_trips_and_kinds_do_not_mix() {
        let u = UdEndpointInfo { gid: rc().gid, lid: 3, qpn: 0x22, qkey: 0x1111_1111, mtu: Mtu::MTU_4096 };
        assert_eq!(UdEndpointInfo::decode(&u.encode()).unwrap(), u);
        let e = RcEndpointInfo::decode(&u.encode()).unwrap_err();
        assert!(e.to_string().contains("UD endpoint"), "{e}");
    }

    #[test]
    fn garbage_from_a_peer_is_an_error() {
        let mut b = rc().encode();
        b[0] = b'X';
        assert!(RcEndpointInfo::decode(&b).is_err());
        let mut b = rc().encode();
        b[6] = 9;
        assert!(RcEndpointInfo::decode(&b).unwrap_err().to_string().contains("MTU"));
        let mut b = rc().encode();
        b[28..32].copy_from_slice(&0x0100_0000u32.to_be_bytes());
        assert!(RcEndpointInfo::decode(&b).unwrap_err().to_string().contains("QPN"));
        let mut b = rc().encode();
        b[48..56].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(RcEndpointInfo::decode(&b).is_err());
    }

    #[test]
    fn exchange_over_a_socket_pair_and_short_reads_fail() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = rc();
            b.qpn = 0x99;
            let got: RcEndpointInfo = exchange(&mut s, &b).unwrap();
            barrier(&mut s, b'R').unwrap();
            got
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let got: RcEndpointInfo = exchange(&mut c, &rc()).unwrap();
        barrier(&mut c, b'R').unwrap();
        assert_eq!(got.qpn, 0x99);
        assert_eq!(t.join().unwrap(), rc());

        // A peer that hangs up half-way: an error, not a panic.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(&rc().encode()[..10]).unwrap();
        });
        let mut c = TcpStream::connect(addr).unwrap();
        t.join().unwrap();
        let r: Result<RcEndpointInfo> = exchange(&mut c, &rc());
        assert!(r.is_err());
    }
}
