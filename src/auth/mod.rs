//! Who may use a side channel: the shared token (`--auth-token-file`) and
//! the mutual challenge-response both side channels (replication `rdma://`
//! and the `--rdma-listen` client endpoint) run first, before any slot, QP
//! number, GID, address or rkey crosses the wire.
//!
//! ```text
//!  client -> server  "LMAU" version(1) channel(u8) mode(u8) 0  nonce_c(32)
//!  server -> client  "LMAU" version(1) status(u8) mode(u8) 0  nonce_s(32) proof_s(32)
//!  client -> server  proof_c(32)                         (mode 1 only)
//!  server -> client  verdict(u8: 0 accepted)             (mode 1 only)
//!
//!  proof_X = HMAC-SHA256(token, LABEL | channel | role X | nonce_c | nonce_s)
//! ```
//! Each side draws a fresh 32-byte nonce (getrandom), so a recorded proof
//! is worth nothing on the next connection; the role byte (`S` or `C`) makes
//! a server's proof useless as a client's (no reflection); the channel byte
//! keeps a proof for one channel from opening the other. The server proves
//! itself first and the client checks that before it proves anything or
//! reads further: a replica learns its primary is genuine before it takes a
//! single byte of log from it. Proofs are compared in constant time. The
//! token itself never crosses the wire.
//!
//! Mode 0 (neither side has a token) is accepted without proofs; the binary
//! allows it only on loopback unless `--insecure` ([`check_exposure`]). A
//! server with a token refuses a client without one and vice versa (status).
//!
//! What this does not do: encrypt the side channel, or bind what follows
//! the handshake to it. An attacker on the network path can still relay or
//! tamper, as it can with RDMA traffic itself; keep RDMA on a private network.
//!
//! [`gate`] runs the server end: bounded concurrent handshakes, a timeout on
//! every read and write and a deadline on the whole handshake.

pub mod gate;

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::bail;
use crate::error::{Context as _, Error, Result};

pub use gate::{spawn, Admitted, Bounded, Limits};

const MAGIC: &[u8; 4] = b"LMAU";
const VERSION: u8 = 1;
const LABEL: &[u8] = b"logmemcached side-channel auth v1";
pub const NONCE_LEN: usize = 32;
pub const PROOF_LEN: usize = 32;
/// Bytes of the client's hello.
pub const HELLO_LEN: usize = 8 + NONCE_LEN;
/// Bytes of the server's challenge (its nonce and proof).
pub const CHALLENGE_LEN: usize = 8 + NONCE_LEN + PROOF_LEN;
/// Shortest token accepted: 128 bits.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token file read.
pub const MAX_TOKEN_LEN: usize = 4096;

const MODE_NONE: u8 = 0;
const MODE_HMAC: u8 = 1;

const STATUS_GO: u8 = 0;
const STATUS_TOKEN_REQUIRED: u8 = 1;
const STATUS_NO_TOKEN_HERE: u8 = 2;
const STATUS_WRONG_CHANNEL: u8 = 3;
const STATUS_BAD_HELLO: u8 = 4;

const VERDICT_ACCEPTED: u8 = 0;
const VERDICT_REFUSED: u8 = 1;

const ROLE_SERVER: u8 = b'S';
const ROLE_CLIENT: u8 = b'C';

/// Which side channel a handshake opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// A replica dialling its primary (`rdma://` replication).
    Replication,
    /// An RDMA client asking for endpoints (`--rdma-listen`).
    RdmaClient,
}

impl Channel {
    fn byte(self) -> u8 {
        match self {
            Channel::Replication => b'P',
            Channel::RdmaClient => b'C',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Channel::Replication => "replication",
            Channel::RdmaClient => "RDMA client",
        }
    }
}

/// The shared secret. Cheap to clone; never printed (`Debug` says only its
/// length).
#[derive(Clone)]
pub struct AuthToken(std::sync::Arc<[u8]>);

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthToken(<{} bytes, redacted>)", self.0.len())
    }
}

impl AuthToken {
    /// A token from bytes: at least [`MIN_TOKEN_LEN`] of them.
    pub fn new(bytes: &[u8]) -> Result<AuthToken> {
        if bytes.len() < MIN_TOKEN_LEN {
            bail!(
                "the auth token is {} bytes; use at least {MIN_TOKEN_LEN} random bytes \
                 (e.g. head -c 32 /dev/urandom > FILE)",
                bytes.len()
            );
        }
        if bytes.len() > MAX_TOKEN_LEN {
            bail!("the auth token is {} bytes; at most {MAX_TOKEN_LEN}", bytes.len());
        }
        Ok(AuthToken(bytes.into()))
    }

    /// Read `--auth-token-file`. As ssh does with keys, a file that group
    /// or others may read or write is refused (so is anything but a regular
    /// file, and a symlink); trailing CR/LF are dropped so `echo`-made files
    /// match; the contents never appear in a message.
    pub fn load(path: &Path) -> Result<AuthToken> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let shown = path.display();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("opening the auth token file {shown}"))?;
        let md = f.metadata().with_context(|| format!("auth token file {shown}"))?;
        if !md.file_type().is_file() {
            bail!("auth token file {shown} is not a regular file");
        }
        let mode = md.mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "auth token file {shown} has mode {mode:04o}: group and others must have no access \
                 (chmod 600 {shown})"
            );
        }
        let mut bytes = Vec::new();
        f.take(MAX_TOKEN_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading the auth token file {shown}"))?;
        while bytes.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            bytes.pop();
        }
        AuthToken::new(&bytes).with_context(|| format!("auth token file {shown}"))
    }

    fn proof(
        &self,
        channel: Channel,
        role: u8,
        nonce_c: &[u8; NONCE_LEN],
        nonce_s: &[u8; NONCE_LEN],
    ) -> Result<Mac256> {
        let mut m = Mac256::new_from_slice(&self.0).map_err(|_| Error::new("HMAC refused the token's length"))?;
        m.update(LABEL);
        m.update(&[channel.byte(), role]);
        m.update(nonce_c);
        m.update(nonce_s);
        Ok(m)
    }

    fn sign(&self, channel: Channel, role: u8, nc: &[u8; NONCE_LEN], ns: &[u8; NONCE_LEN]) -> Result<[u8; PROOF_LEN]> {
        Ok(self.proof(channel, role, nc, ns)?.finalize().into_bytes().into())
    }

    /// Constant-time check of a peer's proof.
    fn verify(&self, channel: Channel, role: u8, nc: &[u8; NONCE_LEN], ns: &[u8; NONCE_LEN], got: &[u8]) -> bool {
        self.proof(channel, role, nc, ns).is_ok_and(|m| m.verify_slice(got).is_ok())
    }
}

type Mac256 = Hmac<Sha256>;

fn nonce() -> Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    // No fallback: a predictable nonce would make proofs replayable.
    getrandom::fill(&mut n).map_err(|e| Error::new(format!("no random numbers from the OS for a nonce: {e}")))?;
    Ok(n)
}

fn send<W: Write>(w: &mut W, b: &[u8], what: &str) -> Result<()> {
    w.write_all(b).with_context(|| format!("side-channel auth: sending {what}"))?;
    w.flush().with_context(|| format!("side-channel auth: sending {what}"))?;
    Ok(())
}

fn mode_of(token: Option<&AuthToken>) -> u8 {
    if token.is_some() {
        MODE_HMAC
    } else {
        MODE_NONE
    }
}

/// The dialling side: prove we hold `token` and check the server does too.
/// Returns once both proofs passed (or, with no token on either side, once
/// the server agreed to go on without).
pub fn client_handshake<S: Read + Write>(s: &mut S, channel: Channel, token: Option<&AuthToken>) -> Result<()> {
    let nonce_c = nonce()?;
    let mut hello = [0u8; HELLO_LEN];
    hello[..4].copy_from_slice(MAGIC);
    hello[4] = VERSION;
    hello[5] = channel.byte();
    hello[6] = mode_of(token);
    hello[8..].copy_from_slice(&nonce_c);
    send(s, &hello, "our hello")?;
    let mut ch = [0u8; CHALLENGE_LEN];
    s.read_exact(&mut ch)
        .context("side-channel auth: reading the server's challenge (an older server, or not LogMemcached?)")?;
    if &ch[..4] != MAGIC || ch[4] != VERSION {
        bail!(
            "side-channel auth: the server does not speak this handshake (an older LogMemcached, or another service)"
        );
    }
    match ch[5] {
        STATUS_GO => {}
        STATUS_TOKEN_REQUIRED => bail!("the server requires a token: give --auth-token-file (the server's)"),
        STATUS_NO_TOKEN_HERE => bail!(
            "the server has no --auth-token-file, so it cannot prove who it is; refusing it \
             (give it the same token file, or drop ours)"
        ),
        STATUS_WRONG_CHANNEL => bail!("the server says this port is not a {} side channel", channel.name()),
        s => bail!("side-channel auth: the server refused our hello (status {s})"),
    }
    let Some(token) = token else {
        if ch[6] != MODE_NONE {
            bail!("side-channel auth: the server asked for a proof we cannot give (no token)");
        }
        return Ok(());
    };
    if ch[6] != MODE_HMAC {
        bail!("side-channel auth: the server skipped its proof");
    }
    let mut nonce_s = [0u8; NONCE_LEN];
    nonce_s.copy_from_slice(&ch[8..8 + NONCE_LEN]);
    if nonce_s == nonce_c {
        bail!("side-channel auth: the server echoed our nonce");
    }
    if !token.verify(channel, ROLE_SERVER, &nonce_c, &nonce_s, &ch[8 + NONCE_LEN..]) {
        bail!("side-channel auth: the server's proof is wrong (a different token, or not our server)");
    }
    send(s, &token.sign(channel, ROLE_CLIENT, &nonce_c, &nonce_s)?, "our proof")?;
    let mut v = [0u8; 1];
    s.read_exact(&mut v).context("side-channel auth: reading the server's verdict")?;
    if v[0] != VERDICT_ACCEPTED {
        bail!("side-channel auth: the server refused our proof (the tokens differ)");
    }
    Ok(())
}

/// The listening side: check the client's proof, prove ourselves. An error
/// means the peer must be dropped at once: it was told no, if it was told
/// anything, and gets nothing more.
pub fn server_handshake<S: Read + Write>(s: &mut S, channel: Channel, token: Option<&AuthToken>) -> Result<()> {
    let mut hello = [0u8; HELLO_LEN];
    s.read_exact(&mut hello).context("side-channel auth: reading the client's hello")?;
    let nonce_s = nonce()?;
    let mut ch = [0u8; CHALLENGE_LEN];
    ch[..4].copy_from_slice(MAGIC);
    ch[4] = VERSION;
    ch[6] = mode_of(token);
    let refuse = |s: &mut S, mut ch: [u8; CHALLENGE_LEN], status: u8, why: String| -> Result<()> {
        ch[5] = status;
        ch[6] = 0;
        let _ = send(s, &ch, "our refusal");
        Err(Error::new(why))
    };
    if &hello[..4] != MAGIC || hello[4] != VERSION {
        // Nothing of ours goes to a stranger, not even the refusal format.
        bail!("side-channel auth: not a LogMemcached hello (or another version)");
    }
    if hello[5] != channel.byte() {
        return refuse(
            s,
            ch,
            STATUS_WRONG_CHANNEL,
            format!("a peer asked for another channel than {}", channel.name()),
        );
    }
    let mut nonce_c = [0u8; NONCE_LEN];
    nonce_c.copy_from_slice(&hello[8..]);
    match (hello[6], token) {
        (MODE_NONE, None) => {
            send(s, &ch, "our go-ahead")?;
            return Ok(());
        }
        (MODE_NONE, Some(_)) => {
            return refuse(s, ch, STATUS_TOKEN_REQUIRED, "a peer without a token (we require one)".into())
        }
        (MODE_HMAC, None) => {
            return refuse(s, ch, STATUS_NO_TOKEN_HERE, "a peer with a token (we have none configured)".into())
        }
        (MODE_HMAC, Some(_)) => {}
        (m, _) => return refuse(s, ch, STATUS_BAD_HELLO, format!("a peer asked for auth mode {m}")),
    }
    let Some(token) = token else { bail!("unreachable: no token in HMAC mode") };
    ch[8..8 + NONCE_LEN].copy_from_slice(&nonce_s);
    ch[8 + NONCE_LEN..].copy_from_slice(&token.sign(channel, ROLE_SERVER, &nonce_c, &nonce_s)?);
    send(s, &ch, "our challenge")?;
    let mut proof = [0u8; PROOF_LEN];
    s.read_exact(&mut proof).context("side-channel auth: reading the client's proof")?;
    if !token.verify(channel, ROLE_CLIENT, &nonce_c, &nonce_s, &proof) {
        let _ = send(s, &[VERDICT_REFUSED], "our verdict");
        bail!("side-channel auth: a peer's proof is wrong (a different token, or a replay)");
    }
    send(s, &[VERDICT_ACCEPTED], "our verdict")?;
    Ok(())
}

/// `what` listens on `host` (an address or a name): without a token, only
/// loopback is allowed, unless `insecure` (then it says so in the log).
pub fn check_exposure(what: &str, host: &str, token: Option<&AuthToken>, insecure: bool) -> Result<()> {
    if token.is_some() {
        return Ok(());
    }
    let bare = host.trim_matches(['[', ']']);
    let addrs: Vec<std::net::IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(bare, 0))
        .with_context(|| format!("{what}: resolving {host}"))?
        .map(|a| a.ip())
        .collect();
    let loopback_only = !addrs.is_empty() && addrs.iter().all(|a| a.is_loopback());
    if loopback_only {
        return Ok(());
    }
    if insecure {
        crate::log_warn!(
            "{what} on {host} accepts any peer that reaches it (no --auth-token-file, --insecure given): \
             it hands out the whole cache"
        );
        return Ok(());
    }
    bail!(
        "{what} on {host} is reachable beyond loopback, and without --auth-token-file anyone who reaches it \
         gets the whole cache; give --auth-token-file (the same file on primary and replicas/clients), \
         bind to 127.0.0.1, or pass --insecure to accept that"
    )
}

#[cfg(test)]
mod tests;
