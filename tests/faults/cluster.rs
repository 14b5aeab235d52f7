//! The servers under test: real `logmemcached` processes, each a node with
//! a fixed replication URL, admin socket and (with restarts on) memory
//! file across its restarts. Each start is a new process on a new port;
//! its stderr goes to a log file of the run. Killed by pid only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::load::Endpoint;
use crate::net::{self, Conn};

/// How replicas reach their primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Shm,
    /// Verbs on the VM's Soft-RoCE device; side channels on this address.
    Rdma {
        addr: String,
    },
}

impl Transport {
    /// `LOGMEMCACHED_REPL_TRANSPORT=rdma` (the VM suite) or shm.
    pub fn from_env() -> Transport {
        match std::env::var("LOGMEMCACHED_REPL_TRANSPORT").as_deref() {
            Ok("rdma") => {
                Transport::Rdma { addr: std::env::var("LOGMEMCACHED_RDMA_ADDR").unwrap_or_else(|_| "10.0.2.15".into()) }
            }
            _ => Transport::Shm,
        }
    }
}

/// What every node of a run is started with.
#[derive(Clone, Debug)]
pub struct Spec {
    pub mb: usize,
    /// `--sync-replicas K --sync-timeout MS`.
    pub sync: Option<(usize, u64)>,
    /// `--promote-after MS`, given to the standby only.
    pub promote_after_ms: u64,
    /// `--promote-drain-ms MS` (None: the default).
    pub drain_ms: Option<u64>,
    /// Each node keeps its log in a memory file (`-e`).
    pub memfile: bool,
}

/// How a node starts.
#[derive(Clone, Debug)]
pub enum Role {
    Primary,
    ReplicaOf(String),
}

pub struct Proc {
    child: Child,
    pub ep: Endpoint,
}

pub struct Node {
    pub name: String,
    /// Its `--replication-listen` URL (the same across restarts).
    pub url: String,
    pub admin: String,
    pub memfile: Option<PathBuf>,
    pub proc: Option<Proc>,
    /// Started with `--promote-after`.
    pub standby: bool,
    pub starts: u32,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub primary: usize,
    pub spec: Spec,
    pub dir: PathBuf,
    bin: String,
    token: Option<String>,
    /// Keep the run's directory (node logs) when it is dropped.
    pub keep: bool,
}

/// The binary's flag for a memory file, if it has one (`-e PATH`).
pub fn memfile_supported(bin: &str) -> bool {
    let out = Command::new(bin).args(["serve", "--help"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).contains("-e, --memory-file")).unwrap_or(false)
}

impl Cluster {
    /// `n` nodes (none started) for a run tagged `tag`.
    pub fn new(tag: &str, n: usize, spec: Spec, transport: Transport) -> Cluster {
        let dir = std::env::temp_dir().join(format!("lmc-faults-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the run's directory");
        let token = matches!(transport, Transport::Rdma { .. }).then(crate::common::token_file);
        let nodes = (0..n)
            .map(|i| {
                let name = format!("f{}-{tag}-n{i}", std::process::id());
                let url = match &transport {
                    Transport::Shm => format!("shm://{name}"),
                    Transport::Rdma { addr } => format!("rdma://{addr}:{}", crate::common::free_port()),
                };
                Node {
                    url,
                    admin: dir.join(format!("n{i}.sock")).to_string_lossy().into_owned(),
                    memfile: spec.memfile.then(|| dir.join(format!("n{i}.log"))),
                    name,
                    proc: None,
                    standby: false,
                    starts: 0,
                }
            })
            .collect();
        Cluster { nodes, primary: 0, spec, dir, bin: env!("CARGO_BIN_EXE_logmemcached").into(), token, keep: false }
    }

    /// Start node `i` (which must not be running). With `from_file` its
    /// memory file is kept (a restart from it); otherwise removed first.
    pub fn start(&mut self, i: usize, role: Role, standby: bool, from_file: bool) -> Result<(), String> {
        assert!(self.nodes[i].proc.is_none(), "node {i} is running");
        let node = &self.nodes[i];
        if let (Some(f), false) = (&node.memfile, from_file) {
            let _ = std::fs::remove_file(f);
        }
        let mut args: Vec<String> = vec!["-m".into(), self.spec.mb.to_string()];
        args.extend(["--replication-listen".into(), node.url.clone(), "--admin-socket".into(), node.admin.clone()]);
        if let Some(t) = &self.token {
            args.extend(["--auth-token-file".into(), t.clone()]);
        }
        if let Some((k, ms)) = self.spec.sync {
            args.extend(["--sync-replicas".into(), k.to_string(), "--sync-timeout".into(), ms.to_string()]);
        }
        if let Some(ms) = self.spec.drain_ms {
            args.extend(["--promote-drain-ms".into(), ms.to_string()]);
        }
        if standby {
            args.extend(["--promote-after".into(), self.spec.promote_after_ms.to_string()]);
        }
        if let Role::ReplicaOf(url) = &role {
            args.extend(["--replica-of".into(), url.clone()]);
        }
        if let Some(f) = &node.memfile {
            args.extend(["-e".into(), f.to_string_lossy().into_owned()]);
        }
        let starts = node.starts + 1;
        let log = self.dir.join(format!("n{i}.{starts}.stderr"));
        let mut last = String::new();
        for _ in 0..5 {
            let port = crate::common::free_port();
            let err = std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
            let child = Command::new(&self.bin)
                .args(["serve", "-p", &port.to_string(), "-l", "127.0.0.1", "--hugepages", "off", "-t", "2"])
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .map_err(|e| format!("spawning {}: {e}", self.bin))?;
            let pid = child.id();
            let mut p = Proc { child, ep: Endpoint { port, pid } };
            match wait_ready(&mut p) {
                Ok(()) => {
                    let n = &mut self.nodes[i];
                    n.proc = Some(p);
                    n.standby = standby;
                    n.starts = starts;
                    return Ok(());
                }
                Err(e) => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    last = e;
                }
            }
        }
        Err(format!("node n{i} did not start ({last}); its log: {}\n{}", log.display(), tail(&log)))
    }

    /// SIGKILL node `i` by its pid and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].proc.is_some()
    }

    pub fn ep(&self, i: usize) -> Option<Endpoint> {
        self.nodes[i].proc.as_ref().map(|p| p.ep)
    }

    /// Running nodes other than the primary.
    pub fn replicas(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| i != self.primary && self.running(i)).collect()
    }

    pub fn replica_eps(&self) -> Vec<Endpoint> {
        self.replicas().into_iter().filter_map(|i| self.ep(i)).collect()
    }

    pub fn conn(&self, i: usize) -> std::io::Result<Conn> {
        let ep = self.ep(i).ok_or_else(|| std::io::Error::other(format!("node n{i} is not running")))?;
        Conn::connect(ep.port)
    }

    pub fn stats(&self, i: usize, group: &str) -> std::io::Result<HashMap<String, String>> {
        self.conn(i)?.stats(group)
    }

    /// An admin command on node `i`'s socket.
    pub fn admin(&self, i: usize, cmd: &str, timeout: Duration) -> std::io::Result<String> {
        net::admin(&self.nodes[i].admin, cmd, timeout)
    }

    /// Whether node `i`'s process is still alive (it may have exited).
    pub fn alive(&mut self, i: usize) -> bool {
        match self.nodes[i].proc.as_mut() {
            Some(p) => matches!(p.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The last lines of node `i`'s current log.
    pub fn log_tail(&self, i: usize) -> String {
        tail(&self.dir.join(format!("n{i}.{}.stderr", self.nodes[i].starts)))
    }
}

fn tail(p: &std::path::Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Until the process answers `stats` with its own pid (another process
/// may hold a port free_port handed out).
fn wait_ready(p: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = p.child.try_wait() {
            return Err(format!("exited with {st}"));
        }
        if let Ok(mut c) = Conn::connect(p.ep.port) {
            let pid = c.stats("").ok().and_then(|m| m.get("pid")?.parse::<u32>().ok());
            return if pid == Some(p.ep.pid) { Ok(()) } else { Err(format!("port {} is another server's", p.ep.port)) };
        }
        std::thread::sleep(Duration::from_millis(10)); // polling for the listener
    }
    Err("did not accept within 60 s".into())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
        for n in &self.nodes {
            if n.url.starts_with("shm://") {
                // Only this run's own files, by their full names.
                let _ = std::fs::remove_file(format!("/dev/shm/logmemcached-{}", n.name));
                let _ = std::fs::remove_dir_all(format!("/dev/shm/logmemcached-{}.slots", n.name));
            }
        }
        if !self.keep && !std::thread::panicking() && std::env::var_os("LOGMEMCACHED_FAULTS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
