//! The side channel's framing (see the [module doc](super) for the exchange):
//! the greeting, the UD endpoint list and the RC capacity, each written by
//! one side and read by the other over any byte stream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::auth::{self, AuthToken, Bounded, Channel};
use crate::bail;
use crate::error::{Context as _, Error, Result};
use crate::rdma::connect::{UdEndpointInfo, WireInfo, WIRE_LEN};

/// Side-channel greeting.
pub const HELLO: &[u8; 4] = b"LMCL";
/// Protocol version, sent after the greeting.
pub const VERSION: u8 = 1;
/// Command: send me the UD endpoints (one per worker).
pub const CMD_UD: u8 = b'U';
/// Command: open an RC connection for large values.
pub const CMD_RC: u8 = b'R';
/// Bytes of greeting, version and command.
pub const GREETING_LEN: usize = HELLO.len() + 2;
/// The barrier tag that ends the RC handshake (`rdma::connect::handshake_rc`
/// uses the same).
pub const RC_READY: u8 = b'R';

/// What a client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Ud,
    Rc,
}

impl Command {
    pub fn byte(self) -> u8 {
        match self {
            Command::Ud => CMD_UD,
            Command::Rc => CMD_RC,
        }
    }
}

/// The client's first bytes: greeting, version, command.
pub fn greeting(cmd: Command) -> [u8; GREETING_LEN] {
    let mut b = [0u8; GREETING_LEN];
    b[..HELLO.len()].copy_from_slice(HELLO);
    b[HELLO.len()] = VERSION;
    b[HELLO.len() + 1] = cmd.byte();
    b
}

/// Client side: dial the side channel at `addr`, run the token's handshake
/// (the server proves itself before we send anything else) and send the
/// greeting for `cmd`, all within `timeout`; later reads and writes on the
/// stream are bounded by `timeout` each.
pub fn dial(addr: &str, cmd: Command, token: Option<&AuthToken>, timeout: Duration) -> Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let sa = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .with_context(|| format!("resolving the rdma side channel {addr}"))?
        .next()
        .ok_or_else(|| Error::new(format!("{addr} resolves to no address")))?;
    let s = TcpStream::connect_timeout(&sa, timeout).with_context(|| format!("rdma side channel {addr}"))?;
    let _ = s.set_nodelay(true);
    let mut b = Bounded::new(&s, deadline, timeout);
    auth::client_handshake(&mut b, Channel::RdmaClient, token).with_context(|| format!("rdma side channel {addr}"))?;
    b.write_all(&greeting(cmd)).context("sending the side-channel greeting")?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Server side: read and check the client's greeting.
pub fn read_greeting<R: Read>(r: &mut R) -> Result<Command> {
    let mut hello = [0u8; GREETING_LEN];
    r.read_exact(&mut hello).context("reading the client's greeting")?;
    if &hello[..HELLO.len()] != HELLO || hello[HELLO.len()] != VERSION {
        bail!("not a LogMemcached RDMA client greeting: {hello:02x?}");
    }
    match hello[HELLO.len() + 1] {
        CMD_UD => Ok(Command::Ud),
        CMD_RC => Ok(Command::Rc),
        c => bail!("unknown side-channel command {c:#x}"),
    }
}

/// Server side: the answer to [`Command::Ud`]. The count is one byte, so at
/// most the first 255 endpoints are listed.
pub fn encode_ud_endpoints(endpoints: &[UdEndpointInfo]) -> Vec<u8> {
    let listed = &endpoints[..endpoints.len().min(u8::MAX as usize)];
    let mut b = Vec::with_capacity(1 + listed.len() * WIRE_LEN);
    b.push(listed.len() as u8);
    for e in listed {
        b.extend_from_slice(&e.encode());
    }
    b
}

/// Client side: read the answer to [`Command::Ud`] (possibly empty).
pub fn read_ud_endpoints<R: Read>(r: &mut R) -> Result<Vec<UdEndpointInfo>> {
    let mut n = [0u8; 1];
    r.read_exact(&mut n).context("reading the UD endpoint count")?;
    let mut v = Vec::with_capacity(n[0] as usize);
    for _ in 0..n[0] {
        let mut b = [0u8; WIRE_LEN];
        r.read_exact(&mut b).context("reading a UD endpoint")?;
        v.push(UdEndpointInfo::decode(&b)?);
    }
    Ok(v)
}

/// Server side: the first answer to [`Command::Rc`], the largest message
/// either way; `None` refuses the connection (sent as 0).
pub fn write_capacity<W: Write>(w: &mut W, capacity: Option<usize>) -> Result<()> {
    let c = capacity.map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX));
    w.write_all(&c.to_be_bytes()).context("sending the RC capacity")?;
    Ok(())
}

/// Client side: the capacity the server offers; 0 means refused. The caller
/// bounds it before allocating.
pub fn read_capacity<R: Read>(r: &mut R) -> Result<usize> {
    let mut cap = [0u8; 4];
    r.read_exact(&mut cap).context("reading the RC capacity")?;
    Ok(u32::from_be_bytes(cap) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdma::{Gid, Mtu};

    #[test]
    fn greeting_round_trips_and_strangers_are_refused() {
        for cmd in [Command::Ud, Command::Rc] {
            let g = greeting(cmd);
            assert_eq!(&g[..4], b"LMCL");
            assert_eq!(g[4], 1);
            assert_eq!(read_greeting(&mut &g[..]).unwrap(), cmd);
        }
        assert_eq!(greeting(Command::Ud)[5], b'U');
        assert_eq!(greeting(Command::Rc)[5], b'R');
        let e = read_greeting(&mut &b"get foo\r\n"[..]).unwrap_err();
        assert!(e.to_string().contains("not a LogMemcached"), "{e}");
        let mut old = greeting(Command::Ud);
        old[4] = 2;
        assert!(read_greeting(&mut &old[..]).is_err(), "another version");
        let mut unknown = greeting(Command::Ud);
        unknown[5] = b'X';
        assert!(read_greeting(&mut &unknown[..]).unwrap_err().to_string().contains("unknown side-channel command"));
        assert!(read_greeting(&mut &b"LMC"[..]).is_err(), "short");
    }

    #[test]
    fn endpoint_list_round_trips_and_truncation_fails() {
        let ep = |qpn| UdEndpointInfo { gid: Gid([7; 16]), lid: 1, qpn, qkey: 0x1111_1111, mtu: Mtu::MTU_4096 };
        let eps = vec![ep(0x10), ep(0x11), ep(0x12)];
        let b = encode_ud_endpoints(&eps);
        assert_eq!(b.len(), 1 + 3 * WIRE_LEN);
        assert_eq!(read_ud_endpoints(&mut &b[..]).unwrap(), eps);
        assert!(read_ud_endpoints(&mut &b[..b.len() - 1]).is_err());
        assert_eq!(read_ud_endpoints(&mut &[0u8][..]).unwrap(), vec![]);
        let many: Vec<_> = (1..=300).map(ep).collect();
        assert_eq!(encode_ud_endpoints(&many)[0], 255, "the count byte never wraps");
        assert_eq!(read_ud_endpoints(&mut &encode_ud_endpoints(&many)[..]).unwrap().len(), 255);
    }

    #[test]
    fn capacity_and_refusal() {
        let mut b = Vec::new();
        write_capacity(&mut b, Some(1 << 20)).unwrap();
        write_capacity(&mut b, None).unwrap();
        assert_eq!(b, [0, 0x10, 0, 0, 0, 0, 0, 0]);
        let mut r = &b[..];
        assert_eq!(read_capacity(&mut r).unwrap(), 1 << 20);
        assert_eq!(read_capacity(&mut r).unwrap(), 0);
        assert!(read_capacity(&mut r).is_err());
    }
}
