//! A fallible text/meta client for the campaign: every call returns an
//! `io::Result`, so a server killed under it is an outcome to record, never
//! a panic. One request at a time per connection (the checker needs each
//! write's own reply and time).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long a reply may take before the call fails. Writes under
/// `--sync-replicas` wait up to `--sync-timeout` (2 s here) for replicas.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

/// One item of a retrieval reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub value: Vec<u8>,
    pub flags: u32,
    pub cas: u64,
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Conn {
    pub fn connect(port: u16) -> io::Result<Conn> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let w = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        w.set_nodelay(true)?;
        w.set_read_timeout(Some(REPLY_TIMEOUT))?;
        w.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let r = BufReader::new(w.try_clone()?);
        Ok(Conn { w, r })
    }

    pub fn send(&mut self, req: &[u8]) -> io::Result<()> {
        self.w.write_all(req)
    }

    /// One reply line without its "\r\n"; EOF is an error.
    pub fn line(&mut self) -> io::Result<String> {
        let mut s = String::new();
        if self.r.read_line(&mut s)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        if !s.ends_with("\r\n") {
            return Err(bad(format!("reply line without CRLF: {s:?}")));
        }
        s.truncate(s.len() - 2);
        Ok(s)
    }

    /// A data block of `n` bytes and its "\r\n".
    fn block(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; n + 2];
        self.r.read_exact(&mut b)?;
        if &b[n..] != b"\r\n" {
            return Err(bad(format!("data block of {n} bytes not followed by CRLF")));
        }
        b.truncate(n);
        Ok(b)
    }

    pub fn cmd(&mut self, req: &[u8]) -> io::Result<String> {
        self.send(req)?;
        self.line()
    }

    /// `gets k1 k2 ...`: the hits by key (a key may be named once only).
    pub fn gets(&mut self, keys: &[&str]) -> io::Result<HashMap<String, Item>> {
        self.send(format!("gets {}\r\n", keys.join(" ")).as_bytes())?;
        let mut out = HashMap::new();
        loop {
            let l = self.line()?;
            if l == "END" {
                return Ok(out);
            }
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() != 5 || f[0] != "VALUE" {
                return Err(bad(format!("unexpected retrieval line {l:?}")));
            }
            let num = |s: &str| s.parse::<u64>().map_err(|_| bad(format!("bad number in {l:?}")));
            let (flags, len, cas) = (num(f[2])?, num(f[3])?, num(f[4])?);
            if len > 8 << 20 {
                return Err(bad(format!("a {len}-byte value is more than the campaign ever writes")));
            }
            let value = self.block(len as usize)?;
            if out.insert(f[1].to_string(), Item { value, flags: flags as u32, cas }).is_some() {
                return Err(bad(format!("key {} answered twice", f[1])));
            }
        }
    }

    /// `mg key v f c`: the item, or None on a miss (`EN`).
    pub fn mg(&mut self, key: &str) -> io::Result<Result<Option<Item>, String>> {
        let l = self.cmd(format!("mg {key} v f c\r\n").as_bytes())?;
        if l == "EN" {
            return Ok(Ok(None));
        }
        let Some(rest) = l.strip_prefix("VA ") else { return Ok(Err(l)) };
        let mut it = rest.split(' ');
        let len: usize = it.next().and_then(|n| n.parse().ok()).ok_or_else(|| bad(format!("bad mg reply {l:?}")))?;
        let (mut flags, mut cas) = (None, None);
        for t in it {
            if let Some(v) = t.strip_prefix('f') {
                flags = v.parse().ok();
            } else if let Some(v) = t.strip_prefix('c') {
                cas = v.parse().ok();
            }
        }
        let (Some(flags), Some(cas)) = (flags, cas) else { return Err(bad(format!("mg reply without f/c: {l:?}"))) };
        if len > 8 << 20 {
            return Err(bad(format!("a {len}-byte value is more than the campaign ever writes")));
        }
        let value = self.block(len)?;
        Ok(Ok(Some(Item { value, flags, cas })))
    }

    /// `ma key v c`: Ok((value, cas)), or Err(the reply line) for anything else.
    pub fn ma(&mut self, key: &str) -> io::Result<Result<(u64, u64), String>> {
        let l = self.cmd(format!("ma {key} v c\r\n").as_bytes())?;
        let Some(rest) = l.strip_prefix("VA ") else { return Ok(Err(l)) };
        let mut it = rest.split(' ');
        let len: usize = it.next().and_then(|n| n.parse().ok()).ok_or_else(|| bad(format!("bad ma reply {l:?}")))?;
        let cas =
            it.find_map(|t| t.strip_prefix('c')?.parse().ok()).ok_or_else(|| bad(format!("ma without c: {l:?}")))?;
        if len > 20 {
            return Err(bad(format!("ma answered a {len}-digit number")));
        }
        let digits = self.block(len)?;
        let v = std::str::from_utf8(&digits).ok().and_then(|s| s.parse().ok());
        v.map(|v| Ok((v, cas))).ok_or_else(|| bad(format!("ma value {digits:?} is not a number")))
    }

    /// `stats [group]` as a map (a `replicaN` line's value is its fields).
    pub fn stats(&mut self, group: &str) -> io::Result<HashMap<String, String>> {
        let req = if group.is_empty() { "stats\r\n".to_string() } else { format!("stats {group}\r\n") };
        self.send(req.as_bytes())?;
        read_stats(|| self.line())
    }
}

fn read_stats(mut line: impl FnMut() -> io::Result<String>) -> io::Result<HashMap<String, String>> {
    let mut m = HashMap::new();
    loop {
        let l = line()?;
        if l == "END" {
            return Ok(m);
        }
        let mut it = l.splitn(3, ' ');
        if it.next() != Some("STAT") {
            return Err(bad(format!("unexpected stats line {l:?}")));
        }
        let k = it.next().unwrap_or_default().to_string();
        m.insert(k, it.next().unwrap_or_default().to_string());
    }
}

/// One command on a server's `--admin-socket`: its one-line reply.
pub fn admin(path: &str, req: &str, timeout: Duration) -> io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut l = String::new();
    r.read_line(&mut l)?;
    Ok(l.trim_end().to_string())
}

/// A numeric stat (0 when missing or not a number).
pub fn num(m: &HashMap<String, String>, k: &str) -> u64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}
