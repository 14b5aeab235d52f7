//! Who sent a datagram: the key the server files a client's address handle
//! and reply cache under, read from what the NIC wrote, never from the
//! payload.
//!
//! A UD receive buffer starts with a 40-byte GRH area the NIC fills: an
//! InfiniBand GRH (RoCE v1, and IB across subnets), an IPv6 header (RoCE v2
//! over IPv6), or, for RoCE v2 over IPv4, undefined bytes and then the IPv4
//! header in its last 20 bytes. The sender's QPN is the work completion's
//! `src_qp` (from the packet's DETH). Nothing a client writes into its
//! request names where the reply goes.
//!
//! The key must name exactly the address the reply's handle sends to, or a
//! datagram from one sender could be answered through a handle made for
//! another (and see that client's cached replies). The handle comes from
//! `ibv_create_ah_from_wc`, so [`peer_key`] reads the GRH area by libibverbs'
//! own rules (`get_grh_header_version`): an IPv6/IB version nibble with a
//! well-formed IPv4 header behind it (length 5 words, checksum right) is
//! IPv4, because the first 20 bytes of an IPv4 datagram's area are not
//! written and may hold an older datagram's header. The server also checks
//! the handle's destination against the key when it makes one.

use crate::rdma::{ReplyRoute, GRH_SIZE};

/// A client endpoint: the address its datagrams came from and its QPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// The source GID (an IPv4 source as `::ffff:a.b.c.d`, as its GID is),
    /// or the source LID for a datagram without a GRH.
    pub route: ReplyRoute,
    pub qpn: u32,
}

/// The sender of a datagram: `grh` is the receive buffer's GRH area when the
/// completion says a GRH is there (`IBV_WC_GRH`), else `None`, and then the
/// sender is its LID `slid`. `None` when the GRH area is neither a GRH nor an
/// IPv4 header (libibverbs would refuse to make a handle from it too).
pub fn peer_key(grh: Option<&[u8; GRH_SIZE]>, slid: u16, src_qp: u32) -> Option<PeerKey> {
    let route = match grh {
        None => ReplyRoute::Lid(slid),
        Some(g) => ReplyRoute::Gid(source_gid(g)?),
    };
    Some(PeerKey { route, qpn: src_qp })
}

/// The source address in a GRH area, by libibverbs' rules (module doc).
fn source_gid(grh: &[u8; GRH_SIZE]) -> Option<[u8; 16]> {
    let ip4 = &grh[20..40];
    let v6_nibble = grh[0] >> 4 == 6;
    let is_ipv4 = if v6_nibble { ip4[0] & 0x0f == 5 && ipv4_checksum_ok(ip4) } else { ip4[0] >> 4 == 4 };
    let mut gid = [0u8; 16];
    if is_ipv4 {
        gid[10] = 0xff;
        gid[11] = 0xff;
        gid[12..].copy_from_slice(&ip4[12..16]);
    } else if v6_nibble {
        gid.copy_from_slice(&grh[8..24]);
    } else {
        return None;
    }
    Some(gid)
}

/// Whether a 20-byte IPv4 header's checksum (bytes 10..12) is right, computed
/// as libibverbs' `ipv4_calc_hdr_csum` does (native-endian halfwords, one
/// fold), so that even a malformed header is judged the same way.
fn ipv4_checksum_ok(h: &[u8]) -> bool {
    let mut sum: u32 = 0;
    for (i, w) in h.chunks_exact(2).enumerate() {
        if i != 5 {
            sum += u32::from(u16::from_ne_bytes([w[0], w[1]]));
        }
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (!sum) as u16 == u16::from_ne_bytes([h[10], h[11]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RoCE v2 IPv4 GRH area as the NIC leaves it: `stale` in the first 20
    /// bytes, then a real IPv4 header (checksum filled in) from `src`.
    fn ipv4_area(stale: &[u8; 20], src: [u8; 4], dst: [u8; 4]) -> [u8; GRH_SIZE] {
        let mut g = [0u8; GRH_SIZE];
        g[..20].copy_from_slice(stale);
        let h = &mut g[20..];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&60u16.to_be_bytes());
        h[8] = 64; // TTL
        h[9] = 17; // UDP
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let mut sum: u32 = h.chunks_exact(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        g
    }

    fn ipv6_area(src: [u8; 16], dst: [u8; 16]) -> [u8; GRH_SIZE] {
        let mut g = [0u8; GRH_SIZE];
        g[0] = 0x60;
        g[6] = 17; // next header: UDP (RoCE v2)
        g[7] = 64;
        g[8..24].copy_from_slice(&src);
        g[24..40].copy_from_slice(&dst);
        g
    }

    fn gid(k: PeerKey) -> [u8; 16] {
        match k.route {
            ReplyRoute::Gid(g) => g,
            ReplyRoute::Lid(l) => panic!("keyed by LID {l}"),
        }
    }

    #[test]
    fn roce_v2_ipv4_source_and_the_completions_qpn() {
        let g = ipv4_area(&[0; 20], [10, 0, 2, 15], [10, 0, 2, 16]);
        let k = peer_key(Some(&g), 0, 17).unwrap();
        assert_eq!(k.qpn, 17);
        assert_eq!(&gid(k)[..], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 2, 15]);
    }

    /// The first 20 bytes of an IPv4 datagram's area are not written: they
    /// may hold an IPv6 header an earlier datagram left there. libibverbs
    /// still reads the (well-formed) IPv4 header behind them, and so must we.
    #[test]
    fn stale_ipv6_bytes_in_front_of_an_ipv4_header_do_not_change_the_source() {
        let old = ipv6_area([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9], [0xfd; 16]);
        let mut stale = [0u8; 20];
        stale.copy_from_slice(&old[..20]);
        let g = ipv4_area(&stale, [192, 0, 2, 7], [192, 0, 2, 1]);
        assert_eq!(&gid(peer_key(Some(&g), 0, 5).unwrap())[10..], &[0xff, 0xff, 192, 0, 2, 7]);
    }

    /// An IPv6 source whose 13th byte is 0x45 looks like an IPv4 header's
    /// first byte at offset 20; without a valid checksum it is IPv6, as the
    /// reply's handle has it. (A one-byte test keyed it by bytes of the
    /// server's own address, so two senders could share one client's state.)
    #[test]
    fn an_ipv6_source_that_looks_like_ipv4_at_byte_20_stays_ipv6() {
        let src = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x45, 1, 2, 3];
        let g = ipv6_area(src, [0xfd, 0, 0, 0, 0, 0, 0, 0, 10, 0, 2, 15, 0, 0, 0, 1]);
        assert_eq!(gid(peer_key(Some(&g), 0, 9).unwrap()), src);
        let ib = {
            let mut g = [0u8; GRH_SIZE];
            g[0] = 0x60;
            g[8..24].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
            g
        };
        assert_eq!(gid(peer_key(Some(&ib), 0, 3).unwrap()), [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    /// No GRH (InfiniBand within a subnet): the area holds whatever an
    /// earlier datagram left, so it must not name the sender; its LID does.
    #[test]
    fn without_a_grh_the_sender_is_its_lid_not_stale_bytes() {
        let k = peer_key(None, 0x1234, 77).unwrap();
        assert_eq!(k, PeerKey { route: ReplyRoute::Lid(0x1234), qpn: 77 });
        let stale = ipv4_area(&[0; 20], [10, 0, 2, 15], [10, 0, 2, 16]);
        assert_ne!(peer_key(Some(&stale), 0x1234, 77), Some(k));
    }

    #[test]
    fn neither_a_grh_nor_ipv4_is_no_sender() {
        assert_eq!(peer_key(Some(&[0u8; GRH_SIZE]), 0, 1), None);
        let mut g = ipv4_area(&[0; 20], [10, 0, 2, 15], [10, 0, 2, 16]);
        g[20] = 0x65; // version 6 at the IPv4 offset, no v6 nibble in front
        assert_eq!(peer_key(Some(&g), 0, 1), None);
    }
}
