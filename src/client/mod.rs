//! A Rust client for LogMemcached: `rdma://HOST:PORT` (UD datagrams, RC for
//! large values; the format is [`crate::rdma_wire`]) or `tcp://HOST:PORT`
//! (the binary protocol over TCP, any memcached).
//!
//! ```no_run
//! use logmemcached::client::Client;
//! # fn main() -> logmemcached::error::Result<()> {
//! let mut c = Client::connect("rdma://10.0.2.15:11311")?;
//! c.set(b"greeting", b"hello", 0, 0)?;
//! assert_eq!(c.get(b"greeting")?.map(|i| i.value), Some(b"hello".to_vec()));
//! # Ok(()) }
//! ```
//!
//! * Files: `wire.rs` (binary framing), `exchange.rs` (request ids, stale
//!   replies, the retry loop), `ud.rs` (datagrams, timeouts and retries,
//!   which operations are retried and why they apply once), `rc.rs`
//!   (large values), `wait.rs` (spin, then block, on a CQ), `tcp.rs`,
//!   `ketama.rs` (sharding; MD5 from the `md-5` crate).
//! * Several servers: keys are sharded with libmemcached-compatible ketama
//!   ([`ketama`]); name each shard as TCP clients name that server
//!   ([`ShardSpec::name`]) and keys land on the same servers either way.
//! * Replicas: a shard may list read-only replicas; with
//!   [`ClientOptions::read_from_replicas`] gets go to them (round robin),
//!   writes always to the primary.
//! * One request is outstanding per endpoint; a `Client` is used from one
//!   thread (`&mut self`). Use one client per thread.

mod exchange;
#[doc(hidden)]
pub use exchange::Collector;
pub mod ketama;
pub mod rc;
pub mod tcp;
pub mod ud;
mod wait;
pub mod wire;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use crate::auth::AuthToken;
use crate::bail;
use crate::error::{Error, Result};
use crate::rdma::{Context, ProtectionDomain};
use wire::{opcode, status, Response};

/// Client tuning and test hooks.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long one UD attempt waits for its reply before it is sent again.
    pub timeout: Duration,
    /// Resends after the first attempt (so `retries + 1` attempts in all).
    pub retries: u32,
    /// Spin on the CQ this long before blocking on the completion channel.
    pub spin: Duration,
    /// Side-channel connect and handshake bound.
    pub connect_timeout: Duration,
    /// Bound on an RC (or TCP) round trip.
    pub rc_timeout: Duration,
    /// Send gets to a shard's replicas (round robin) instead of its primary.
    pub read_from_replicas: bool,
    /// The side channel's token (`--auth-token-file` of the servers): the
    /// client proves it holds it and checks each server does too.
    pub auth_token: Option<AuthToken>,
    /// Test hook: the first N request datagrams are not sent (lost).
    pub drop_requests: u32,
    /// Test hook: the first N reply datagrams are discarded on arrival
    /// (lost after the server executed the request).
    pub drop_replies: u32,
    /// Test hook: the first N reply datagrams that carry a NOOP (the end of
    /// a multi-get's reply) are discarded on arrival.
    pub drop_noop_replies: u32,
    /// Test hook: the first N UD attempts give up waiting at once, so their
    /// replies arrive late, during a later attempt or call.
    pub expire_attempts: u32,
    /// Test hook: the first N calls on an endpoint's first RC connection
    /// give up waiting at once (their replies arrive late).
    pub expire_rc_calls: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_millis(200),
            retries: 5,
            spin: Duration::from_micros(100),
            connect_timeout: Duration::from_secs(10),
            rc_timeout: Duration::from_secs(10),
            read_from_replicas: false,
            auth_token: None,
            drop_requests: 0,
            drop_replies: 0,
            drop_noop_replies: 0,
            expire_attempts: 0,
            expire_rc_calls: 0,
        }
    }
}

/// When a call's replies are complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The first reply (every single-key operation).
    First,
    /// The NOOP's reply (multi-get: quiet gets, then a NOOP); not returned.
    Noop,
}

/// Counters of one endpoint (client side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub requests: u64,
    pub retries: u64,
    pub timeouts: u64,
    /// Replies to an earlier attempt or call, ignored.
    pub stale: u64,
    pub bad_replies: u64,
    /// Calls (or parts of calls) that went over RC.
    pub rc_calls: u64,
}

impl std::ops::AddAssign for TransportStats {
    fn add_assign(&mut self, o: Self) {
        self.requests += o.requests;
        self.retries += o.retries;
        self.timeouts += o.timeouts;
        self.stale += o.stale;
        self.bad_replies += o.bad_replies;
        self.rc_calls += o.rc_calls;
    }
}

/// One connection to one server, whatever carries it.
pub trait Transport: Send {
    /// Send `req` (one or more binary requests; their opaque fields are
    /// overwritten with this call's id) and return the replies, up to `end`.
    fn call(&mut self, req: &mut Vec<u8>, end: End) -> Result<Vec<Response>>;
    /// Largest request that goes in one piece (a datagram for UD).
    fn max_request(&self) -> usize;
    fn stats(&self) -> TransportStats;
}

/// `rdma://HOST:PORT` or `tcp://HOST:PORT` (no scheme = tcp).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Rdma(String),
    Tcp(String),
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let (scheme, addr) = match url.split_once("://") {
            Some((s, a)) => (s, a),
            None => ("tcp", url),
        };
        if addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
            bail!("{url:?}: expected rdma://HOST:PORT or tcp://HOST:PORT");
        }
        match scheme {
            "rdma" => Ok(Target::Rdma(addr.to_string())),
            "tcp" => Ok(Target::Tcp(addr.to_string())),
            _ => bail!("{url:?}: unknown scheme {scheme:?} (rdma or tcp)"),
        }
    }

    pub fn addr(&self) -> &str {
        match self {
            Target::Rdma(a) | Target::Tcp(a) => a,
        }
    }

    pub fn connect(&self, opts: &ClientOptions) -> Result<Box<dyn Transport>> {
        Ok(match self {
            Target::Rdma(a) => Box::new(ud::UdTransport::connect(a, opts)?),
            Target::Tcp(a) => Box::new(tcp::TcpTransport::connect(a, opts)?),
        })
    }
}

/// The device and protection domain every endpoint of this process shares
/// (opened once; `LOGMEMCACHED_RDMA_DEV` picks the device).
pub fn verbs() -> Result<(Context, ProtectionDomain)> {
    static V: OnceLock<std::result::Result<(Context, ProtectionDomain), String>> = OnceLock::new();
    V.get_or_init(|| {
        let dev = std::env::var("LOGMEMCACHED_RDMA_DEV").ok();
        let ctx = Context::open(dev.as_deref()).map_err(|e| format!("opening the RDMA device: {e}"))?;
        let pd = ctx.alloc_pd().map_err(|e| e.to_string())?;
        Ok((ctx, pd))
    })
    .clone()
    .map_err(Error::new)
}

/// A stored item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub value: Vec<u8>,
    pub flags: u32,
    pub cas: u64,
}

/// One shard: a primary, optionally read-only replicas.
#[derive(Clone, Debug, Default)]
pub struct ShardSpec {
    /// The name ketama hashes (`HOST:PORT`); default: the primary's address.
    /// Give the TCP address other clients use to share their placement.
    pub name: Option<String>,
    pub primary: String,
    pub replicas: Vec<String>,
}

struct Shard {
    primary: Box<dyn Transport>,
    replicas: Vec<Box<dyn Transport>>,
    next_replica: usize,
}

pub struct Client {
    shards: Vec<Shard>,
    ring: ketama::Ketama,
    opts: ClientOptions,
}

/// A server's refusal or an unexpected status, as an error.
fn status_error(r: &Response) -> Error {
    let msg = String::from_utf8_lossy(&r.value);
    Error::new(format!("server answered status {:#06x}: {}", r.status, msg.trim()))
}

fn one(mut v: Vec<Response>) -> Result<Response> {
    v.pop().ok_or_else(|| Error::new("no reply"))
}

impl Client {
    /// One server, default options.
    pub fn connect(url: &str) -> Result<Client> {
        Client::with_options(&[url], ClientOptions::default())
    }

    /// Several servers (sharded with ketama, in this order).
    pub fn with_options(urls: &[&str], opts: ClientOptions) -> Result<Client> {
        let specs = urls.iter().map(|u| ShardSpec { primary: u.to_string(), ..Default::default() }).collect::<Vec<_>>();
        Client::with_shards(&specs, opts)
    }

    pub fn with_shards(specs: &[ShardSpec], opts: ClientOptions) -> Result<Client> {
        if specs.is_empty() {
            bail!("no servers given");
        }
        let mut names = Vec::new();
        let mut shards = Vec::new();
        for s in specs {
            let t = Target::parse(&s.primary)?;
            let name = s.name.clone().unwrap_or_else(|| t.addr().to_string());
            let (host, port) = name
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| Error::new(format!("shard name {name:?} is not HOST:PORT")))?;
            names.push((host, port));
            let replicas = s.replicas.iter().map(|r| Target::parse(r)?.connect(&opts)).collect::<Result<Vec<_>>>()?;
            shards.push(Shard { primary: t.connect(&opts)?, replicas, next_replica: 0 });
        }
        Ok(Client { shards, ring: ketama::Ketama::new(&names), opts })
    }

    /// Which shard (index into the list given) holds `key`.
    pub fn shard_for(&self, key: &[u8]) -> usize {
        if self.shards.len() == 1 {
            0
        } else {
            self.ring.server_for(key)
        }
    }

    fn writer(&mut self, key: &[u8]) -> &mut dyn Transport {
        let i = self.shard_for(key);
        self.shards[i].primary.as_mut()
    }

    fn reader_of(&mut self, shard: usize) -> &mut dyn Transport {
        let read_replicas = self.opts.read_from_replicas;
        let s = &mut self.shards[shard];
        if read_replicas && !s.replicas.is_empty() {
            let i = s.next_replica % s.replicas.len();
            s.next_replica = s.next_replica.wrapping_add(1);
            s.replicas[i].as_mut()
        } else {
            s.primary.as_mut()
        }
    }

    /// Client-side counters summed over every endpoint.
    pub fn stats(&self) -> TransportStats {
        let mut t = TransportStats::default();
        for s in &self.shards {
            t += s.primary.stats();
            for r in &s.replicas {
                t += r.stats();
            }
        }
        t
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Item>> {
        let mut req = Vec::with_capacity(24 + key.len());
        wire::request(&mut req, opcode::GET, 0, &[], key, &[]);
        let shard = self.shard_for(key);
        let r = one(self.reader_of(shard).call(&mut req, End::First)?)?;
        match r.status {
            status::SUCCESS => Ok(Some(Item { flags: r.flags(), cas: r.cas, value: r.value })),
            status::KEY_ENOENT => Ok(None),
            _ => Err(status_error(&r)),
        }
    }

    /// Many keys at once: per shard, quiet GETKs and a NOOP, packed into as
    /// few requests (datagrams) as fit. Misses are absent from the map.
    pub fn get_multi(&mut self, keys: &[&[u8]]) -> Result<HashMap<Vec<u8>, Item>> {
        let mut by_shard: HashMap<usize, Vec<&[u8]>> = HashMap::new();
        for k in keys {
            by_shard.entry(self.shard_for(k)).or_default().push(k);
        }
        let mut out = HashMap::new();
        for (shard, keys) in by_shard {
            let t = self.reader_of(shard);
            let max = t.max_request();
            let mut req = Vec::new();
            let mut i = 0;
            while i < keys.len() {
                req.clear();
                // At least one key per request, then as many as fit with the NOOP.
                while i < keys.len() && (req.is_empty() || req.len() + 48 + keys[i].len() <= max) {
                    wire::request(&mut req, opcode::GETKQ, 0, &[], keys[i], &[]);
                    i += 1;
                }
                wire::request(&mut req, opcode::NOOP, 0, &[], &[], &[]);
                for r in t.call(&mut req, End::Noop)? {
                    match r.status {
                        status::SUCCESS => {
                            out.insert(r.key.clone(), Item { flags: r.flags(), cas: r.cas, value: r.value });
                        }
                        status::KEY_ENOENT => {}
                        _ => return Err(status_error(&r)),
                    }
                }
            }
        }
        Ok(out)
    }

    fn store(&mut self, op: u8, key: &[u8], value: &[u8], flags: u32, exptime: u32, cas: u64) -> Result<Option<u64>> {
        let mut req = Vec::with_capacity(32 + key.len() + value.len());
        let extras = wire::store_extras(flags, exptime);
        let extras: &[u8] = if matches!(op, opcode::APPEND | opcode::PREPEND) { &[] } else { &extras };
        wire::request(&mut req, op, cas, extras, key, value);
        let r = one(self.writer(key).call(&mut req, End::First)?)?;
        match r.status {
            status::SUCCESS => Ok(Some(r.cas)),
            status::NOT_STORED | status::KEY_EEXISTS | status::KEY_ENOENT => Ok(None),
            _ => Err(status_error(&r)),
        }
    }

    /// Store unconditionally; returns the new CAS.
    pub fn set(&mut self, key: &[u8], value: &[u8], flags: u32, exptime: u32) -> Result<u64> {
        self.store(opcode::SET, key, value, flags, exptime, 0)?.ok_or_else(|| Error::new("set was not stored"))
    }

    /// Store only if `cas` still matches; `false` when it does not (or the key is gone).
    pub fn cas(&mut self, key: &[u8], value: &[u8], flags: u32, exptime: u32, cas: u64) -> Result<bool> {
        Ok(self.store(opcode::SET, key, value, flags, exptime, cas)?.is_some())
    }

    /// Store only if absent; `false` when the key exists.
    pub fn add(&mut self, key: &[u8], value: &[u8], flags: u32, exptime: u32) -> Result<bool> {
        Ok(self.store(opcode::ADD, key, value, flags, exptime, 0)?.is_some())
    }

    /// Store only if present; `false` when the key is missing.
    pub fn replace(&mut self, key: &[u8], value: &[u8], flags: u32, exptime: u32) -> Result<bool> {
        Ok(self.store(opcode::REPLACE, key, value, flags, exptime, 0)?.is_some())
    }

    pub fn append(&mut self, key: &[u8], value: &[u8]) -> Result<bool> {
        Ok(self.store(opcode::APPEND, key, value, 0, 0, 0)?.is_some())
    }

    pub fn prepend(&mut self, key: &[u8], value: &[u8]) -> Result<bool> {
        Ok(self.store(opcode::PREPEND, key, value, 0, 0, 0)?.is_some())
    }

    /// `false` when there was nothing to delete.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        let mut req = Vec::with_capacity(24 + key.len());
        wire::request(&mut req, opcode::DELETE, 0, &[], key, &[]);
        let r = one(self.writer(key).call(&mut req, End::First)?)?;
        match r.status {
            status::SUCCESS => Ok(true),
            status::KEY_ENOENT => Ok(false),
            _ => Err(status_error(&r)),
        }
    }

    fn arith(&mut self, op: u8, key: &[u8], delta: u64, initial: Option<u64>, exptime: u32) -> Result<Option<u64>> {
        let mut req = Vec::with_capacity(48 + key.len());
        wire::request(&mut req, op, 0, &wire::arith_extras(delta, initial, exptime), key, &[]);
        let r = one(self.writer(key).call(&mut req, End::First)?)?;
        match r.status {
            status::SUCCESS => {
                let b: [u8; 8] = r
                    .value
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| Error::new(format!("incr/decr reply of {} bytes (want 8)", r.value.len())))?;
                Ok(Some(u64::from_be_bytes(b)))
            }
            status::KEY_ENOENT => Ok(None),
            _ => Err(status_error(&r)),
        }
    }

    /// Add `delta`; `None` when the key is missing and no `initial` is given
    /// (with `initial`, a missing key is created with it).
    pub fn incr(&mut self, key: &[u8], delta: u64, initial: Option<u64>, exptime: u32) -> Result<Option<u64>> {
        self.arith(opcode::INCREMENT, key, delta, initial, exptime)
    }

    pub fn decr(&mut self, key: &[u8], delta: u64, initial: Option<u64>, exptime: u32) -> Result<Option<u64>> {
        self.arith(opcode::DECREMENT, key, delta, initial, exptime)
    }

    /// New expiry; `false` when the key is missing.
    pub fn touch(&mut self, key: &[u8], exptime: u32) -> Result<bool> {
        let mut req = Vec::with_capacity(28 + key.len());
        wire::request(&mut req, opcode::TOUCH, 0, &exptime.to_be_bytes(), key, &[]);
        let r = one(self.writer(key).call(&mut req, End::First)?)?;
        match r.status {
            status::SUCCESS => Ok(true),
            status::KEY_ENOENT => Ok(false),
            _ => Err(status_error(&r)),
        }
    }

    /// A raw request to the shard of `key` (tests, tools): `req` is binary
    /// requests; replies up to `end`.
    pub fn raw(&mut self, key: &[u8], req: &mut Vec<u8>, end: End) -> Result<Vec<Response>> {
        self.writer(key).call(req, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("rdma://10.0.2.15:11311").unwrap(), Target::Rdma("10.0.2.15:11311".into()));
        assert_eq!(Target::parse("tcp://h:1").unwrap(), Target::Tcp("h:1".into()));
        assert_eq!(Target::parse("h:1").unwrap(), Target::Tcp("h:1".into()));
        assert!(Target::parse("udp://h:1").is_err());
        assert!(Target::parse("rdma://nohost").is_err());
    }
}
