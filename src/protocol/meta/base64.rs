//! Base64 (RFC 4648 alphabet, padded) for meta `b` keys, decoding as
//! memcached does: characters outside the alphabet are skipped, the count
//! of the rest must be a non-zero multiple of four, and decoding stops
//! after the first padded block.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    let sym = |i: u8| ALPHABET[(i & 0x3f) as usize];
    let mut chunks = src.chunks_exact(3);
    for c in &mut chunks {
        out.extend_from_slice(&[
            sym(c[0] >> 2),
            sym((c[0] << 4) | (c[1] >> 4)),
            sym((c[1] << 2) | (c[2] >> 6)),
            sym(c[2]),
        ]);
    }
    match *chunks.remainder() {
        [a] => out.extend_from_slice(&[sym(a >> 2), sym(a << 4), b'=', b'=']),
        [a, b] => out.extend_from_slice(&[sym(a >> 2), sym((a << 4) | (b >> 4)), sym(b << 2), b'=']),
        _ => {}
    }
}

/// The value of a symbol, '=' counting as 0; `None` outside the alphabet.
fn value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        b'=' => Some(0),
        _ => None,
    }
}

/// `None` when memcached would refuse the key ("error decoding key").
pub fn decode(src: &[u8]) -> Option<Vec<u8>> {
    let count = src.iter().filter(|&&c| value(c).is_some()).count();
    if count == 0 || count % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(count / 4 * 3);
    let mut block = [0u8; 4];
    let mut n = 0;
    let mut pad = 0;
    for &c in src {
        let Some(v) = value(c) else { continue };
        if c == b'=' {
            pad += 1;
        }
        block[n] = v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[
                (block[0] << 2) | (block[1] >> 4),
                (block[1] << 4) | (block[2] >> 2),
                (block[2] << 6) | block[3],
            ]);
            n = 0;
            if pad > 0 {
                match pad {
                    1 => out.truncate(out.len() - 1),
                    2 => out.truncate(out.len() - 2),
                    _ => return None,
                }
                break;
            }
        }
    }
    // An empty result cannot name a key; memcached reports it as a failure.
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &[u8]) -> String {
        let mut v = Vec::new();
        encode(s, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn rfc4648_vectors() {
        for (plain, coded) in [
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(enc(plain.as_bytes()), coded);
            assert_eq!(decode(coded.as_bytes()).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn binary_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        for n in 0..all.len() {
            let mut v = Vec::new();
            encode(&all[..n], &mut v);
            if n > 0 {
                assert_eq!(decode(&v).unwrap(), &all[..n]);
            }
        }
    }

    #[test]
    fn memcached_leniency_and_refusals() {
        // Non-alphabet characters are skipped (memcached: "Zm9v!" is "foo").
        assert_eq!(decode(b"Zm9v!").unwrap(), b"foo");
        assert!(decode(b"foo").is_none(), "3 symbols");
        assert!(decode(b"").is_none());
        assert!(decode(b"!!!!").is_none());
        assert!(decode(b"A===").is_none(), "three pad symbols");
        assert!(decode(b"====").is_none());
        // Decoding stops after the first padded block.
        assert_eq!(decode(b"Zg==Zm9v").unwrap(), b"f");
    }
}
