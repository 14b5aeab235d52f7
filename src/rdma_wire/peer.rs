//! Who sent a datagram: the key the server files a client's address handle
//! and reply cache under.

use crate::rdma::GRH_SIZE;

/// A client endpoint: its source GID and QPN.
pub type PeerKey = ([u8; 16], u32);

/// The sender of a datagram: its QPN and source address from the GRH. For
/// RoCE v2 over IPv4 the last 20 bytes of the GRH area hold the IPv4 header,
/// whose source address we map to `::ffff:a.b.c.d` (as its GID is); otherwise
/// the GRH's source GID (bytes 8..24).
pub fn peer_key(grh: &[u8; GRH_SIZE], src_qp: u32) -> PeerKey {
    let mut gid = [0u8; 16];
    if grh[20] == 0x45 {
        gid[10] = 0xff;
        gid[11] = 0xff;
        gid[12..].copy_from_slice(&grh[32..36]);
    } else {
        gid.copy_from_slice(&grh[8..24]);
    }
    (gid, src_qp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_key_from_roce_v2_ipv4_and_ib_grh() {
        let mut grh = [0u8; GRH_SIZE];
        grh[20] = 0x45;
        grh[32..36].copy_from_slice(&[10, 0, 2, 15]);
        grh[28] = 0x99; // TTL/checksum bytes must not matter
        let (gid, qpn) = peer_key(&grh, 17);
        assert_eq!(qpn, 17);
        assert_eq!(&gid[10..], &[0xff, 0xff, 10, 0, 2, 15]);
        let mut ib = [0u8; GRH_SIZE];
        ib[0] = 0x60;
        ib[8..24].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(peer_key(&ib, 3).0, [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
