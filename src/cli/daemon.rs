//! The process-level flags: `-d` (daemonize), `-P` (pidfile), `-u` (drop
//! privileges), `-r` (core files) and `-k` (lock memory).
//!
//! `-d` detaches without `fork()` in a process that may already run
//! threads: the command re-executes itself (stage 1), which calls setsid()
//! and re-executes once more (stage 2: the daemon, no session leader, so it
//! can never get a controlling terminal back), exactly the double fork's
//! shape. Unlike memcached's `daemon()`, the command returns only once the
//! daemon accepts connections (status 0) or has failed (status 1, with the
//! daemon's error on its stderr): stage 2 reports through a pipe on its
//! stdin. Its stdio then goes to /dev/null, except stderr when it is a
//! regular file (a log, e.g. Debian's `logfile`) or `-v` was given (memcached
//! keeps its stdio open under `-v`).

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{Uid, User};

use super::Fail;

/// The environment variable that tells a re-executed `serve` its stage.
const STAGE: &str = "LOGMEMCACHED_DAEMON_STAGE";
/// And whether its stderr is the readiness pipe (`pipe`) or kept (`keep`).
const STDERR: &str = "LOGMEMCACHED_DAEMON_STDERR";
/// What the daemon writes on the pipe once it accepts connections.
const READY: &[u8] = b"\nlogmemcached-daemon-ready\n";

/// `sysexits.h`, as memcached uses them.
pub const EX_NOUSER: i32 = 67;
pub const EX_OSERR: i32 = 71;

/// Where this process is in `-d`'s sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The command as run: with `-d`, start stage 1 and wait.
    Foreground,
    /// setsid(), start stage 2, exit.
    Detach,
    /// The daemon.
    Daemon,
}

pub fn stage() -> Stage {
    match std::env::var(STAGE).as_deref() {
        Ok("1") => Stage::Detach,
        Ok("2") => Stage::Daemon,
        _ => Stage::Foreground,
    }
}

/// Stage 0 with `-d`: start stage 1 with the same arguments, relay what the
/// daemon says until it is ready, and return the command's exit status.
pub fn start_and_wait(verbose: bool) -> Result<i32, Fail> {
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| Fail::os(format!("creating a pipe: {e}")))?;
    // Keep stderr for a log file the caller opened, or under -v (memcached
    // keeps stdio with -v); otherwise the daemon's errors come back to us.
    let stderr_is_file = std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.file_type().is_file());
    let keep = stderr_is_file || verbose;
    let exe = std::env::current_exe().map_err(|e| Fail::os(format!("finding our own executable: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).env(STAGE, "1").env(STDERR, if keep { "keep" } else { "pipe" });
    let dup = write_end.try_clone().map_err(|e| Fail::os(format!("creating a pipe: {e}")))?;
    cmd.stdin(Stdio::from(write_end)).stdout(Stdio::null());
    if !keep {
        cmd.stderr(Stdio::from(dup));
    } else {
        drop(dup);
    }
    let mut child = cmd.spawn().map_err(|e| Fail::os(format!("starting the daemon: {e}")))?;
    // Our copies of the write end went into the child's stdio (and are
    // closed with `cmd`), so EOF means every stage has let go of the pipe.
    drop(cmd);
    let _ = child.wait();
    let mut pipe = std::fs::File::from(read_end);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut err = std::io::stderr();
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if let Some(at) = find(&seen, READY) {
                    let _ = err.write_all(&seen[..at]);
                    return Ok(0);
                }
                // Relay whole lines; keep a tail that may be the token's start.
                if let Some(nl) = seen.iter().rposition(|&b| b == b'\n') {
                    let keep_from = nl.saturating_sub(READY.len());
                    let _ = err.write_all(&seen[..keep_from]);
                    seen.drain(..keep_from);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = err.write_all(&seen);
    Err(Fail::quiet(1, "the daemon stopped before it accepted connections"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Stage 1: a new session, then the daemon outside it. Never returns.
pub fn detach() -> ! {
    let _ = nix::unistd::setsid();
    let status = std::env::current_exe()
        .and_then(|exe| Command::new(exe).args(std::env::args_os().skip(1)).env(STAGE, "2").spawn())
        .map(|_| 0)
        .unwrap_or_else(|e| {
            eprintln!("starting the daemon: {e}");
            1
        });
    std::process::exit(status)
}

/// Stage 2's promise to its starter: [`Readiness::ready`] once it serves.
pub struct Readiness {
    stderr_is_pipe: bool,
}

impl Readiness {
    /// In the daemon (stage 2) only: leave the starter's directory, as a
    /// daemon does (`-r` keeps it, for core files, as memcached's
    /// `daemon(maxcore, ..)`); paths were made absolute before this.
    pub fn begin(coredumps: bool) -> Option<Readiness> {
        if stage() != Stage::Daemon {
            return None;
        }
        if !coredumps {
            let _ = nix::unistd::chdir("/");
        }
        Some(Readiness { stderr_is_pipe: std::env::var(STDERR).as_deref() == Ok("pipe") })
    }

    /// Tell the starter we accept connections, and let go of its pipe.
    pub fn ready(self) {
        let _ = nix::unistd::write(std::io::stdin(), READY);
        if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stdin(&null);
            if self.stderr_is_pipe {
                let _ = nix::unistd::dup2_stderr(&null);
            }
        }
    }
}

/// A relative path as an absolute one (a daemon leaves its directory).
pub fn absolute(p: &mut Option<PathBuf>) {
    if let Some(path) = p {
        if path.is_relative() {
            if let Ok(cwd) = std::env::current_dir() {
                *path = cwd.join(&*path);
            }
        }
    }
}

/// `-u USER`, looked up at start (memcached: "can't find the user").
pub fn lookup_user(name: &str) -> Result<User, Fail> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(u),
        _ => Err(Fail::usage(EX_NOUSER, format!("can't find the user {name} to switch to"))),
    }
}

/// Whether we run as root (and so `-u` applies).
pub fn is_root() -> bool {
    Uid::current().is_root() || Uid::effective().is_root()
}

/// Become `user` for good: no supplementary groups, its group, its uid.
/// Files made before (listed in `handover`) are given to it first, so it
/// can reuse and remove them.
pub fn drop_privileges(user: &User, handover: &[&Path]) -> Result<(), Fail> {
    for p in handover {
        if p.exists() {
            nix::unistd::chown(*p, Some(user.uid), Some(user.gid))
                .map_err(|e| Fail::os(format!("handing {} to {}: {e}", p.display(), user.name)))?;
        }
    }
    if let Err(e) = nix::unistd::setgroups(&[]) {
        // memcached goes on when already minimal (EPERM), as here.
        if e != nix::errno::Errno::EPERM {
            return Err(Fail::os(format!("failed to drop supplementary groups: {e}")));
        }
    }
    nix::unistd::setgid(user.gid)
        .and_then(|()| nix::unistd::setuid(user.uid))
        .map_err(|e| Fail::os(format!("failed to assume identity of user {}: {e}", user.name)))?;
    // Never back: a process that could regain root would make -u pointless.
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() && user.uid.as_raw() != 0 {
        return Err(Fail::os(format!("still able to regain root after becoming {}", user.name)));
    }
    Ok(())
}

/// `-r`: raise the core file limit to infinity, else to the hard limit;
/// fail only if no core file could be written (memcached's rule and words).
pub fn enable_coredumps() -> Result<(), Fail> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    if setrlimit(Resource::RLIMIT_CORE, RLIM_INFINITY, RLIM_INFINITY).is_err() {
        if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_CORE) {
            let _ = setrlimit(Resource::RLIMIT_CORE, hard, hard);
        }
    }
    match getrlimit(Resource::RLIMIT_CORE) {
        Ok((soft, _)) if soft > 0 => Ok(()),
        _ => Err(Fail::usage(EX_OSERR, "failed to ensure corefile creation")),
    }
}

/// `-k` needs this before anything is locked: an unprivileged process (or
/// one that will drop to `-u`) with a finite RLIMIT_MEMLOCK would lock what
/// it has, and then every later allocation past the limit would fail
/// mid-service (MCL_FUTURE), so it is refused at start, with the limit.
pub fn check_memlock(will_be_unprivileged: bool, log_bytes: usize) -> Result<(), Fail> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let (soft, _) = getrlimit(Resource::RLIMIT_MEMLOCK).map_err(|e| Fail::os(format!("RLIMIT_MEMLOCK: {e}")))?;
    if will_be_unprivileged && soft != RLIM_INFINITY {
        return Err(Fail::usage(
            EX_OSERR,
            format!(
                "-k: cannot lock memory: RLIMIT_MEMLOCK is {soft} bytes and the log alone is {log_bytes}; \
                 with -k everything the server allocates later must be lockable too, so the limit must be \
                 unlimited (systemd: LimitMEMLOCK=infinity; shell: ulimit -l unlimited), or run without -k"
            ),
        ));
    }
    Ok(())
}

/// `-k`: lock what is mapped now (the log) and all that comes later.
pub fn lock_memory() -> Result<(), Fail> {
    use nix::sys::mman::{mlockall, MlockAllFlags};
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(|e| {
        Fail::usage(
            EX_OSERR,
            format!("-k: mlockall() failed: {e} (RLIMIT_MEMLOCK, or CAP_IPC_LOCK in a container, forbids it)"),
        )
    })
}

/// `-P FILE`: holds our pid while we run; removed at exit if still ours.
pub struct Pidfile {
    path: PathBuf,
    id: (u64, u64),
}

impl Pidfile {
    /// Written as memcached writes it: `PID\n` into `FILE.tmp`, renamed over
    /// `FILE` (a reader never sees it empty); a pid already there that is
    /// still running is warned about, as memcached does.
    pub fn write(path: &Path) -> Result<Pidfile, Fail> {
        if let Ok(old) = std::fs::read_to_string(path) {
            if let Ok(pid) = old.trim().parse::<i32>() {
                if pid > 0 && Path::new(&format!("/proc/{pid}")).exists() && pid as u32 != std::process::id() {
                    logmemcached::log_warn!("The pid file contained the following (running) pid: {pid}");
                }
            }
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let what = |e: std::io::Error| Fail::os(format!("Could not write the pid file {}: {e}", path.display()));
        std::fs::write(&tmp, format!("{}\n", std::process::id())).map_err(what)?;
        std::fs::rename(&tmp, path).map_err(what)?;
        let m = std::fs::metadata(path).map_err(what)?;
        Ok(Pidfile { path: path.to_path_buf(), id: (m.dev(), m.ino()) })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_holds_our_pid_and_goes() {
        let dir = std::env::temp_dir().join(format!("lm-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.pid");
        let f = Pidfile::write(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{}\n", std::process::id()));
        drop(f);
        assert!(!p.exists());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(Pidfile::write(Path::new("/nonexistent-dir/x.pid")).is_err());
    }

    #[test]
    fn token_is_found_after_relayed_lines() {
        let mut v = b"warn: something\n".to_vec();
        v.extend_from_slice(READY);
        assert_eq!(find(&v, READY), Some(16));
        assert_eq!(lookup_user("no-such-user-here").unwrap_err().code, EX_NOUSER);
    }
}
