//! The side channel's server end (the exchange is in
//! [`crate::rdma_wire::handshake`]): [`crate::auth::spawn`] accepts TCP
//! connections and runs the token's handshake first, within its bounds (a
//! fixed number of handshakes at once, a timeout on every read and write, a
//! deadline on the whole); only a client that passed gets here. `U` gets
//! every worker's UD endpoint; `R` gets an RC QP built on one worker's CQs
//! (round robin), handed to that worker, and held open until the client
//! hangs up, within the RC memory budget ([`RcBudget`]).

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::rc::{Admission, Inbox, RcBudget, RcConn};
use crate::auth::{self, Admitted, AuthToken, Channel, Limits};
use crate::error::{Context as _, Result};
use crate::rdma::connect::{barrier, exchange};
use crate::rdma::{CompletionQueue, PreparedRcMessenger, ProtectionDomain, RcEndpointInfo, UdEndpointInfo};
use crate::rdma_wire::handshake::{encode_ud_endpoints, read_greeting, write_capacity, Command, RC_READY};

/// Bound on every side-channel read and write during the handshake.
const SIDE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients in their handshake at once; more are dropped on accept.
const MAX_HANDSHAKES: usize = 32;

/// What the side channel needs of one worker.
#[derive(Clone)]
pub(super) struct WorkerHandle {
    pub(super) ud: UdEndpointInfo,
    /// The worker's CQs: its RC QPs complete there, so the worker polls them.
    pub(super) scq: CompletionQueue,
    pub(super) rcq: CompletionQueue,
    pub(super) inbox: Arc<Inbox>,
}

/// Start the accepting thread on `listener` (bound by the caller, so a bad
/// address was an error at start).
pub(super) fn spawn(
    listener: TcpListener,
    workers: Vec<WorkerHandle>,
    pd: ProtectionDomain,
    budget: Arc<RcBudget>,
    token: Option<AuthToken>,
    verbose: bool,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let limits = Limits { max_handshakes: MAX_HANDSHAKES, io_timeout: SIDE_TIMEOUT, deadline: 2 * SIDE_TIMEOUT };
    auth::spawn(listener, "rdma-side-channel", Channel::RdmaClient, token, limits, verbose, move |adm| {
        serve(adm, &workers, &pd, &budget, &next)
    })
}

/// One authenticated client (the token's handshake is behind us).
fn serve(
    mut adm: Admitted,
    workers: &[WorkerHandle],
    pd: &ProtectionDomain,
    budget: &Arc<RcBudget>,
    next: &AtomicUsize,
) -> Result<()> {
    match read_greeting(&mut adm.bounded())? {
        Command::Ud => {
            let eps: Vec<UdEndpointInfo> = workers.iter().map(|w| w.ud).collect();
            std::io::Write::write_all(&mut adm.bounded(), &encode_ud_endpoints(&eps))
                .context("sending the UD endpoints")?;
            Ok(())
        }
        Command::Rc => {
            let w = &workers[next.fetch_add(1, Ordering::Relaxed) % workers.len()];
            // Within the RC buffer budget, or refused (capacity 0) holding nothing.
            let admission = match budget.admit(&w.inbox) {
                Ok(a) => a,
                Err(why) => {
                    write_capacity(&mut adm.bounded(), None)?;
                    crate::bail!("refusing an RC connection: {why}");
                }
            };
            serve_rc(&mut adm, w, pd, budget.capacity(), admission)
        }
    }
}

/// One RC client: set the QP up, hand it to its worker, hold the side
/// channel until the client closes it.
fn serve_rc(
    adm: &mut Admitted,
    w: &WorkerHandle,
    pd: &ProtectionDomain,
    capacity: usize,
    admission: Admission,
) -> Result<()> {
    write_capacity(&mut adm.bounded(), Some(capacity))?;
    let prepared = PreparedRcMessenger::new(pd, &w.scq, &w.rcq, capacity)?;
    let qp = prepared.connect_with(|qp| {
        let remote: RcEndpointInfo = exchange(&mut adm.bounded(), &qp.endpoint())?;
        qp.connect(&remote)
    })?;
    let dead = Arc::new(AtomicBool::new(false));
    // Hand the QP to its worker before the barrier: the client's first
    // SEND may come right after, and the worker must know the QPN.
    w.inbox.hand_over(RcConn { qp, dead: dead.clone(), _admission: admission });
    let r = barrier(&mut adm.bounded(), RC_READY);
    if r.is_ok() {
        adm.handshake_done();
        // Block until the client hangs up (EOF, error): then the QP goes.
        adm.stream.set_read_timeout(None)?;
        let mut b = [0u8; 64];
        while matches!(adm.stream.read(&mut b), Ok(n) if n > 0) {}
    }
    dead.store(true, Ordering::Release);
    w.inbox.changed();
    r
}
