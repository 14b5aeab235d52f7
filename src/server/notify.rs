//! systemd's readiness protocol (`Type=notify`), without a crate: one
//! datagram such as `READY=1` to the unix socket named by `$NOTIFY_SOCKET`
//! (a path, or an abstract-namespace name when it starts with '@').
//!
//! Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.
//! Failures are reported once at debug level and otherwise ignored: a
//! service manager that cannot hear us will time out on its own, and the
//! cache must not stop serving because of it.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where the notification socket is, parsed from `$NOTIFY_SOCKET`.
fn target(v: &str) -> std::io::Result<SocketAddr> {
    if let Some(name) = v.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if v.starts_with('/') {
        SocketAddr::from_pathname(v)
    } else {
        // systemd also allows vsock:...; we are never run under a VM manager that uses it.
        Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("unsupported NOTIFY_SOCKET {v:?}")))
    }
}

/// Send one state message (e.g. "READY=1\nSTATUS=serving"). Returns whether
/// it was sent; false also when there is no service manager to tell.
pub fn send(state: &str) -> bool {
    let Some(v) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    let Some(v) = v.to_str() else { return false };
    let result = target(v).and_then(|addr| {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)
    });
    match result {
        Ok(_) => true,
        Err(e) => {
            crate::log_debug!("sd_notify {:?} to {v}: {e}", state.lines().next().unwrap_or(""));
            false
        }
    }
}

/// The server accepts connections: the listener is bound, the workers run.
pub fn ready(status: &str) -> bool {
    send(&format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id()))
}

/// Shutdown has begun (systemd then waits for us to exit, not for a timeout).
pub fn stopping() -> bool {
    send("STOPPING=1\nSTATUS=shutting down")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_abstract_names() {
        use std::os::linux::net::SocketAddrExt;
        let a = target("@lm-test").expect("abstract");
        assert_eq!(a.as_abstract_name(), Some(&b"lm-test"[..]));
        let p = target("/run/systemd/notify").expect("path");
        assert_eq!(p.as_pathname(), Some(std::path::Path::new("/run/systemd/notify")));
        assert!(target("vsock:2:1234").is_err());
    }
}
