//! Ketama consistent hashing, compatible with libmemcached's weighted ketama
//! (`MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`, pylibmc `ketama_weighted`), with
//! every server weighted 1: MD5 throughout, 160 points per server, 4 points per
//! hash. So a key lands on the same server whether the client is libmemcached
//! over TCP or this one over RDMA, given the same server names in the same
//! order.
//!
//! libmemcached's continuum (hosts.cc `update_continuum`): for server i and
//! j in 0..40, hash the string `"HOST:PORT-j"` (`"HOST-j"` when PORT is
//! 11211) with MD5; each 4-byte little-endian word of the digest is a point
//! owned by server i. A key's hash is the first word of MD5(key); it belongs
//! to the first point at or after it, wrapping to the first point.

use md5::{Digest, Md5};

const POINTS_PER_SERVER: f32 = 160.0;
const POINTS_PER_HASH: u32 = 4;
const MEMCACHED_DEFAULT_PORT: u16 = 11211;

#[derive(Clone, Debug)]
pub struct Ketama {
    /// (point, server index), sorted by point.
    points: Vec<(u32, usize)>,
}

/// MD5 of `data` (RFC 1321), as libmemcached hashes server names and keys.
fn digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

fn word(d: &[u8; 16], i: usize) -> u32 {
    u32::from_le_bytes([d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]])
}

/// The key's position on the continuum (libmemcached's MD5 key hash).
pub fn key_hash(key: &[u8]) -> u32 {
    word(&digest(key), 0)
}

impl Ketama {
    /// Servers as libmemcached names them: host (as given) and port.
    pub fn new(servers: &[(String, u16)]) -> Ketama {
        let n = servers.len();
        let mut points = Vec::with_capacity(n * 160);
        if n > 0 {
            // libmemcached's float arithmetic, kept as is so rounding matches:
            // floorf(pct * 160 / 4 * n + 1e-10) * 4 with pct = 1/n.
            let pct = 1.0f32 / n as f32;
            let per_server = ((f64::from(pct * POINTS_PER_SERVER / 4.0 * n as f32) + 0.0000000001) as f32).floor()
                as u32
                * POINTS_PER_HASH;
            for (i, (host, port)) in servers.iter().enumerate() {
                for j in 0..per_server / POINTS_PER_HASH {
                    let name = if *port == MEMCACHED_DEFAULT_PORT {
                        format!("{host}-{j}")
                    } else {
                        format!("{host}:{port}-{j}")
                    };
                    let d = digest(name.as_bytes());
                    for x in 0..POINTS_PER_HASH as usize {
                        points.push((word(&d, x), i));
                    }
                }
            }
        }
        points.sort_by_key(|&(p, _)| p);
        Ketama { points }
    }

    /// The index (into the list given to `new`) of the server for `key`.
    pub fn server_for(&self, key: &[u8]) -> usize {
        if self.points.is_empty() {
            return 0;
        }
        let h = key_hash(key);
        let i = self.points.partition_point(|&(p, _)| p < h);
        self.points.get(i).unwrap_or(&self.points[0]).1
    }

    pub fn points(&self) -> usize {
        self.points.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(ports: &[u16]) -> Vec<(String, u16)> {
        ports.iter().map(|p| ("127.0.0.1".to_string(), *p)).collect()
    }

    #[test]
    fn md5_rfc1321_test_suite() {
        let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let cases = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(hex(digest(input.as_bytes())), want, "md5({input:?})");
        }
    }

    #[test]
    fn points_and_key_hash() {
        assert_eq!(Ketama::new(&servers(&[1, 2, 3])).points(), 480);
        assert_eq!(Ketama::new(&servers(&[1, 2, 3, 4, 5, 6, 7])).points(), 7 * 160);
        // First little-endian word of MD5("foo") (hashlib cross-check).
        assert_eq!(key_hash(b"foo"), 3675831724);
    }

    /// Where libmemcached 1.0.16 (pylibmc 1.6.3, `behaviors={"ketama_weighted":
    /// True}`) put these keys across 127.0.0.1:21301..21303, found by setting
    /// them through pylibmc and asking each memcached which it holds.
    const LIBMEMCACHED_PLACEMENT: &str = "key:0=1 key:1=1 key:2=2 key:3=1 key:4=2 key:5=1 key:6=2 key:7=1 key:8=2 key:9=1 key:10=2 key:11=0 key:12=2 key:13=1 key:14=2 key:15=1 key:16=2 key:17=1 key:18=2 key:19=1 key:20=1 key:21=2 key:22=0 key:23=0 key:24=2 key:25=1 key:26=0 key:27=0 key:28=2 key:29=2 key:30=0 key:31=1 key:32=2 key:33=1 key:34=0 key:35=0 key:36=0 key:37=1 key:38=0 key:39=2 foo=2 bar=1 hello=0 user:1234=2 a=1 b=1";

    #[test]
    fn same_servers_as_libmemcached() {
        let ring = Ketama::new(&servers(&[21301, 21302, 21303]));
        for pair in LIBMEMCACHED_PLACEMENT.split(' ') {
            let (key, server) = pair.rsplit_once('=').unwrap();
            assert_eq!(ring.server_for(key.as_bytes()), server.parse::<usize>().unwrap(), "key {key:?}");
        }
    }

    #[test]
    fn consistent_when_a_server_is_added() {
        let three = Ketama::new(&servers(&[11300, 11301, 11302]));
        let four = Ketama::new(&servers(&[11300, 11301, 11302, 11303]));
        let keys: Vec<String> = (0..2000).map(|i| format!("key:{i}")).collect();
        let mut moved = 0;
        let mut counts = [0usize; 3];
        for k in &keys {
            let a = three.server_for(k.as_bytes());
            counts[a] += 1;
            let b = four.server_for(k.as_bytes());
            if a != b {
                assert_eq!(b, 3, "a key only ever moves to the new server");
                moved += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 400), "roughly even: {counts:?}");
        assert!((300..700).contains(&moved), "about a quarter moves: {moved}");
    }
}
