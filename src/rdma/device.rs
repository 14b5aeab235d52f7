//! Device list, device context, ports and GIDs.

use std::ffi::CStr;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rdma_sys::*;

use crate::bail;
use crate::error::{Error, Result};

/// Name and GUID of one RDMA device, from the device list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    /// Node GUID in host order.
    pub guid: u64,
}

/// Run `f` over the device list, freeing it afterwards. A host without RDMA
/// (libibverbs returns NULL with ENOSYS, or an empty list) gives an empty slice.
fn with_device_list<T>(f: impl FnOnce(&[*mut ibv_device]) -> Result<T>) -> Result<T> {
    let mut n: libc::c_int = 0;
    // SAFETY: `n` is a valid out-pointer; the list is freed below exactly once.
    let list = unsafe { ibv_get_device_list(&mut n) };
    if list.is_null() {
        let err = std::io::Error::last_os_error();
        // ENOSYS: no kernel verbs support (no /sys/class/infiniband_verbs).
        // ENOENT/ENODEV: likewise on some versions. All mean "no devices".
        return match err.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::ENOENT) | Some(libc::ENODEV) | Some(0) | None => f(&[]),
            _ => Err(Error::new(format!("ibv_get_device_list: {err}"))),
        };
    }
    let count = usize::try_from(n).unwrap_or(0);
    // SAFETY: libibverbs returned an array of `n` valid device pointers
    // (NULL-terminated), which stays valid until ibv_free_device_list.
    let devs = unsafe { std::slice::from_raw_parts(list, count) };
    let r = f(devs);
    // SAFETY: `list` came from ibv_get_device_list and is freed once; contexts
    // opened from it stay valid after the list is freed (rdma-core refcounts them).
    unsafe { ibv_free_device_list(list) };
    r
}

fn device_name(dev: *mut ibv_device) -> String {
    // SAFETY: `dev` is a live entry of the current device list; the returned
    // string is owned by the device and NUL-terminated.
    let p = unsafe { ibv_get_device_name(dev) };
    if p.is_null() {
        return String::from("?");
    }
    // SAFETY: non-null, NUL-terminated, valid while the list lives (we copy it).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The RDMA devices on this host; empty (not an error) when there are none.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    with_device_list(|devs| {
        Ok(devs
            .iter()
            .map(|&d| DeviceInfo {
                name: device_name(d),
                // SAFETY: `d` is a live entry of the device list.
                guid: u64::from_be(unsafe { ibv_get_device_guid(d) }),
            })
            .collect())
    })
}

/// A 128-bit GID (for RoCE an IPv6 or IPv4-mapped address).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Gid(pub [u8; 16]);

impl Gid {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
    /// `Some(ip)` for an IPv4-mapped GID (`::ffff:a.b.c.d`).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        Ipv6Addr::from(self.0).to_ipv4_mapped()
    }
    pub fn is_link_local(&self) -> bool {
        self.0[0] == 0xfe && (self.0[1] & 0xc0) == 0x80
    }
    pub(crate) fn to_raw(self) -> ibv_gid {
        ibv_gid { raw: self.0 }
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Ipv6Addr::from(self.0))
    }
}

impl fmt::Debug for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gid({self})")
    }
}

/// Path MTU, as the verbs enum (1 = 256 bytes ... 5 = 4096 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mtu(pub u32);

impl Mtu {
    pub const MTU_256: Mtu = Mtu(ibv_mtu::IBV_MTU_256);
    pub const MTU_1024: Mtu = Mtu(ibv_mtu::IBV_MTU_1024);
    pub const MTU_4096: Mtu = Mtu(ibv_mtu::IBV_MTU_4096);

    pub fn bytes(self) -> Option<u32> {
        match self.0 {
            1..=5 => Some(128 << self.0),
            _ => None,
        }
    }
    pub fn from_bytes(b: u32) -> Option<Mtu> {
        (1..=5).map(Mtu).find(|m| m.bytes() == Some(b))
    }
}

impl fmt::Display for Mtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bytes() {
            Some(b) => write!(f, "{b}"),
            None => write!(f, "invalid({})", self.0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkLayer {
    Unspecified,
    InfiniBand,
    Ethernet,
    Other(u8),
}

impl LinkLayer {
    fn from_raw(v: u8) -> LinkLayer {
        // IBV_LINK_LAYER_* is an anonymous enum in verbs.h: 0, 1, 2.
        match v {
            0 => LinkLayer::Unspecified,
            1 => LinkLayer::InfiniBand,
            2 => LinkLayer::Ethernet,
            o => LinkLayer::Other(o),
        }
    }
    /// Ethernet (RoCE): addressing is by GID, so the GRH is mandatory.
    /// An unspecified link layer is InfiniBand for old drivers.
    pub fn needs_grh(self) -> bool {
        matches!(self, LinkLayer::Ethernet)
    }
}

impl fmt::Display for LinkLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkLayer::Unspecified | LinkLayer::InfiniBand => f.write_str("InfiniBand"),
            LinkLayer::Ethernet => f.write_str("Ethernet"),
            LinkLayer::Other(v) => write!(f, "unknown({v})"),
        }
    }
}

/// The parts of `ibv_port_attr` we use.
#[derive(Clone, Debug)]
pub struct PortAttr {
    pub state: u32,
    pub max_mtu: Mtu,
    pub active_mtu: Mtu,
    pub link_layer: LinkLayer,
    pub lid: u16,
    pub gid_tbl_len: u32,
    pub max_msg_sz: u32,
}

impl PortAttr {
    pub fn is_active(&self) -> bool {
        self.state == ibv_port_state::IBV_PORT_ACTIVE
    }
    /// "PORT_ACTIVE" etc. (from libibverbs).
    pub fn state_name(&self) -> String {
        // SAFETY: ibv_port_state_str accepts any value and returns a static string.
        let p = unsafe { ibv_port_state_str(self.state) };
        if p.is_null() {
            return format!("state {}", self.state);
        }
        // SAFETY: a static NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// The parts of `ibv_device_attr` we use.
#[derive(Clone, Debug)]
pub struct DeviceAttr {
    pub fw_ver: String,
    pub node_guid: u64,
    pub phys_port_cnt: u8,
    pub max_qp_wr: u32,
    pub max_cqe: u32,
    pub max_mr_size: u64,
    pub max_qp_rd_atom: u32,
    pub max_qp_init_rd_atom: u32,
    pub max_sge: u32,
}

pub(crate) struct ContextInner {
    pub(crate) ctx: *mut ibv_context,
    name: String,
}

// SAFETY: libibverbs contexts are thread-safe (the library and providers lock
// internally); we only hand out the pointer to verbs calls.
unsafe impl Send for ContextInner {}
// SAFETY: as above.
unsafe impl Sync for ContextInner {}

impl Drop for ContextInner {
    fn drop(&mut self) {
        // SAFETY: every child object holds an Arc<ContextInner>, so this runs
        // after all of them were destroyed; the pointer is closed exactly once.
        unsafe { ibv_close_device(self.ctx) };
    }
}

/// An open device (`ibv_context`). Cheap to clone; closed when the last clone
/// and the last object created from it are gone.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<ContextInner>,
}

impl Context {
    /// Open the device called `name`, or the first device when `None`.
    pub fn open(name: Option<&str>) -> Result<Context> {
        with_device_list(|devs| {
            if devs.is_empty() {
                bail!("no RDMA devices found (is rdma_rxe/a NIC driver loaded? `rdma link` lists links)");
            }
            let dev = match name {
                None => devs[0],
                Some(n) => match devs.iter().copied().find(|&d| device_name(d) == n) {
                    Some(d) => d,
                    None => {
                        let all: Vec<String> = devs.iter().map(|&d| device_name(d)).collect();
                        bail!("RDMA device {n:?} not found (have: {})", all.join(", "));
                    }
                },
            };
            let dname = device_name(dev);
            // SAFETY: `dev` is a live entry of the device list.
            let ctx = unsafe { ibv_open_device(dev) };
            if ctx.is_null() {
                let e = std::io::Error::last_os_error();
                bail!("opening RDMA device {dname}: {e} (permission on /dev/infiniband/uverbs*?)");
            }
            Ok(Context { inner: Arc::new(ContextInner { ctx, name: dname }) })
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn query_device(&self) -> Result<DeviceAttr> {
        // SAFETY: ibv_device_attr is plain data; all-zero is a valid value.
        let mut a: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: live context, valid out-pointer.
        let rc = unsafe { ibv_query_device(self.inner.ctx, &mut a) };
        if rc != 0 {
            bail!("ibv_query_device({}): {}", self.name(), std::io::Error::from_raw_os_error(rc));
        }
        // SAFETY: fw_ver is a fixed array the library NUL-terminates; we bound it anyway.
        let fw: Vec<u8> = a.fw_ver.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        Ok(DeviceAttr {
            fw_ver: String::from_utf8_lossy(&fw).into_owned(),
            node_guid: u64::from_be(a.node_guid),
            phys_port_cnt: a.phys_port_cnt,
            max_qp_wr: a.max_qp_wr.max(0) as u32,
            max_cqe: a.max_cqe.max(0) as u32,
            max_mr_size: a.max_mr_size,
            max_qp_rd_atom: a.max_qp_rd_atom.max(0) as u32,
            max_qp_init_rd_atom: a.max_qp_init_rd_atom.max(0) as u32,
            max_sge: a.max_sge.max(0) as u32,
        })
    }

    pub fn query_port(&self, port: u8) -> Result<PortAttr> {
        // SAFETY: ibv_port_attr is plain data; all-zero is valid.
        let mut a: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: live context; `a` is a full-size ibv_port_attr, which is what
        // ___ibv_query_port passes to the provider (with its size).
        let rc = unsafe { ___ibv_query_port(self.inner.ctx, port, &mut a) };
        if rc != 0 {
            bail!("ibv_query_port({} port {port}): {}", self.name(), std::io::Error::from_raw_os_error(rc.abs()));
        }
        Ok(PortAttr {
            state: a.state,
            max_mtu: Mtu(a.max_mtu),
            active_mtu: Mtu(a.active_mtu),
            link_layer: LinkLayer::from_raw(a.link_layer),
            lid: a.lid,
            gid_tbl_len: a.gid_tbl_len.max(0) as u32,
            max_msg_sz: a.max_msg_sz,
        })
    }

    pub fn query_gid(&self, port: u8, index: u8) -> Result<Gid> {
        let mut g = ibv_gid { raw: [0; 16] };
        // SAFETY: live context, valid out-pointer.
        let rc = unsafe { ibv_query_gid(self.inner.ctx, port, libc::c_int::from(index), &mut g) };
        if rc != 0 {
            bail!("ibv_query_gid({} port {port} index {index}) failed", self.name());
        }
        // SAFETY: both union members are plain bytes; `raw` covers all 16.
        Ok(Gid(unsafe { g.raw }))
    }

    /// "RoCE v2", "IB/RoCE v1" from sysfs, when the kernel exposes it.
    pub fn gid_type(&self, port: u8, index: u8) -> Option<String> {
        let p = format!("/sys/class/infiniband/{}/ports/{port}/gid_attrs/types/{index}", self.name());
        std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// The populated GIDs of a port: (index, gid). Stops after a run of empty
    /// entries (tables are filled from the front; rxe's has 1024 slots).
    pub fn gids(&self, port: u8) -> Result<Vec<(u8, Gid)>> {
        let attr = self.query_port(port)?;
        let mut out = Vec::new();
        let mut empty_run = 0;
        for i in 0..attr.gid_tbl_len.min(256) {
            let i = i as u8;
            match self.query_gid(port, i) {
                Ok(g) if !g.is_zero() => {
                    out.push((i, g));
                    empty_run = 0;
                }
                _ => {
                    empty_run += 1;
                    if empty_run >= 8 {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The GID index to use on `port`: 0 on InfiniBand; on RoCE an
    /// IPv4-mapped RoCE v2 GID if any (index 1 on rxe), else any RoCE v2 GID
    /// that is not link-local, else the first populated one.
    pub fn default_gid_index(&self, port: u8) -> Result<u8> {
        let attr = self.query_port(port)?;
        if !attr.link_layer.needs_grh() {
            return Ok(0);
        }
        let gids = self.gids(port)?;
        let v2 = |i: u8| self.gid_type(port, i).is_some_and(|t| t.contains("v2"));
        let pick = gids
            .iter()
            .find(|(i, g)| g.ipv4().is_some() && v2(*i))
            .or_else(|| gids.iter().find(|(_, g)| g.ipv4().is_some()))
            .or_else(|| gids.iter().find(|(i, g)| !g.is_link_local() && v2(*i)))
            .or_else(|| gids.first());
        match pick {
            Some((i, _)) => Ok(*i),
            None => bail!(
                "{} port {port} has no GID (RoCE needs an IP address on the netdev; `rdma link` shows it)",
                self.name()
            ),
        }
    }

    /// Allocate a protection domain.
    pub fn alloc_pd(&self) -> Result<crate::rdma::ProtectionDomain> {
        crate::rdma::mr::ProtectionDomain::alloc(self)
    }

    /// A completion queue with `entries` slots. With `channel`, it gets its own
    /// completion channel so [`CompletionQueue::wait`] can block.
    pub fn create_cq(&self, entries: u32, channel: bool) -> Result<crate::rdma::CompletionQueue> {
        crate::rdma::cq::CompletionQueue::create(self, entries, channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_list_is_ok_without_devices() {
        // On a host without RDMA this is Ok(empty) (NULL + ENOSYS underneath),
        // never an error or a crash. With devices (the VM) it lists them.
        let devs = devices().expect("device list must not fail");
        if std::env::var_os("LOGMEMCACHED_IN_VM").is_none() && !std::path::Path::new("/sys/class/infiniband").exists() {
            assert!(devs.is_empty(), "{devs:?}");
        }
    }

    #[test]
    fn gid_formats_and_classifies() {
        let mut g = Gid([0; 16]);
        assert!(g.is_zero());
        g.0[10] = 0xff;
        g.0[11] = 0xff;
        g.0[12..].copy_from_slice(&[10, 0, 2, 15]);
        assert_eq!(g.ipv4(), Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(g.to_string(), "::ffff:10.0.2.15");
        let ll = Gid([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56]);
        assert!(ll.is_link_local());
        assert_eq!(ll.ipv4(), None);
    }

    #[test]
    fn mtu_bytes_round_trip() {
        assert_eq!(Mtu::MTU_1024.bytes(), Some(1024));
        assert_eq!(Mtu::from_bytes(4096), Some(Mtu::MTU_4096));
        assert_eq!(Mtu(9).bytes(), None);
        assert_eq!(Mtu::from_bytes(1000), None);
    }
}
