//! The data port's listening sockets, as memcached makes them: TCP on every
//! `-l` address (a comma list, repeatable: `ADDR`, `ADDR:PORT`, `[V6]`,
//! `[V6]:PORT`, `*` for any) with the `-b` backlog, or a UNIX socket (`-s`,
//! mode `-a`) instead of any network listener. [`Listener`] and [`Stream`]
//! let the workers accept and serve either kind alike.
//!
//! TCP: one socket per worker and address, all on the same port with
//! SO_REUSEPORT: the kernel spreads new connections across the workers,
//! where one shared socket let whichever worker polled first take most of
//! them. SO_REUSEPORT would also let a second server of the same user join
//! the port silently, so a plain socket claims each address first: if
//! anything listens there already, that bind fails as memcached's would.
//!
//! UNIX: one socket, each worker accepting on its own descriptor of it. It
//! is made after privileges are dropped (as memcached does, so the file is
//! the server user's), with the `-a` mode set before it listens; a stale
//! socket file is replaced, a live one is an error, and the file is removed
//! when the [`UnixSocketFile`] is dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, UnixAddr};

use crate::error::{Context, Result};
use crate::runtime::Settings;

/// A listening socket of the data port.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted data-port connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// Accept one connection; its peer for the log (a UNIX peer has no address).
    pub fn accept(&self) -> std::io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), a.to_string())),
            Listener::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), "a unix socket".to_string())),
        }
    }
}

impl Listener {
    /// Its address as `stats conns` shows it (memcached's `tcp:` / `unix:` forms).
    pub fn stats_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(crate::stats::conns::tcp_addr).unwrap_or_default(),
            Listener::Unix(l) => unix_addr(l.local_addr().ok().as_ref()),
        }
    }
}

/// A UNIX socket's path as `stats conns` shows it.
fn unix_addr(a: Option<&std::os::unix::net::SocketAddr>) -> String {
    format!("unix:{}", a.and_then(|a| a.as_pathname()).map(|p| p.display().to_string()).unwrap_or_default())
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

impl Stream {
    /// (peer, local) addresses as `stats conns` shows them.
    pub fn stats_addrs(&self) -> (String, String) {
        use crate::stats::conns::tcp_addr;
        match self {
            Stream::Tcp(s) => {
                (s.peer_addr().map(tcp_addr).unwrap_or_default(), s.local_addr().map(tcp_addr).unwrap_or_default())
            }
            Stream::Unix(s) => {
                let local = unix_addr(s.local_addr().ok().as_ref());
                (local.clone(), local)
            }
        }
    }

    /// The peer and transport as memcached's `watch connevents` lines name
    /// them (a UNIX socket has no peer address: `rip=unix`, "local").
    pub fn watch_peer(&self) -> (Option<std::net::SocketAddr>, &'static str) {
        match self {
            Stream::Tcp(s) => (s.peer_addr().ok(), "tcp"),
            Stream::Unix(_) => (None, "local"),
        }
    }

    /// TCP_NODELAY where there is TCP; and non-blocking.
    pub fn prepare(&self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                let _ = s.set_nodelay(true);
                s.set_nonblocking(true)
            }
            Stream::Unix(s) => s.set_nonblocking(true),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One `-l` entry: host (None: any) and port (None: `-p`).
pub fn parse_listen(entry: &str) -> Result<(Option<String>, Option<u16>)> {
    let bad_port = |p: &str| crate::error::Error::new(format!("Invalid port number: \"{p}\" (in -l {entry})"));
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| crate::error::Error::new(format!("Invalid IPV6 address: \"{entry}\"")))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p.parse::<u16>().map_err(|_| bad_port(p))?)),
            None if after.is_empty() => (h, None),
            None => return Err(bad_port(after)),
        }
    } else {
        match entry.split_once(':') {
            // One colon: HOST:PORT; more: an IPv6 address without brackets or port.
            Some((h, p)) if !p.contains(':') => (h, Some(p.parse::<u16>().map_err(|_| bad_port(p))?)),
            _ => (entry, None),
        }
    };
    Ok(((host != "*").then(|| host.to_string()), port))
}

/// Every address the `-l` list (or its default) names, resolved, each once.
pub fn tcp_addresses(settings: &Settings) -> Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for entry in settings.listen.split(',').filter(|s| !s.is_empty()) {
        let (host, port) = parse_listen(entry)?;
        let port = port.unwrap_or(settings.port);
        let found: Vec<SocketAddr> = match host {
            // memcached's getaddrinfo(NULL) with AI_PASSIVE: both families' "any".
            None => vec![SocketAddr::from(([0u8; 4], port)), SocketAddr::from(([0u16; 8], port))],
            Some(h) => {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                let spec = if h.contains(':') { format!("[{h}]:{port}") } else { format!("{h}:{port}") };
                spec.to_socket_addrs().with_context(|| format!("resolving -l {entry}"))?.collect()
            }
        };
        if found.is_empty() {
            crate::bail!("-l {entry} resolves to no address");
        }
        for a in found {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// Bind the TCP listeners (none with `-s`, or with `-p 0` and no port in
/// `-l`): for each worker, one socket per address.
pub fn bind_tcp(settings: &Settings) -> Result<Vec<Vec<Listener>>> {
    let threads = settings.threads.max(1);
    let mut per_worker: Vec<Vec<Listener>> = (0..threads).map(|_| Vec::new()).collect();
    if settings.unix_socket.is_some() {
        return Ok(per_worker);
    }
    let backlog = Backlog::new(settings.backlog.min(i32::MAX as u32) as i32).unwrap_or(Backlog::MAXCONN);
    for sa in tcp_addresses(settings)? {
        if sa.port() == 0 {
            continue; // memcached's -p 0: no TCP
        }
        let family = if sa.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let v6only = |fd: &std::os::fd::OwnedFd| -> Result<()> {
            if family == AddressFamily::Inet6 {
                socket::setsockopt(fd, sockopt::Ipv6V6Only, &true).context("IPV6_V6ONLY")?;
            }
            Ok(())
        };
        {
            let probe = match socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None) {
                Ok(p) => p,
                // `*` on a host without IPv6: the IPv4 socket serves alone.
                Err(nix::errno::Errno::EAFNOSUPPORT) if settings.listen.split(',').any(|e| e == "*") => continue,
                Err(e) => return Err(crate::error::Error::from(e).context("creating a socket")),
            };
            socket::setsockopt(&probe, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
            v6only(&probe)?;
            socket::bind(probe.as_raw_fd(), &SockaddrStorage::from(sa))
                .with_context(|| format!("listening on {sa} (is another server using this port?)"))?;
        }
        for list in per_worker.iter_mut() {
            let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
                .context("creating the listening socket")?;
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
            socket::setsockopt(&fd, sockopt::ReusePort, &true).context("SO_REUSEPORT")?;
            v6only(&fd)?;
            socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(sa)).with_context(|| format!("listening on {sa}"))?;
            socket::listen(&fd, backlog).with_context(|| format!("listening on {sa}"))?;
            list.push(Listener::Tcp(TcpListener::from(fd)));
        }
    }
    Ok(per_worker)
}

/// The `-s` socket's file; removed when dropped (at shutdown), if it is
/// still the one we made.
#[derive(Debug)]
pub struct UnixSocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Make the `-s` socket (mode `-a`, backlog `-b`) and give each worker its
/// own descriptor of it.
pub fn bind_unix(settings: &Settings, per_worker: &mut [Vec<Listener>]) -> Result<Option<UnixSocketFile>> {
    let Some(path) = settings.unix_socket.as_deref() else { return Ok(None) };
    let what = || format!("failed to listen on UNIX socket: {}", path.display());
    super::admin::clear_stale(path).with_context(what)?;
    let fd =
        socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
            .context("creating the socket")
            .with_context(what)?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(path).context("the path").with_context(what)?).with_context(what)?;
    let m = std::fs::symlink_metadata(path).with_context(what)?;
    let guard = UnixSocketFile { path: path.to_path_buf(), id: (m.dev(), m.ino()) };
    // Not listening yet: nobody connects while the file has the umask's mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.unix_mask & 0o777)).with_context(what)?;
    let backlog = Backlog::new(settings.backlog.min(i32::MAX as u32) as i32).unwrap_or(Backlog::MAXCONN);
    socket::listen(&fd, backlog).with_context(what)?;
    let listener = UnixListener::from(fd);
    for list in per_worker.iter_mut() {
        list.push(Listener::Unix(listener.try_clone().context("sharing the UNIX socket").with_context(what)?));
    }
    Ok(Some(guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcached_listen_forms() {
        let p = |s: &str| parse_listen(s).unwrap();
        assert_eq!(p("127.0.0.1"), (Some("127.0.0.1".into()), None));
        assert_eq!(p("127.0.0.1:11300"), (Some("127.0.0.1".into()), Some(11300)));
        assert_eq!(p("[::1]:11300"), (Some("::1".into()), Some(11300)));
        assert_eq!(p("[::1]"), (Some("::1".into()), None));
        assert_eq!(p("::1"), (Some("::1".into()), None), "an IPv6 address without brackets has no port");
        assert_eq!(p("*"), (None, None));
        assert_eq!(p("*:11300"), (None, Some(11300)));
        assert!(parse_listen("[::1").is_err() && parse_listen("host:port").is_err());
        let s = Settings { listen: "127.0.0.1,127.0.0.1:11300,localhost".into(), port: 11299, ..Settings::default() };
        let addrs = tcp_addresses(&s).unwrap();
        assert!(
            addrs.contains(&"127.0.0.1:11299".parse().unwrap()) && addrs.contains(&"127.0.0.1:11300".parse().unwrap())
        );
        assert_eq!(addrs.iter().filter(|a| **a == "127.0.0.1:11299".parse::<SocketAddr>().unwrap()).count(), 1);
    }
}
