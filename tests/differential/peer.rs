//! Debian's memcached as the differential test's reference (part of
//! tests/differential.rs).

use super::*;

/// memcached, started on a free port and killed (by its pid) on drop.
pub struct Memcached {
    pub port: u16,
    child: Child,
}

impl Memcached {
    pub fn start() -> Memcached {
        Memcached::start_with(&["-m", "64"])
    }

    /// memcached with `args` besides its port and address.
    pub fn start_with(args: &[&str]) -> Memcached {
        let port = free_port();
        let mut cmd = Command::new(MEMCACHED);
        cmd.args(["-p", &port.to_string(), "-l", "127.0.0.1", "-U", "0", "-t", "2"]);
        cmd.args(args);
        // memcached refuses to run as root without -u; /proc/self belongs
        // to our effective user.
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false) {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("spawning memcached");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "memcached did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Memcached { port, child }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
