//! The TCP transport: the same binary requests over a plain memcached
//! connection (for `tcp://` targets in `bench`, and shards without RDMA).

use std::io::{Read, Write};
use std::net::TcpStream;

use super::wire::{self, opcode, Response};
use super::{ClientOptions, End, Transport, TransportStats};
use crate::bail;
use crate::error::{Context as _, Result};

pub struct TcpTransport {
    addr: String,
    /// None after an error: the next call connects again.
    s: Option<TcpStream>,
    timeout: std::time::Duration,
    buf: Vec<u8>,
    id: u32,
    stats: TransportStats,
}

fn dial(addr: &str, timeout: std::time::Duration) -> Result<TcpStream> {
    let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

impl TcpTransport {
    pub fn connect(addr: &str, opts: &ClientOptions) -> Result<TcpTransport> {
        let s = dial(addr, opts.rc_timeout)?;
        Ok(TcpTransport {
            addr: addr.to_string(),
            s: Some(s),
            timeout: opts.rc_timeout,
            buf: Vec::with_capacity(64 << 10),
            id: 0,
            stats: TransportStats::default(),
        })
    }

    fn exchange(&mut self, req: &mut [u8], end: End) -> Result<Vec<Response>> {
        if self.s.is_none() {
            self.s = Some(dial(&self.addr, self.timeout)?);
        }
        let Some(s) = self.s.as_mut() else { bail!("no connection to {}", self.addr) };
        self.id = self.id.wrapping_add(1);
        wire::set_opaque(req, self.id);
        s.write_all(req).with_context(|| format!("sending to {}", self.addr))?;
        let mut got = Vec::new();
        let mut pos = 0;
        loop {
            while let Some((r, n)) = wire::parse(&self.buf[pos..])? {
                pos += n;
                if r.opaque != self.id {
                    // An earlier call's reply.
                    self.stats.stale += 1;
                    continue;
                }
                match end {
                    End::First => {
                        got.push(r);
                        self.buf.drain(..pos);
                        return Ok(got);
                    }
                    End::Noop if r.opcode == opcode::NOOP => {
                        self.buf.drain(..pos);
                        return Ok(got);
                    }
                    End::Noop => got.push(r),
                }
            }
            let start = self.buf.len();
            self.buf.resize(start + (64 << 10), 0);
            let n = match s.read(&mut self.buf[start..]) {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e).with_context(|| format!("reading from {}", self.addr));
                }
            };
            self.buf.truncate(start + n);
            if n == 0 {
                bail!("{} closed the connection", self.addr);
            }
        }
    }
}

impl Transport for TcpTransport {
    /// After an error (a timeout, a half-sent request, garbage) the
    /// connection is closed: what is left on it cannot be trusted to line
    /// up with the next call. The next call connects again.
    fn call(&mut self, req: &mut Vec<u8>, end: End) -> Result<Vec<Response>> {
        self.stats.requests += 1;
        let r = self.exchange(req, end);
        if r.is_err() {
            self.s = None;
            self.buf.clear();
        }
        r
    }

    fn max_request(&self) -> usize {
        usize::MAX
    }

    fn stats(&self) -> TransportStats {
        self.stats
    }
}
