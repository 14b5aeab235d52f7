//! `stats conns`: memcached's block per connection (`<fd>:addr`,
//! `listen_addr`, `state`, `secs_since_last_cmd`). The server registers
//! each connection it admits here and drops it on close; the connection's
//! own record is an `Arc` the worker holds, so noting a command is two
//! atomic stores, and only `stats conns` takes the table's lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock::unix_secs as unix_now;

/// One open connection.
pub struct ConnInfo {
    /// memcached's `tcp:<ip>:<port>` of the peer and of the listener.
    addr: String,
    listen_addr: String,
    last_cmd: AtomicU64,
    /// Being served right now (memcached's `conn_parse_cmd`), else waiting to read (`conn_read`).
    busy: AtomicBool,
}

impl ConnInfo {
    /// Seconds since its last request (or since it connected).
    pub fn idle_secs(&self) -> u64 {
        unix_now().saturating_sub(self.last_cmd.load(Ordering::Relaxed))
    }

    /// The worker is handling this connection's input (`busy`) or done.
    pub fn serving(&self, busy: bool) {
        if busy {
            self.last_cmd.store(unix_now(), Ordering::Relaxed);
        }
        self.busy.store(busy, Ordering::Relaxed);
    }
}

/// Every open client connection, by descriptor; the listeners too.
#[derive(Default)]
pub struct ConnTable {
    conns: Mutex<BTreeMap<i32, Arc<ConnInfo>>>,
    listeners: Mutex<BTreeMap<i32, String>>,
    started: AtomicU64,
}

/// memcached's address form.
pub fn tcp_addr(a: std::net::SocketAddr) -> String {
    format!("tcp:{a}")
}

impl ConnTable {
    pub fn add_listener(&self, fd: i32, addr: String) {
        self.started.fetch_max(unix_now(), Ordering::Relaxed);
        self.listeners.lock().unwrap_or_else(|e| e.into_inner()).insert(fd, addr);
    }

    pub fn register(&self, fd: i32, addr: String, listen_addr: String) -> Arc<ConnInfo> {
        let info = Arc::new(ConnInfo {
            addr,
            listen_addr,
            last_cmd: AtomicU64::new(unix_now()),
            busy: AtomicBool::new(false),
        });
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(fd, info.clone());
        info
    }

    pub fn unregister(&self, fd: i32) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&fd);
    }

    /// The `stats conns` lines: listeners, then connections, by descriptor.
    pub fn report(&self) -> Vec<(String, String)> {
        let now = unix_now();
        let mut v = Vec::new();
        let started = self.started.load(Ordering::Relaxed);
        for (fd, addr) in self.listeners.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            v.push((format!("{fd}:addr"), addr.clone()));
            v.push((format!("{fd}:state"), "conn_listening".into()));
            v.push((format!("{fd}:secs_since_last_cmd"), now.saturating_sub(started).to_string()));
        }
        for (fd, c) in self.conns.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let state = if c.busy.load(Ordering::Relaxed) { "conn_parse_cmd" } else { "conn_read" };
            v.push((format!("{fd}:addr"), c.addr.clone()));
            v.push((format!("{fd}:listen_addr"), c.listen_addr.clone()));
            v.push((format!("{fd}:state"), state.into()));
            v.push((
                format!("{fd}:secs_since_last_cmd"),
                now.saturating_sub(c.last_cmd.load(Ordering::Relaxed)).to_string(),
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_listeners_then_connections_until_closed() {
        let t = ConnTable::default();
        t.add_listener(5, "tcp:127.0.0.1:11211".into());
        let c = t.register(9, "tcp:127.0.0.1:4000".into(), "tcp:127.0.0.1:11211".into());
        c.serving(true);
        let r = t.report();
        let names: Vec<&str> = r.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "5:addr",
                "5:state",
                "5:secs_since_last_cmd",
                "9:addr",
                "9:listen_addr",
                "9:state",
                "9:secs_since_last_cmd"
            ]
        );
        assert_eq!(r[5].1, "conn_parse_cmd");
        c.serving(false);
        assert_eq!(t.report()[5].1, "conn_read");
        t.unregister(9);
        assert_eq!(t.report().len(), 3);
    }
}
