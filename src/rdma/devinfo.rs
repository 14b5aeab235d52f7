//! `logmemcached rdma-devices`: a short `ibv_devinfo`.

use std::io::Write;

use crate::error::{Context as _, Result};

use super::device::{devices, Context};

/// Print every RDMA device with its ports (state, MTU, link layer, LID) and
/// populated GIDs (with their type, and which index we would pick by default).
/// On a host without RDMA prints one line saying so and returns Ok.
pub fn print_devices(out: &mut dyn Write) -> Result<()> {
    let devs = devices().context("listing RDMA devices")?;
    if devs.is_empty() {
        writeln!(out, "no RDMA devices found (load a NIC driver, or Soft-RoCE: `modprobe rdma_rxe && rdma link add rxe0 type rxe netdev eth0`)")?;
        return Ok(());
    }
    for d in devs {
        writeln!(out, "device {} (node GUID {:016x})", d.name, d.guid)?;
        let ctx = match Context::open(Some(&d.name)) {
            Ok(c) => c,
            Err(e) => {
                writeln!(out, "  cannot open: {e}")?;
                continue;
            }
        };
        let attr = match ctx.query_device() {
            Ok(a) => a,
            Err(e) => {
                writeln!(out, "  cannot query: {e}")?;
                continue;
            }
        };
        writeln!(
            out,
            "  firmware {}, {} port(s), max_qp_wr {}, max_cqe {}, max_qp_rd_atom {}",
            if attr.fw_ver.is_empty() { "-" } else { &attr.fw_ver },
            attr.phys_port_cnt,
            attr.max_qp_wr,
            attr.max_cqe,
            attr.max_qp_rd_atom
        )?;
        for port in 1..=attr.phys_port_cnt {
            let p = match ctx.query_port(port) {
                Ok(p) => p,
                Err(e) => {
                    writeln!(out, "  port {port}: cannot query: {e}")?;
                    continue;
                }
            };
            writeln!(
                out,
                "  port {port}: state {}, active MTU {}, max MTU {}, link layer {}, LID {}",
                p.state_name(),
                p.active_mtu,
                p.max_mtu,
                p.link_layer,
                p.lid
            )?;
            let default = ctx.default_gid_index(port).ok();
            match ctx.gids(port) {
                Ok(g) if g.is_empty() => writeln!(out, "    no GIDs")?,
                Ok(g) => {
                    for (i, gid) in g {
                        let ty = ctx.gid_type(port, i).unwrap_or_default();
                        let mark = if default == Some(i) { "  <- default" } else { "" };
                        writeln!(out, "    GID[{i:3}] {gid:<40} {ty}{mark}")?;
                    }
                }
                Err(e) => writeln!(out, "    cannot read GIDs: {e}")?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_something_and_never_fails_without_devices() {
        let mut buf = Vec::new();
        print_devices(&mut buf).unwrap();
        let s = String::from_utf8(buf).unwrap();
        if devices().unwrap().is_empty() {
            assert!(s.starts_with("no RDMA devices found"), "{s}");
        } else {
            assert!(s.contains("port 1:"), "{s}");
        }
    }
}
